"""The Typer CLI: thin commands that build a config, call one library function, print the result."""

"""The `tokcomp` Typer app and its entry point (also run by `python cli.py` from a checkout).

Each command module exposes `register(app)`; errors from the library are formatted once, here: one
line on stderr and the exit code of the error class (1 check failed, 2 bad input, 3 runtime missing).
Set TOKCOMP_DEBUG=1 to get the traceback instead.
"""

from __future__ import annotations

import importlib
import os
import sys

import typer

from ..errors import TokcompError

app = typer.Typer(
    name="tokcomp",
    help="Vision encoders with static token compression → ONNX bundle → TensorRT engine → validation report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

# Order is the order of `tokcomp --help`.
COMMAND_MODULES = ["export_cmds", "validate_cmds", "build_cmds", "lint_cmds"]

for _name in COMMAND_MODULES:
    importlib.import_module(f"{__package__}.{_name}").register(app)


def _debug() -> bool:
    return os.environ.get("TOKCOMP_DEBUG", "") not in ("", "0")


def main(argv: list[str] | None = None) -> int:
    """Run the app; returns (and exits with) the process exit code."""
    try:
        app(args=argv, standalone_mode=False)
    except TokcompError as exc:
        if _debug():
            raise
        from ..console import console

        console().print(f"[bold red]error:[/] {exc.one_line()}", soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("interrupted; nothing was written", file=sys.stderr)
        sys.exit(130)
    except typer.Exit as exc:  # raised by commands that set their own exit code
        sys.exit(exc.exit_code)
    except Exception as exc:  # click usage errors come through here in non-standalone mode
        import click

        if isinstance(exc, click.exceptions.UsageError):
            exc.show()
            sys.exit(2)
        if isinstance(exc, click.exceptions.Abort):
            sys.exit(1)
        if isinstance(exc, click.exceptions.Exit):
            sys.exit(exc.exit_code)
        raise
    return 0


if __name__ == "__main__":  # pragma: no cover
    main()

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
# One module a line, so that adding a command touches one line.
COMMAND_MODULES = [
    "export_cmds",
    "variant_cmds",
    "validate_cmds",
    "build_cmds",
    "calibrate_cmds",
    "debug_cmds",
    "sweep_cmds",
    "preprocess_cmds",
    "encode_cmds",
    "lint_cmds",
]

for _name in COMMAND_MODULES:
    importlib.import_module(f"{__package__}.{_name}").register(app)


def _debug() -> bool:
    return os.environ.get("TOKCOMP_DEBUG", "") not in ("", "0")


def main(argv: list[str] | None = None) -> int:
    """Run the app; exits with the process exit code (0 ok, 1 check failed, 2 bad input, 3 runtime missing)."""
    try:
        # Non-standalone mode so that our errors reach the handler below; it returns a command's
        # typer.Exit code instead of exiting.
        rc = app(args=argv, standalone_mode=False)
    except TokcompError as exc:
        if _debug():
            raise
        from rich.markup import escape

        from ..console import console

        console().print(f"[bold red]error:[/] {escape(exc.one_line())}", soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("interrupted; nothing was written", file=sys.stderr)
        sys.exit(130)
    except typer.Abort:
        sys.exit(1)
    except Exception as exc:
        # Usage errors (unknown option, missing argument, bad value) from typer's bundled click: they
        # know how to print themselves and carry exit code 2.
        show, code = getattr(exc, "show", None), getattr(exc, "exit_code", None)
        if callable(show) and isinstance(code, int):
            show()
            sys.exit(code)
        raise
    sys.exit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    main()

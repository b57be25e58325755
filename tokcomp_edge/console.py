"""Progress and timing for long stages, printed with rich to stderr (stdout stays for results)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from rich.console import Console

_consoles: dict[str, Console] = {}


def console() -> Console:
    """The shared stderr console for progress and messages (created on first use, not at import)."""
    if "err" not in _consoles:
        _consoles["err"] = Console(stderr=True, highlight=False)
    return _consoles["err"]


def out() -> Console:
    """The stdout console for results (tables a user may pipe or paste)."""
    if "out" not in _consoles:
        import os
        import sys

        # Piped or captured output would otherwise be squeezed to 80 columns and tables truncated.
        width = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 160
        _consoles["out"] = Console(highlight=False, width=width)
    return _consoles["out"]


@dataclass
class StageTimes:
    """Wall time of each named stage, in seconds, in the order they ran."""

    seconds: dict[str, float] = field(default_factory=dict)

    def total(self) -> float:
        return sum(self.seconds.values())


@contextlib.contextmanager
def stage(name: str, times: StageTimes | None = None, quiet: bool = False) -> Iterator[None]:
    """Show `name` with a spinner while it runs, then one line with the time it took."""
    start = time.perf_counter()
    if quiet:
        yield
    else:
        with console().status(f"[bold]{name}[/]…", spinner="dots"):
            yield
    elapsed = time.perf_counter() - start
    if times is not None:
        times.seconds[name] = elapsed
    if not quiet:
        console().print(f"  [green]✓[/] {name} [dim]({elapsed:.1f} s)[/]")

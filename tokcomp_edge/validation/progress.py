"""Progress of a long validation, drawn with rich on stderr (stdout stays for results)."""

from __future__ import annotations

from collections.abc import Callable

from ..console import console


class Steps:
    """A rich Progress that tasks can be added to as the work discovers them; silent when quiet.

    Usage:
        with Steps(quiet=False) as steps:
            advance = steps.task("latency batch 8", total=23)
            advance()  # once per unit of work
    """

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self._progress = None

    def __enter__(self) -> "Steps":
        if not self.quiet:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TimeElapsedColumn(), console=console(), transient=False)
            self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.stop()

    def task(self, description: str, total: int) -> Callable[[], None]:
        """Add a task; returns a callable that advances it by one."""
        if self._progress is None:
            return lambda: None
        tid = self._progress.add_task(description, total=max(1, total))
        return lambda: self._progress.advance(tid)

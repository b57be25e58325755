"""The runner interface, modelled on Polygraphy's BaseRunner (without its metaprogramming)."""

from __future__ import annotations

import abc
from typing import Any

import numpy as np


class Runner(abc.ABC):
    """One runtime executing one model.

    Subclasses implement `_activate`, `_infer` and `_deactivate`, and fill `self.info` (what really
    ran: providers, device, versions) during activation — the report copies it verbatim.
    """

    #: short label used in tables and plots
    label = "runner"

    def __init__(self) -> None:
        self.active = False
        self.info: dict[str, Any] = {}

    # -- lifecycle ----------------------------------------------------------------------------------
    def activate(self) -> None:
        """Load the model into the runtime. Calling it twice is harmless."""
        if not self.active:
            self._activate()
            self.active = True

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run once; blocks until the outputs are host numpy arrays.

        Args:
            feed: input name → array (layout and dtype as the model's inputs declare).
        Returns:
            output name → array.
        """
        if not self.active:
            raise RuntimeError(f"{type(self).__name__}.infer() called before activate()")
        return self._infer(feed)

    def deactivate(self) -> None:
        """Release the session/engine and its memory."""
        if self.active:
            try:
                self._deactivate()
            finally:
                self.active = False

    def __enter__(self) -> "Runner":
        self.activate()
        return self

    def __exit__(self, *exc) -> None:
        self.deactivate()

    # -- implementation hooks -------------------------------------------------------------------------
    @abc.abstractmethod
    def _activate(self) -> None:
        """Create the session/engine (the only place heavy work may happen)."""

    @abc.abstractmethod
    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one inference: input name → array in, output name → array out."""

    @abc.abstractmethod
    def _deactivate(self) -> None:
        """Release what _activate created."""

    def gpu_memory(self) -> dict[str, Any] | None:
        """Device memory this runner holds, where it runs on a GPU (None on CPU)."""
        return None

"""What `tokcomp debug` is asked to do (DebugConfig).

A block breaks when its output fails the variant's own thresholds of the one tolerance model
(core/tolerance.py DEFAULTS: fp16 rel L2 ≤ 1e-2 and per-token cosine ≥ 0.999; int8 0.1 and 0.95 — the
numbers the variant check and `validate` judge the final output by), or it overflows fp16, or holds
inf/NaN. A healthy fp16 block output is within ~1e-3 relative L2 of fp32; a block that overflows or
loses its LayerNorm statistics moves by O(1).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..core.tolerance import Tolerance, default_tolerance

DEBUG_VARIANTS = ("fp16", "int8")


@dataclass(frozen=True)
class DebugConfig:
    """One `tokcomp debug` run.

    Attributes:
        target: a bundle folder, or an engine `.plan` (then `bundle` names its bundle).
        variant: fp16 | int8 (the bundle variant to examine; an engine's own precision when target is one).
        bundle: the bundle of an engine target (default: the engine sidecar's bundle path).
        images: a folder (or files) of real photos, preprocessed as the manifest says; default: the golden
            inputs in reference.npz.
        max_images: use at most this many images.
        batch: images per run with --images.
        fix: regenerate the fp16 variant with the breaking nodes kept in fp32, check it, register it.
        fix_norms: with fix, also keep every LayerNormalization and Softmax of the breaking blocks in fp32.
        max_rounds: how many regenerate-and-recheck rounds `fix` may take.
        tolerance: when a block breaks: its max_rel_l2 and min_cosine (default: the variant precision's
            DEFAULTS in core/tolerance.py).
        write: store the result in the bundle (`debug/<variant>.json` and `.html`).
        quiet: no progress lines.
    """

    target: Path
    variant: str = "fp16"
    bundle: Path | None = None
    images: Path | None = None
    max_images: int = 16
    batch: int = 4
    fix: bool = False
    fix_norms: bool = False
    max_rounds: int = 3
    tolerance: Tolerance | None = None
    write: bool = True
    quiet: bool = False

    def block_tolerance(self) -> Tolerance:
        return self.tolerance or default_tolerance(self.variant)

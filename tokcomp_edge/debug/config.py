"""What `tokcomp debug` is asked to do (DebugConfig) and when a block counts as broken (BlockTolerance)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

DEBUG_VARIANTS = ("fp16", "int8")


@dataclass(frozen=True)
class BlockTolerance:
    """A block breaks when its output fails one of these (or it overflows fp16, or holds inf/NaN).

    Why these numbers: a healthy fp16 block output is within ~1e-3 relative L2 of fp32 and its tokens
    keep their direction (cosine ≈ 0.99999; README, "How an fp16 variant is checked"); a block that
    overflows or loses its LayerNorm statistics moves by O(1). INT8 blocks carry quantization noise of a
    few percent, so their bounds are the int8 check's (rel L2 0.1, cosine 0.95).

    Attributes:
        max_rel_l2: ‖variant − fp32‖ / ‖fp32‖ of the block output.
        min_cosine: the smallest per-token cosine of the block output.
    """

    max_rel_l2: float
    min_cosine: float

    @classmethod
    def for_variant(cls, variant: str) -> BlockTolerance:
        return cls(max_rel_l2=0.1, min_cosine=0.95) if variant == "int8" else cls(max_rel_l2=0.01, min_cosine=0.999)

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


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
        tolerance: when a block breaks (default: BlockTolerance.for_variant(variant)).
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
    tolerance: BlockTolerance | None = None
    write: bool = True
    quiet: bool = False

    def block_tolerance(self) -> BlockTolerance:
        return self.tolerance or BlockTolerance.for_variant(self.variant)

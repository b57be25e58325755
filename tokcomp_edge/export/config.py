"""Export configuration and result: the typed contract of `export_bundle`."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..console import StageTimes
from ..core.tolerance import PARITY, Tolerance

DEFAULT_OPSET = 20
OPSET_RANGE = (17, 23)
DEFAULT_EXPORT_ROOT = Path("export")
DEFAULT_BATCH_MAX = 8


@dataclass(frozen=True)
class ExportConfig:
    """Everything `tokcomp export` needs. Built by the CLI from its flags, or directly in Python.

    Attributes:
        model: preset name, `timm:<name>`, `hf:<dir>` or `py:<module>:<factory>`.
        compress: compression spec string (`tokcomp methods`).
        out: bundle folder; None → `export/<model>_<spec>/`.
        image_size: input size override: an int (square) or (H, W) — a bare tower takes squares only; a
            VLM whose tile is chosen (Qwen-VL, LFM2-VL) takes H×W within its processor's limits.
        weights: weights file; None → random init from `seed` (recorded as such everywhere).
        seed: random-init seed, also the seed of the golden reference inputs.
        layer: hidden layer to read (-1 last, -2 penultimate …); None = -1 for a tower, the VLM's own
            vision_feature_layer for a VLM (any other value is refused there).
        prefix: keep | drop prefix tokens; None → the family default.
        batch_min, batch_max: bounds of the dynamic batch axis; batch_max None → the VLM's tiles per
            request when its processor cuts more than one tile per image (vlm/tiles.py), else 8.
        opset: ONNX opset (17–23).
        force: replace an existing bundle (only after the new one passed its checks).
        cleanup: run onnxslim on the exported graph (checked not to change outputs).
        variants: extra variants to create in the bundle (`fp16`, `nhwc`, …).
        tolerance: fp32 parity bound against PyTorch (core.tolerance.PARITY: 1e-4 + 1e-4·scale).
        lint: run the TensorRT-compatibility lint at the end (warnings only).
        projector: for a VLM, include its projector (and any reduction inside it); False stops where the
            projector module starts (`--no-projector`). Ignored for bare towers.
        video: LLaVA-OneVision only: export its per-frame video path (pooling after the projector).
    """

    model: str
    compress: str = "none"
    out: Path | None = None
    image_size: int | tuple[int, int] | None = None
    weights: Path | None = None
    seed: int = 0
    layer: int | None = None
    prefix: str | None = None
    batch_min: int = 1
    batch_max: int | None = None
    opset: int = DEFAULT_OPSET
    force: bool = False
    cleanup: bool = True
    variants: tuple[str, ...] = ()
    tolerance: Tolerance = PARITY
    lint: bool = True
    quiet: bool = False
    projector: bool = True
    video: bool = False


def parse_image_size(text: str | None) -> int | tuple[int, int] | None:
    """`--image-size 448` → 448, `448x336` → (448, 336) (a square given as HxW becomes an int).

    Raises:
        InputError (exit 2): anything else, naming the accepted forms.
    """
    from ..errors import InputError

    if text is None:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*(?:[xX×]\s*(\d+)\s*)?", str(text))
    if not m or int(m.group(1)) <= 0 or (m.group(2) is not None and int(m.group(2)) <= 0):
        raise InputError(f"--image-size {text!r} is not a size", "give H or HxW in pixels, e.g. 448 or 448x336")
    h = int(m.group(1))
    w = int(m.group(2)) if m.group(2) is not None else h
    return h if h == w else (h, w)


def with_batch_default(cfg: ExportConfig) -> ExportConfig:
    """`cfg` with batch_max resolved: the user's value wins; a tiled VLM gets its tiles per request (one
    image's worth of rows), everything else DEFAULT_BATCH_MAX (the export summary shows the batch and the
    tiles per request beside it; the manifest records both)."""
    if cfg.batch_max is not None:
        return cfg
    from ..vlm import is_vlm

    if is_vlm(cfg.model) and not cfg.video:  # video rows are frames: the processor's tiling says nothing
        from ..vlm import resolve_vlm
        from ..vlm.tiles import tiles_per_request

        tiles = tiles_per_request(resolve_vlm(cfg.model))
        if tiles.count > 1:
            return replace(cfg, batch_max=tiles.count)
    return replace(cfg, batch_max=DEFAULT_BATCH_MAX)


def model_slug(model: str) -> str:
    """Folder-safe form of a model id: `timm:vit_small` → `timm-vit_small`, `hf:/a/b/` → `hf-b`."""
    if model.startswith("hf:"):
        model = "hf-" + Path(model[3:].rstrip("/")).name
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", model).strip("-")


def default_out(model: str, spec_slug: str, root: Path = DEFAULT_EXPORT_ROOT) -> Path:
    return root / f"{model_slug(model)}_{spec_slug}"


@dataclass
class ParityResult:
    """ONNX Runtime vs PyTorch on the golden inputs, per batch size and output."""

    passed: bool
    runtime: str
    tolerance: dict[str, float]
    per_batch: dict[str, dict[str, Any]]

    def worst(self, output: str = "tokens") -> float:
        return max(v[output]["max_abs"] for v in self.per_batch.values())

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "runtime": self.runtime, "tolerance": self.tolerance,
                "per_batch": self.per_batch}


@dataclass
class ExportResult:
    """What `export_bundle` produced."""

    path: Path
    manifest: dict[str, Any]
    parity: ParityResult
    times: StageTimes
    lint_warnings: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return self.parity.passed

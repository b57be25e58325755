"""INT8 calibration: bundle + representative images → checked `int8` variant (explicit Q/DQ ONNX).

    from tokcomp_edge.calibration.int8 import CalibrateConfig, calibrate
    result = calibrate(CalibrateConfig(bundle=Path("export/siglip_pool2"), images=Path("photos/")))
    print(result.path, result.check.metrics["outputs"])

Steps: load the bundle (sha256-verified) → preprocess the calibration images exactly as the manifest
says (calibration/images.py) → ModelOpt INT8 quantization of the fp32 model.onnx on CPU (qdq.py) →
the int8 check against the golden reference (int8_check.py) → `Bundle.add_variants` (int8 with its int8-nhwc).
A failure at any step raises and leaves the bundle byte-identical: ModelOpt works in a temp folder
inside the bundle, removed on every exit, and the manifest is only rewritten by add_variants (the int8
variant and the int8-nhwc wrapping it in one write).

Calibration images must look like what the encoder will see: the activation ranges (and so every
int8 scale) are measured on them. Without `images`, `synthetic=True` must be asked for explicitly —
noise-like stand-ins give ranges unlike photos — and the manifest entry records that it was.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.markup import escape

from ..console import StageTimes, stage
from ..errors import InputError, OutputError, ParityError
from ..extras import require_extra
from .qdq import HIGH_PRECISIONS, METHODS

if TYPE_CHECKING:
    from ..core.comparison import CheckResult
    from ..core.tolerance import Override

VARIANT = "int8"


@dataclass(frozen=True)
class CalibrateConfig:
    """What `tokcomp calibrate` does (the command builds this from its flags).

    Attributes:
        bundle: bundle folder (from `tokcomp export`).
        images: folder of JPEG/PNG calibration images (the first `max_images` by name are used).
        method: "entropy" (KL-divergence thresholds; clips rare outliers, usually the better choice)
            or "max" (each tensor's full observed range).
        max_images: use at most this many images (synthetic: make this many).
        batch: images per calibration run (speed/memory only; capped at the image count and at the
            bundle's largest batch).
        synthetic: calibrate on seeded synthetic images when no `images` are given (an explicit opt-in).
        seed: seed of the synthetic images.
        high_precision: dtype of the ops left unquantized: "fp16" (ModelOpt's default; what an int8
            engine is built for) or "fp32" (slower engine, use when fp16 overflows).
        tolerance_overrides: core.tolerance.Override values applied on top of DEFAULTS["int8"].
        force: replace an existing int8 variant (only after the new one passed its check).
        quiet: no progress lines.
    """

    bundle: Path
    images: Path | None = None
    method: str = "entropy"
    max_images: int = 64
    batch: int = 8
    synthetic: bool = False
    seed: int = 0
    high_precision: str = "fp16"
    tolerance_overrides: tuple[Override, ...] = ()
    force: bool = False
    quiet: bool = False


@dataclass
class CalibrationResult:
    """A registered int8 variant. Truthy when its check passed (a failed check raises ParityError instead).

    Attributes:
        path: model.int8.onnx inside the bundle.
        calibration: images used (count, folder or "synthetic"), method, batch, seed.
        quantization: Q/DQ node counts, quantized op types, high precision dtype, opset.
        check: the int8 check (figures per output, tolerances, passed).
        refreshed: dependent variants remade because the int8 model changed (e.g. int8-nhwc).
        times: wall time per stage.
    """

    path: Path
    calibration: dict[str, Any]
    quantization: dict[str, Any]
    check: CheckResult
    refreshed: list[str] = field(default_factory=list)
    times: StageTimes = field(default_factory=StageTimes)

    @property
    def passed(self) -> bool:
        return bool(self.check)

    def __bool__(self) -> bool:
        return self.passed

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "passed": self.passed, "calibration": self.calibration,
                "quantization": self.quantization, "check": self.check.to_dict(), "refreshed": self.refreshed,
                "seconds": dict(self.times.seconds)}


def _validate(cfg: CalibrateConfig) -> None:
    """Reject unusable options before any work (exit 2)."""
    if cfg.method not in METHODS:
        raise InputError(f"calibration method {cfg.method!r} is not one of {', '.join(METHODS)}",
                         "use --method entropy (default) or --method max")
    if cfg.high_precision not in HIGH_PRECISIONS:
        raise InputError(f"high precision {cfg.high_precision!r} is not one of {', '.join(HIGH_PRECISIONS)}",
                         "use --high-precision fp16 (default) or fp32")
    if cfg.max_images < 1:
        raise InputError(f"--max-images {cfg.max_images}: at least one image is needed",
                         "use --max-images 64 (a few hundred for the final engine)")
    if cfg.batch < 1:
        raise InputError(f"--batch {cfg.batch}: the calibration batch must be at least 1", "e.g. --batch 8")
    if cfg.images is not None and cfg.synthetic:
        raise InputError(f"both --images {cfg.images} and --synthetic were given",
                         "calibrate on your images (drop --synthetic) or on synthetic ones (drop --images)")
    if cfg.images is None and not cfg.synthetic:
        raise InputError("no calibration images: INT8 scales are measured on the images you give",
                         "pass --images DIR with a few dozen representative JPEG/PNG images; --synthetic "
                         "calibrates on generated stand-ins instead (for trials only: ranges unlike photos)")


def _load_images(cfg: CalibrateConfig, manifest: dict[str, Any]):
    """The calibration images, framed by the bundle's preprocessing policy; skipped files are reported."""
    from ..console import console
    from .images import Preprocess, load_images, synthetic_images

    pre = Preprocess.from_manifest(manifest)
    if cfg.images is None:
        return synthetic_images(cfg.max_images, pre, cfg.seed), pre
    images = load_images(cfg.images, pre, cfg.max_images)
    lines = images.warnings() + ([f"{pre.source}; re-export the bundle to calibrate on its family's own framing"]
                                 if pre.legacy else [])
    for line in lines:  # printed even with --quiet: they change what the scales are measured on
        console().print(f"[bold yellow]warning:[/] {escape(line)}", soft_wrap=True)
    return images, pre


# Every HOLD_EVERY-th image (at most HOLD_MAX) is kept out of calibration and checked on instead.
HOLD_EVERY = 5
HOLD_MAX = 16


def hold_out(x):
    """Split the calibration images: (the ones to calibrate on, the held-back ones or None).

    Every 5th image (the 5th, 10th, … — deterministic, spread over the folder's name order), at most 16,
    is held back; with fewer than 5 images nothing is (each one is needed for the ranges).
    """
    import numpy as np

    n = len(x)
    held = np.arange(HOLD_EVERY - 1, n, HOLD_EVERY)[:HOLD_MAX]
    if held.size == 0:
        return x, None
    keep = np.setdiff1d(np.arange(n), held)
    return x[keep], x[held]


def calibrate(cfg: CalibrateConfig) -> CalibrationResult:
    """Calibrate a bundle for INT8 and register its checked `int8` variant.

    Args:
        cfg: CalibrateConfig.
    Returns:
        CalibrationResult (truthy: the check passed).
    Raises:
        InputError (exit 2): bad options, no/empty/unreadable image folder, no --images and no --synthetic.
        BundleError (exit 2): the bundle is missing or changed since export.
        OutputError (exit 2): the bundle already has an int8 variant and `force` is not set.
        ExportFailed (exit 1): ModelOpt failed or inserted no Q/DQ node.
        ParityError (exit 1): the int8 model misses its tolerances; nothing registered.
        RuntimeMissing (exit 3): ModelOpt cannot be imported (nothing written).
    """
    from ..core.bundle import Bundle, sha256_file
    from ..core.tolerance import resolve_tolerances
    from ..export.fp16 import modelopt_version
    from ..export.variants import VariantOptions, register_with_wrappers, wrappers_of
    from .int8_check import check_int8
    from .qdq import quantize_int8

    require_extra("export", "tokcomp calibrate", ("modelopt", "onnxruntime"))
    _validate(cfg)
    bundle = Bundle.load(cfg.bundle)
    if VARIANT in bundle.variants() and not cfg.force:
        done = bundle.variants()[VARIANT].get("calibration", {})
        origin = "synthetic images" if done.get("folder") == "synthetic" else f"images from {done.get('folder')}"
        raise OutputError(f"bundle {bundle.path} already has an int8 variant (calibrated on {done.get('images')} "
                          f"{origin}, method {done.get('method')})",
                          "pass --force to recalibrate (the current one stays until the new one passes its check)")
    # Resolve tolerances now: an override naming an output this bundle lacks is an input error.
    tols = resolve_tolerances("int8", bundle.output_names, tuple(cfg.tolerance_overrides))
    times, q = StageTimes(), cfg.quiet
    source = "synthetic" if cfg.images is None else str(cfg.images)
    with stage(f"calibration images: {source} (at most {cfg.max_images}, preprocessed per the manifest)", times, q):
        images, pre = _load_images(cfg, bundle.manifest)
    # Real photos only: synthetic images are noise like the golden inputs, which the golden check covers.
    calib_x, held_x = hold_out(images.pixel_values) if cfg.images is not None else (images.pixel_values, None)
    n = len(calib_x)
    batch = max(1, min(cfg.batch, n, bundle.batch_range[1]))
    src = bundle.onnx_path("fp32")
    reference, batches = bundle.reference(), bundle.reference_batches()

    work = Path(tempfile.mkdtemp(prefix=".calibrate-int8.", dir=bundle.path))
    try:
        with stage(f"INT8 quantization: ModelOpt {cfg.method}, {n} images, batch {batch}, "
                   f"{cfg.high_precision} elsewhere", times, q):
            qdq_path, facts = quantize_int8(src, work, calib_x, method=cfg.method, batch=batch,
                                            high_precision=cfg.high_precision)
        del images, calib_x
        held_text = f" and {len(held_x)} held-back images" if held_x is not None else ""
        with stage(f"int8 check: ONNX Runtime CPU vs golden reference (batch {', '.join(map(str, batches))})"
                   f"{held_text}", times, q):
            check = check_int8(qdq_path, bundle.manifest, reference, batches, tols,
                               held_out=(held_x, src) if held_x is not None else None)
        if not check:
            merges = bundle.manifest.get("compression", {}).get("method") in ("tome", "visionzip")
            raise ParityError(
                f"int8 variant misses its tolerances against the golden reference: {check.failure_text()}"
                + ("; the merges are decided on int8-quantized keys (the method's own similarity and merge "
                   "MatMuls stay unquantized), so near-equal matches flip" if merges else ""),
                "nothing was registered; calibrate on more (and more representative) images, try --method "
                f"{'max' if cfg.method == 'entropy' else 'entropy'}"
                f"{' or --high-precision fp32' if cfg.high_precision == 'fp16' else ''}, or relax the "
                "thresholds knowingly (--min-cosine, --max-rel-l2, --min-jaccard)")
        calibration = {"images": n, **({"held_out": 0 if held_x is None else int(len(held_x))}
                                       if cfg.images is not None else {}), "folder": source,
                       "method": cfg.method, "batch": batch,
                       **({"seed": cfg.seed} if cfg.images is None else {"preprocess": pre.describe()})}
        meta = _meta(qdq_path, src, facts, calibration, check, modelopt_version(), cfg.method, sha256_file(src))
        # The variants wrapping the previous int8 model (int8-nhwc) are re-derived from the new one and
        # registered with it in one manifest write (a stale wrapper would be picked up by `build` as it is).
        refreshed = wrappers_of(bundle, VARIANT)
        path = register_with_wrappers(bundle, VARIANT, qdq_path, meta, VariantOptions(quiet=q), times)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return CalibrationResult(path=path, calibration=calibration, quantization=facts, check=check,
                             refreshed=refreshed, times=times)


def _meta(path: Path, src: Path, facts: dict[str, Any], calibration: dict[str, Any], check, version: str,
          method: str, src_sha256: str) -> dict[str, Any]:
    """The int8 variant's manifest entry (same shape as the fp16 variant's)."""
    # The variants module's own helpers, so that I/O descriptions and lint counts read alike in every entry.
    from ..export.variants import lint_counts, variant_io

    return {
        "precision": "int8", "input_layout": "nchw-float",
        **variant_io(path),
        "source": f"modelopt-quantize {version} int8 {method}",
        "calibration": calibration,
        "quantization": facts,
        "base": {"variant": "fp32", "file": src.name, "sha256": src_sha256},
        "lint": lint_counts(path),
        "check": check.to_dict(),
    }



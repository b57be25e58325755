"""`tokcomp debug`: find the first transformer block where a precision variant breaks, and (fp16) fix it.

    debug(DebugConfig(target=bundle, variant="fp16"))            per-block error of fp16 vs fp32
    debug(DebugConfig(target=bundle, variant="fp16", fix=True))  + regenerate with fp32 islands, register
    debug(DebugConfig(target=engine.plan, bundle=bundle))        the same on TensorRT (debug/trt.py)
"""

from __future__ import annotations

import time
from pathlib import Path

from ..console import StageTimes, stage
from ..core.bundle import Bundle, sha256_file
from ..errors import InputError
from .config import DEBUG_VARIANTS, DebugConfig
from .result import DebugResult


def debug(cfg: DebugConfig, times: StageTimes | None = None) -> DebugResult:
    """Run the per-block comparison (and --fix) described by `cfg`.

    Returns:
        DebugResult (truthy when no block breaks; with fix, when the registered variant passes).
    Raises:
        InputError/BundleError: bad target, variant or images (exit 2).
        RuntimeMissing: an engine target without TensorRT (exit 3).
        ParityError: --fix could not make a variant that passes (exit 1, nothing registered).
    """
    import onnx

    started = time.perf_counter()
    times = times if times is not None else StageTimes()
    if Path(cfg.target).suffix in (".plan", ".engine"):
        from .trt import debug_engine

        return debug_engine(cfg, times)
    if cfg.variant not in DEBUG_VARIANTS:
        raise InputError(f"--variant {cfg.variant!r} cannot be debugged; expected one of {', '.join(DEBUG_VARIANTS)}",
                         "the nhwc variants wrap fp16/int8 unchanged: debug those")
    if cfg.fix and cfg.variant != "fp16":
        raise InputError(f"--fix regenerates fp16 variants; the {cfg.variant} variant comes from calibration",
                         "recalibrate with `tokcomp calibrate … --force` (e.g. --method max), or debug fp16")
    bundle = Bundle.load(cfg.target)
    inputs, label = _inputs(bundle, cfg)
    fp32 = onnx.load(str(bundle.onnx_path("fp32")))
    variant_model, file, sha, made = _variant(bundle, cfg, times)
    from .analyse import analyse

    with stage(f"per-block comparison: {cfg.variant} vs fp32 on ONNX Runtime CPU", times, cfg.quiet):
        first = analyse(fp32, variant_model, inputs, cfg.block_tolerance(), bundle.manifest)
    del variant_model
    result = DebugResult(bundle=str(bundle.path), variant=cfg.variant, file=file, variant_sha256=sha,
                         inputs=label, runtime=first.runtime, blocks=first.blocks, culprit=first.culprit,
                         tolerance=cfg.block_tolerance().to_dict(), made=made)
    if cfg.fix and first.culprit is not None:
        from .fix import fix_fp16

        done, final = fix_fp16(bundle, cfg, first, fp32, inputs, label, times)
        done["before"] = {"culprit": first.culprit, "blocks": [b.to_dict() for b in first.blocks]}
        entry = bundle.variants()["fp16"]
        result = DebugResult(bundle=str(bundle.path), variant="fp16", file=entry["file"],
                             variant_sha256=bundle.manifest["files"][entry["file"]]["sha256"], inputs=label,
                             runtime=final.runtime, blocks=final.blocks, culprit=final.culprit,
                             tolerance=result.tolerance, made=None, fix=done)
    result.seconds = time.perf_counter() - started
    if cfg.write and result.made is None:
        from .store import write_result

        write_result(bundle.path, result)
    return result


def _inputs(bundle: Bundle, cfg: DebugConfig):
    from .inputs import golden_batches, photo_batches

    if cfg.images is None:
        return golden_batches(bundle)
    return photo_batches(bundle, Path(cfg.images), cfg.max_images, cfg.batch)


def _variant(bundle: Bundle, cfg: DebugConfig, times: StageTimes):
    """(model, file name, sha256, how it was made) of the variant to debug.

    A bundle without an fp16 variant (its conversion failed the check, so nothing was registered) is
    debugged on the conversion `tokcomp export --variants fp16` would make: AutoCast with the default
    options, in memory, not registered.
    """
    import onnx

    if cfg.variant in bundle.variants():
        path = bundle.onnx_path(cfg.variant)
        return onnx.load(str(path)), path.name, sha256_file(path), None
    if cfg.variant != "fp16":
        bundle.variant(cfg.variant)  # raises BundleError naming how to make it
    from ..export.fp16 import convert_fp16
    from ..export.variants import VariantOptions

    options = VariantOptions().fp16
    with stage("fp16 conversion (ModelOpt AutoCast, default options; not registered)", times, cfg.quiet):
        model, _ = convert_fp16(bundle.onnx_path("fp32"),
                                bundle.reference()[f"pixel_values.b{max(bundle.reference_batches())}"], options)
    return model, "(not in the bundle)", None, ("the bundle has no fp16 variant: debugging the conversion "
                                                "AutoCast makes with the default options, not registered")

"""`tokcomp debug ENGINE.plan --bundle BUNDLE`: the per-block comparison with TensorRT computing the variant.

A built engine exposes only its own outputs, so the engine is rebuilt once from the same variant ONNX and
the same build profile (engine.json records both) with every block output marked as a network output —
the documented way (`INetworkDefinition.mark_output`, here through the ONNX graph outputs the parser
marks). Marking outputs can stop TensorRT fusing across them, so the debug engine is close to, not
identical with, the deployed one; its figures say where precision is lost. Kept thin: the fp32 side is
ONNX Runtime CPU as for bundles; needs TensorRT and a GPU (exit 3 otherwise).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from pathlib import Path

from ..console import StageTimes, stage
from ..errors import InputError
from .config import DebugConfig
from .result import DebugResult


def debug_engine(cfg: DebugConfig, times: StageTimes) -> DebugResult:
    import onnx

    from ..core.bundle import Bundle
    from ..engines.engine_info import read_engine_info
    from ..engines.plan import make_plan
    from ..engines.profile import profile_from_record
    from ..engines.trt_build import build_serialized
    from ..engines.trt_import import import_tensorrt, probe_target, require_gpu
    from ..validation.runners.tensorrt import TensorRTRunner
    from .analyse import analyse_outputs
    from .inputs import golden_batches, photo_batches

    started = time.perf_counter()
    trt = import_tensorrt()
    require_gpu()
    engine_file = Path(cfg.target)
    sidecar = read_engine_info(engine_file)  # BundleError (exit 2) when the .plan has no build record
    bundle = Bundle.load(cfg.bundle or (engine_file.parent / sidecar["bundle"]["path"]))
    variant = sidecar["variant"]
    if variant.endswith("-nhwc"):
        # The nhwc wrapper only prepends the normalisation; its network is the one it wraps.
        raise InputError(f"{engine_file.name} takes uint8 camera frames ({variant}); debug compares float inputs",
                         f"build and debug the {variant[:-5]} profile of the same bundle, or debug the bundle "
                         f"variant: tokcomp debug {bundle.path} --variant {variant[:-5]}")
    build_profile = profile_from_record(sidecar["profile"])
    inputs, label = (golden_batches(bundle) if cfg.images is None
                     else photo_batches(bundle, Path(cfg.images), cfg.max_images, cfg.batch))
    lo, hi = build_profile.batch.min or 1, build_profile.batch.max or 1
    inputs = [x for x in inputs if lo <= x.shape[0] <= hi]  # the twin engine has the engine's batch range
    if not inputs:
        raise InputError(f"no input batch fits the engine's batch range {lo}–{hi}",
                         "pass --images with --batch inside that range")
    fp32 = onnx.load(str(bundle.onnx_path("fp32")))
    with tempfile.TemporaryDirectory(prefix="tokcomp-debug-trt-") as tmp:
        marked = Path(tmp) / "marked.onnx"
        with stage("debug engine: the variant with every block output marked, same profile", times, cfg.quiet):
            blocks_model, names = _mark_block_outputs(fp32, onnx.load(str(bundle.onnx_path(variant))),
                                                      bundle.manifest)
            onnx.save(blocks_model, str(marked))
            plan = replace(make_plan(bundle, build_profile, probe_target(), engines_dir=Path(tmp)), onnx_path=marked,
                           timing_cache_path=None)
            built = build_serialized(plan, trt)
            (Path(tmp) / "debug.plan").write_bytes(built.plan_bytes)
        with TensorRTRunner(Path(tmp) / "debug.plan") as runner:
            got = [runner.infer({"pixel_values": x}) for x in inputs]
    result = analyse_outputs(fp32, got, names, inputs, cfg.block_tolerance(), bundle.manifest)
    return DebugResult(bundle=str(bundle.path), variant=variant, file=str(engine_file), variant_sha256=None, inputs=label,
                       runtime=f"TensorRT {trt.__version__} (debug engine, profile {build_profile.name}) vs fp32 on "
                               "ONNX Runtime CPU", blocks=result.blocks, culprit=result.culprit,
                       tolerance=cfg.block_tolerance().to_dict(), seconds=time.perf_counter() - started)


def _mark_block_outputs(fp32_model, variant_model, manifest):
    """The variant with each block's output (mapped to its name there) added as a graph output, and the
    fp32 → variant name of each."""
    from .analyse import _Pair
    from .blocks import find_blocks

    pair = _Pair(fp32_model, variant_model)
    import onnx

    names = {}
    m = onnx.ModelProto()
    m.CopyFrom(variant_model)
    outputs = {o.name for o in m.graph.output}
    for b in find_blocks(fp32_model, manifest):
        # ToMe blocks: also their patch → row map (int64), so that rows are paired by merge membership.
        for t in (b.output, b.source):
            v = pair.vname(t) if t else None
            if v and v not in outputs:
                m.graph.output.append(onnx.helper.make_tensor_value_info(v, pair.stored.get(v, 1), None))
                outputs.add(v)
            if v:
                names[t] = v
    return m, names


__all__ = ["debug_engine"]

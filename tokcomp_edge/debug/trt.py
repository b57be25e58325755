"""`tokcomp debug ENGINE.plan --bundle BUNDLE`: the per-block comparison with TensorRT computing the variant.

A built engine exposes only its own outputs, so the engine is rebuilt once from the same variant ONNX and
the same build profile (engine.json records both) with every block output marked as a network output —
the documented way (`INetworkDefinition.mark_output`, here through the ONNX graph outputs the parser
marks). Marking outputs can stop TensorRT fusing across them, so the debug engine is close to, not
identical with, the deployed one; its figures say where precision is lost. Kept thin: the fp32 side is
ONNX Runtime CPU as for bundles; needs TensorRT and a GPU (exit 3 otherwise).
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from ..console import StageTimes, stage
from ..errors import BundleError
from .config import DebugConfig
from .result import DebugResult


def debug_engine(cfg: DebugConfig, times: StageTimes) -> DebugResult:
    import onnx

    from ..core.bundle import Bundle
    from ..engines.plan import make_plan
    from ..engines.profile import profile_from_dict
    from ..engines.trt_build import build_serialized
    from ..engines.trt_import import import_tensorrt, probe_target, require_gpu
    from ..validation.runners.tensorrt import TensorRTRunner
    from .analyse import analyse_outputs
    from .inputs import golden_batches, photo_batches

    started = time.perf_counter()
    trt = import_tensorrt()
    require_gpu()
    engine = Path(cfg.target)
    sidecar_path = engine.with_suffix(".engine.json")
    if not sidecar_path.is_file():
        raise BundleError(f"{engine} has no sidecar {sidecar_path.name}", "debug engines built by `tokcomp build`")
    sidecar = json.loads(sidecar_path.read_text())
    bundle = Bundle.load(cfg.bundle or (engine.parent / sidecar["bundle"]["path"]))
    variant = sidecar["variant"]
    inputs, label = (golden_batches(bundle) if cfg.images is None
                     else photo_batches(bundle, Path(cfg.images), cfg.max_images, cfg.batch))
    fp32 = onnx.load(str(bundle.onnx_path("fp32")))
    profile = profile_from_dict(sidecar["profile"], sidecar["profile"].get("name", "debug"))
    with tempfile.TemporaryDirectory(prefix="tokcomp-debug-trt-") as tmp:
        marked = Path(tmp) / "marked.onnx"
        with stage("debug engine: the variant with every block output marked, same profile", times, cfg.quiet):
            blocks_model, names = _mark_block_outputs(fp32, onnx.load(str(bundle.onnx_path(variant))))
            onnx.save(blocks_model, str(marked))
            plan = replace(make_plan(bundle, profile, probe_target(), engines_dir=Path(tmp)), onnx_path=marked,
                           timing_cache_path=None)
            built = build_serialized(plan, trt)
            (Path(tmp) / "debug.plan").write_bytes(built.plan_bytes)
        with TensorRTRunner(Path(tmp) / "debug.plan") as runner:
            got = [runner.infer({"pixel_values": x}) for x in inputs]
    result = analyse_outputs(fp32, got, names, inputs, cfg.block_tolerance())
    return DebugResult(bundle=str(bundle.path), variant=variant, file=str(engine), variant_sha256=None, inputs=label,
                       runtime=f"TensorRT {trt.__version__} (debug engine, profile {profile.name}) vs fp32 on "
                               "ONNX Runtime CPU", blocks=result.blocks, culprit=result.culprit,
                       tolerance=cfg.block_tolerance().to_dict(), seconds=time.perf_counter() - started)


def _mark_block_outputs(fp32_model, variant_model):
    """The variant with each block's output (mapped to its name there) added as a graph output."""
    from .analyse import _Pair
    from .blocks import find_blocks

    pair = _Pair(fp32_model, variant_model)
    import onnx

    names = {}
    m = onnx.ModelProto()
    m.CopyFrom(variant_model)
    outputs = {o.name for o in m.graph.output}
    for b in find_blocks(fp32_model):
        v = pair.vname(b.output)
        if v and v not in outputs:
            m.graph.output.append(onnx.helper.make_tensor_value_info(v, pair.stored.get(v, 1), None))
            names[b.output] = v
    return m, names


__all__ = ["debug_engine"]

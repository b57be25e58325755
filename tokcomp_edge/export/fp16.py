"""fp32 ONNX → fp16 ONNX with NVIDIA ModelOpt AutoCast (the precision TensorRT's strongly typed build uses).

TensorRT 11 has no FP16 builder flag: an fp16 engine is built from an fp16 ONNX. AutoCast converts the
graph to fp16 while keeping nodes whose values would overflow fp16 (|x| > data_max on the calibration
inputs) in fp32, inserting the casts. LayerNormalization stays the native op (AutoCast even fuses
decomposed LayerNorm patterns into it), which TensorRT imports as its normalization layer.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ExportFailed

_MODELOPT_LOGGERS = ("modelopt", "modelopt.onnx", "modelopt.onnx.autocast", "modelopt.onnx.quantization")


@dataclass(frozen=True)
class Fp16Options:
    """How AutoCast converts.

    Attributes:
        keep_io_types: keep the graph I/O float32 (casts inside the graph), so the fp16 model takes the
            same inputs as the fp32 one. False makes `pixel_values` and `tokens` float16.
        fp32_op_types: op types to keep in fp32 in addition to AutoCast's own choices.
        data_max: values above this magnitude (on the calibration inputs) keep their node in fp32;
            AutoCast's default 512 is where fp16's spacing reaches 0.5.
        fp32_nodes: exact node names to keep in fp32 (the "fp32 islands" `tokcomp debug --fix` finds);
            passed to AutoCast's `nodes_to_exclude` as anchored, escaped regular expressions, so a name
            never matches more than itself.
    """

    keep_io_types: bool = True
    fp32_op_types: tuple[str, ...] = ()
    data_max: float = 512.0
    fp32_nodes: tuple[str, ...] = ()

    def nodes_to_exclude(self) -> list[str] | None:
        """AutoCast's `nodes_to_exclude` (it `re.match`es each pattern against node names) for fp32_nodes."""
        import re

        return [f"{re.escape(n)}$" for n in self.fp32_nodes] or None


def modelopt_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("nvidia-modelopt")
    except metadata.PackageNotFoundError:
        import modelopt

        return getattr(modelopt, "__version__", "unknown")


@contextlib.contextmanager
def _quiet_modelopt() -> Iterator[None]:
    """AutoCast logs every step at INFO to stdout; keep our CLI output ours unless TOKCOMP_DEBUG is set."""
    if os.environ.get("TOKCOMP_DEBUG", "") not in ("", "0"):
        yield
        return
    loggers = [logging.getLogger(n) for n in _MODELOPT_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def convert_fp16(src: Path, calibration: np.ndarray, options: Fp16Options):
    """Convert `src` (an fp32 ONNX file) to fp16 with AutoCast.

    Args:
        src: the fp32 model (its external data, if any, beside it).
        calibration: pixel_values [B,3,H,W] float32 that AutoCast runs to find fp16-overflowing nodes
            (the bundle's golden inputs: real value ranges, unlike AutoCast's default random data).
        options: see Fp16Options.
    Returns:
        (onnx.ModelProto, facts dict for the manifest: nodes kept fp32/converted, LayerNorm count).
    Raises:
        ExportFailed: AutoCast raised, or the result lost a LayerNormalization node.
    """
    import onnx

    from ..extras import require_extra

    # A Jetson core install has no ModelOpt: `build --profile fp16` on a bundle without the variant lands here.
    require_extra("export", "making the fp16 variant", ("modelopt", "onnxruntime"),
                  instead="make it on the workstation (`tokcomp variant BUNDLE fp16`) and copy the bundle over")
    # Import first, then quieten: AutoCast configures its logger (INFO) when its modules are imported.
    from modelopt.onnx.autocast import convert_to_mixed_precision

    before = _op_counts(onnx.load(str(src), load_external_data=False))
    with tempfile.TemporaryDirectory(prefix="tokcomp-autocast-") as tmp, _quiet_modelopt():
        calib = Path(tmp) / "calibration.npz"
        np.savez(calib, pixel_values=np.asarray(calibration, dtype=np.float32))
        try:
            model = convert_to_mixed_precision(
                onnx_path=str(src), low_precision_type="fp16", keep_io_types=options.keep_io_types,
                nodes_to_exclude=options.nodes_to_exclude(),
                op_types_to_exclude=list(options.fp32_op_types) or None, data_max=options.data_max,
                calibration_data=str(calib), providers=["cpu"])
        except Exception as exc:  # AutoCast raises assorted types (ValueError, AssertionError, ORT errors)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ExportFailed(f"ModelOpt AutoCast could not convert {src.name} to fp16: {first}",
                               "run with TOKCOMP_DEBUG=1 for AutoCast's log; keep the failing op type in fp32 "
                               "(Fp16Options.fp32_op_types)") from exc
    _drop_placeholder_shapes(model)
    after = _op_counts(model)
    if after["LayerNormalization"] < before["LayerNormalization"]:
        raise ExportFailed(
            f"AutoCast decomposed LayerNormalization ({before['LayerNormalization']} nodes before, "
            f"{after['LayerNormalization']} after); TensorRT needs the native op to normalise in fp32",
            "keep LayerNormalization in fp32 (Fp16Options(fp32_op_types=('LayerNormalization',)))")
    return model, {"layernorm_nodes": after["LayerNormalization"], **_precision_counts(model)}


def _drop_placeholder_shapes(model) -> None:
    """Remove intermediate shape annotations that carry a made-up symbolic dimension.

    AutoCast re-infers shapes and writes the placeholder `unk` for dimensions it could not resolve
    (seen after ScatterElements/Concat in the ToMe graphs). ONNX Runtime's memory planner takes equal
    symbols for equal sizes and then fails at run time ("Shape mismatch attempting to re-use buffer",
    e.g. a [1, 89] and a [1, 197] tensor both annotated [batch, unk]). Without the annotation ONNX
    Runtime and TensorRT infer the real, static shape themselves; graph inputs and outputs keep theirs.
    """
    io = {vi.name for vi in list(model.graph.input) + list(model.graph.output)}
    keep = []
    for vi in model.graph.value_info:
        dims = vi.type.tensor_type.shape.dim
        made_up = any(d.dim_param and d.dim_param != "batch" for d in dims)
        if vi.name in io or not made_up:
            keep.append(vi)
    del model.graph.value_info[:]
    model.graph.value_info.extend(keep)


def _op_counts(model) -> Counter:
    return Counter(n.op_type for n in model.graph.node)


def _precision_counts(model) -> dict[str, Any]:
    """How many compute nodes produce fp16 vs fp32 tensors (Cast/shape plumbing excluded)."""
    import onnx

    typed = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    types = {vi.name: vi.type.tensor_type.elem_type
             for vi in list(typed.graph.value_info) + list(typed.graph.output) + list(typed.graph.input)}
    fp16 = fp32 = 0
    skip = {"Cast", "Shape", "Constant", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Concat", "Slice",
            "Gather", "Expand", "Identity"}
    for node in typed.graph.node:
        if node.op_type in skip:
            continue
        out = types.get(node.output[0]) if node.output else None
        if out == onnx.TensorProto.FLOAT16:
            fp16 += 1
        elif out == onnx.TensorProto.FLOAT:
            fp32 += 1
    return {"compute_nodes_fp16": fp16, "compute_nodes_fp32": fp32,
            "casts": sum(1 for n in typed.graph.node if n.op_type == "Cast")}

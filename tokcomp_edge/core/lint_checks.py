"""The per-op restrictions TensorRT's ONNX parser importers enforce (onnxOpImporters.cpp,
onnxOpCheckers.cpp): constant inputs, attribute values, opset-dependent forms. Each check yields
(severity, message) for one node; core/lint.py runs them and names the node.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from . import lint_ops as ops
from .lint_graph import EXTERNAL, ConstResolver

ERROR = "error"
WARNING = "warning"


def _attrs(node) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _input(node, i: int) -> str:
    return node.input[i] if len(node.input) > i else ""


def _require_const(node, consts: ConstResolver, i: int, what: str) -> Iterator[tuple[str, str]]:
    name = _input(node, i)
    if name and not consts.is_const(name):
        yield ERROR, f"{what} ({name!r}) must be a build-time constant for TensorRT, but it is computed at run time"


def _check_topk(node, consts: ConstResolver, opset: int) -> Iterator[tuple[str, str]]:
    a = _attrs(node)
    if opset < 10:
        k = a.get("k")
    else:
        k_name = _input(node, 1)
        k = consts.value(k_name)
        if k is None:
            yield ERROR, (f"K ({k_name!r}) is computed at run time: TensorRT needs K < {ops.TOPK_MAX_K} known at "
                          "build time, and a run-time K makes the token count data-dependent")
            return
        if k is EXTERNAL:
            yield WARNING, f"K ({k_name!r}) is stored as external data; could not check K < {ops.TOPK_MAX_K}"
            k = None
    if k is not None and np.asarray(k).size and int(np.asarray(k).max()) >= ops.TOPK_MAX_K:
        yield ERROR, f"K = {int(np.asarray(k).max())} but TensorRT's TopK needs K < {ops.TOPK_MAX_K}"
    if int(a.get("sorted", 1)) == 0:
        yield ERROR, "sorted=0: TensorRT's TopK requires sorted=1"


def _check_resize(node, consts: ConstResolver, opset: int) -> Iterator[tuple[str, str]]:
    a = _attrs(node)
    if int(a.get("antialias", 0)) != 0:
        yield ERROR, ("antialias=1: TensorRT's Resize does not support antialiasing "
                      "(export with F.interpolate(..., antialias=False))")
    mode = _text(a.get("mode", "nearest"))
    if mode not in ops.RESIZE_MODES:
        yield ERROR, f"mode {mode!r} is not supported (nearest, linear, cubic)"
    coord = _text(a.get("coordinate_transformation_mode", "half_pixel"))
    if node.op_type == "Resize" and opset >= 11 and coord not in ops.RESIZE_COORD_MODES:
        yield ERROR, (f"coordinate_transformation_mode {coord!r} is not supported "
                      f"({', '.join(sorted(ops.RESIZE_COORD_MODES))})")
    policy = _text(a.get("keep_aspect_ratio_policy", "stretch"))
    if policy != "stretch":
        yield ERROR, f"keep_aspect_ratio_policy {policy!r} is not supported (only 'stretch')"


def _check_scatter_nd(node, consts: ConstResolver, opset: int) -> Iterator[tuple[str, str]]:
    a = _attrs(node)
    if "reduction" not in a:
        return
    reduction = _text(a["reduction"])
    if reduction != "none":
        yield ERROR, f"reduction={reduction!r}: TensorRT's ScatterND supports no reduction"
    else:
        yield WARNING, ("explicit reduction='none': parsers before TensorRT 10.9 reject any reduction attribute; "
                        "drop the attribute for JetPack 6")


def _check_scatter_elements(node, consts: ConstResolver, opset: int) -> Iterator[tuple[str, str]]:
    reduction = _text(_attrs(node).get("reduction", "none"))
    if reduction != "none":
        yield ERROR, (f"reduction={reduction!r} has no native TensorRT layer: the parser substitutes the "
                      "ScatterElements plugin (not on DLA, not a strongly-typed native layer); write the "
                      "reduction as a one-hot MatMul instead")


def _check_pool(node, consts: ConstResolver, opset: int) -> Iterator[tuple[str, str]]:
    a = _attrs(node)
    kernel = list(a.get("kernel_shape", []))
    if kernel and len(kernel) not in (2, 3):
        yield ERROR, f"{len(kernel)}-D pooling: TensorRT pools in 2-D or 3-D only"
    dilations = list(a.get("dilations", []))
    if any(int(d) != 1 for d in dilations):
        yield ERROR, f"dilations {dilations}: TensorRT pooling needs dilations empty or all ones"
    if node.op_type == "MaxPool" and len(node.output) > 1 and node.output[1]:
        yield ERROR, "the Indices output of MaxPool is not supported by TensorRT"


def _check_layernorm(node, consts: ConstResolver, opset: int) -> Iterator[tuple[str, str]]:
    if any(node.output[1:]):
        yield ERROR, "only the first output Y of LayerNormalization is supported (Mean/InvStdDev are not)"


def _check_axes_input(index: int, what: str, since: int):
    def check(node, consts: ConstResolver, opset: int) -> Iterator[tuple[str, str]]:
        if opset >= since:
            yield from _require_const(node, consts, index, what)
    return check


def _check_cumsum(node, consts: ConstResolver, opset: int) -> Iterator[tuple[str, str]]:
    yield from _require_const(node, consts, 1, "axis")


def _check_onehot(node, consts: ConstResolver, opset: int) -> Iterator[tuple[str, str]]:
    yield from _require_const(node, consts, 1, "depth")


def _check_constant(node, consts: ConstResolver, opset: int) -> Iterator[tuple[str, str]]:
    bad = [a.name for a in node.attribute if a.name in ("sparse_value", "value_string", "value_strings")]
    if bad:
        yield ERROR, f"attribute {bad[0]} is not supported by TensorRT's Constant importer"


def _check_qdq(node, consts: ConstResolver, opset: int) -> Iterator[tuple[str, str]]:
    zp_name = _input(node, 2)
    zp = consts.value(zp_name) if zp_name else None
    if zp is not None and zp is not EXTERNAL and bool((zp != 0).any()):
        yield ERROR, f"zero point {zp_name!r} is not zero: TensorRT supports symmetric quantization only"


def _check_cast(node, consts: ConstResolver, opset: int) -> Iterator[tuple[str, str]]:
    to = _attrs(node).get("to")
    if to is None:
        return  # CastLike: the type comes from its second input
    if int(to) == ops.DOUBLE:
        yield WARNING, "casts to float64: TensorRT computes it in float32"
    elif int(to) not in ops.TRT_DTYPES:
        yield ERROR, f"casts to {ops.dtype_name(int(to))}, which is not a TensorRT type"


_REDUCE_OPS = ("ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean",
               "ReduceMin", "ReduceProd", "ReduceSumSquare")

OP_CHECKS = {
    "TopK": _check_topk,
    "Resize": _check_resize,
    "Upsample": _check_resize,
    "ScatterND": _check_scatter_nd,
    "ScatterElements": _check_scatter_elements,
    "Scatter": _check_scatter_elements,
    "AveragePool": _check_pool,
    "MaxPool": _check_pool,
    "LpPool": _check_pool,
    "LayerNormalization": _check_layernorm,
    "CumSum": _check_cumsum,
    "OneHot": _check_onehot,
    "Constant": _check_constant,
    "QuantizeLinear": _check_qdq,
    "DequantizeLinear": _check_qdq,
    "Cast": _check_cast,
    # Axes moved from attributes to inputs: Squeeze/Unsqueeze/ReduceSum at opset 13, the others at 18.
    "Squeeze": _check_axes_input(1, "axes", 13),
    "Unsqueeze": _check_axes_input(1, "axes", 13),
    "ReduceSum": _check_axes_input(1, "axes", 13),
    **{op: _check_axes_input(1, "axes", 18) for op in _REDUCE_OPS},
}

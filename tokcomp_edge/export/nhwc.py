"""Wrap a bundle model so that it eats camera frames: uint8 [B, H, W, 3] RGB in, same outputs.

The preprocessing moves into the graph — Cast → Transpose → (x / 255 − mean) / std — in front of the
unchanged model, so every runtime (ONNX Runtime, TensorRT, DeepStream) gets it and an edge pipeline
hands frames over without a CPU normalisation pass. Cast comes first because TensorRT allows uint8
only as a network input/output type, not as the type of an intermediate Transpose.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ExportFailed

INPUT = "pixel_values"
# Names of what the wrapper adds: fixed, so two wraps of the same model are byte-identical.
INNER_INPUT = "pixel_values_nchw"
PREFIX = "tokcomp_nhwc"


def wrap_nhwc(model, *, mean, std, input_name: str = INPUT):
    """Return a copy of `model` whose input `input_name` is uint8 NHWC, normalised inside the graph.

    Args:
        model: onnx.ModelProto with input `input_name` [B, 3, H, W] (float32 or float16).
        mean, std: per-channel RGB normalisation (0–1 pixel scale), from the bundle manifest.
    Returns:
        onnx.ModelProto: input `input_name` uint8 [B, H, W, 3] (the batch dim kept as it was, named or
        fixed), outputs unchanged.
    Raises:
        ExportFailed: the model has no such input, it is not 4-D with 3 channels, or the names the
            wrapper adds are taken.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    wrapped = onnx.ModelProto()
    wrapped.CopyFrom(model)
    g = wrapped.graph
    inputs = [i for i in g.input if i.name == input_name]
    if not inputs:
        raise ExportFailed(f"model has no input {input_name!r} to wrap (inputs: {[i.name for i in g.input]})",
                           "wrap the model written by `tokcomp export`")
    old = inputs[0]
    dims = list(old.type.tensor_type.shape.dim)
    elem = old.type.tensor_type.elem_type
    if len(dims) != 4 or dims[1].dim_value != 3 or elem not in (TensorProto.FLOAT, TensorProto.FLOAT16):
        raise ExportFailed(f"input {input_name!r} is not float [B, 3, H, W] "
                           f"({TensorProto.DataType.Name(elem).lower()}, rank {len(dims)})",
                           "the nhwc variant wraps an image encoder's NCHW float input (already wrapped?)")
    if any(o.name == input_name for o in g.output):  # passed straight through: nothing to rename into
        raise ExportFailed(f"input {input_name!r} is also a graph output", "wrap a model that computes its outputs")
    _check_free(g, [INNER_INPUT] + [f"{PREFIX}/{n}" for n in ("float", "hwc", "scaled", "centred", "normalised",
                                                              "255", "mean", "std", "cast")])
    _rename_uses(g, input_name, INNER_INPUT)

    new_input = helper.make_tensor_value_info(input_name, TensorProto.UINT8, None)
    shape = new_input.type.tensor_type.shape
    for d in (dims[0], dims[2], dims[3]):
        shape.dim.add().CopyFrom(d)
    shape.dim.add().dim_value = 3

    m = np.asarray(mean, dtype=np.float32).reshape(1, 3, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(1, 3, 1, 1)
    consts = [numpy_helper.from_array(np.asarray(255.0, dtype=np.float32), f"{PREFIX}/255"),
              numpy_helper.from_array(m, f"{PREFIX}/mean"), numpy_helper.from_array(s, f"{PREFIX}/std")]
    last = f"{PREFIX}/normalised" if elem == TensorProto.FLOAT16 else INNER_INPUT
    nodes = [
        helper.make_node("Cast", [input_name], [f"{PREFIX}/float"], name=f"{PREFIX}/Cast", to=TensorProto.FLOAT),
        helper.make_node("Transpose", [f"{PREFIX}/float"], [f"{PREFIX}/hwc"], name=f"{PREFIX}/Transpose",
                         perm=[0, 3, 1, 2]),
        helper.make_node("Div", [f"{PREFIX}/hwc", f"{PREFIX}/255"], [f"{PREFIX}/scaled"], name=f"{PREFIX}/Div255"),
        helper.make_node("Sub", [f"{PREFIX}/scaled", f"{PREFIX}/mean"], [f"{PREFIX}/centred"],
                         name=f"{PREFIX}/SubMean"),
        helper.make_node("Div", [f"{PREFIX}/centred", f"{PREFIX}/std"], [last], name=f"{PREFIX}/DivStd"),
    ]
    if elem == TensorProto.FLOAT16:
        # Normalise in fp32 (uint8/255 needs the precision), then hand the fp16 model what it expects.
        nodes.append(helper.make_node("Cast", [last], [INNER_INPUT], name=f"{PREFIX}/CastFp16",
                                      to=TensorProto.FLOAT16))

    position = list(g.input).index(old)
    g.input.remove(old)
    g.input.insert(position, new_input)
    for t in reversed(consts):
        g.initializer.insert(0, t)
    for n in reversed(nodes):
        g.node.insert(0, n)
    onnx.checker.check_model(wrapped)
    return wrapped


def _check_free(graph, names: list[str]) -> None:
    taken = {t.name for t in graph.initializer} | {n.name for n in graph.node}
    taken |= {o for n in graph.node for o in list(n.output) + list(n.input)}
    clash = [n for n in names if n in taken]
    if clash:
        raise ExportFailed(f"model already uses the name {clash[0]!r} that the nhwc wrapper adds",
                           "this model was probably wrapped already; wrap the NCHW model instead")


def _rename_uses(graph, old: str, new: str) -> None:
    """Point every use of tensor `old` at `new`, in subgraphs too (If/Loop bodies see outer names),
    stopping where a subgraph declares its own tensor of that name."""
    from onnx import AttributeProto

    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new
        for attr in node.attribute:
            subs: list[Any] = ([attr.g] if attr.type == AttributeProto.GRAPH else
                               list(attr.graphs) if attr.type == AttributeProto.GRAPHS else [])
            for sub in subs:
                shadowed = ({i.name for i in sub.input} | {t.name for t in sub.initializer}
                            | {o for n in sub.node for o in n.output})
                if old not in shadowed:
                    _rename_uses(sub, old, new)

"""Run an fp16 ONNX on ONNX Runtime CPU the way an fp16 engine computes it.

ONNX Runtime's CPU provider has no fp16 kernel for most ops (MatMul, Add, Gelu, …): it inserts casts
to fp32 around them and then drops the fp16 round trips between consecutive nodes, so intermediate
results are never rounded to fp16 and never overflow. Measured with onnxruntime 1.24: an fp16 MatMul
whose result is 9e4 yields `inf` as a graph output but 9e4 when the next node casts it to fp32. An
fp16 variant checked that way would pass even where TensorRT overflows.

The emulation rewrites a check-only copy: every op computes in fp32 (as TensorRT's fp16 kernels
accumulate in fp32) and every tensor the fp16 model stores as fp16 is rounded through an explicit
Cast fp32 → fp16 → fp32, which ONNX Runtime keeps (a lossy cast chain is not removed). Overflow
becomes inf, rounding happens where the engine rounds, and the fp16 weights keep their fp16 values.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

SUFFIX_F32 = "__emu_f32"
SUFFIX_F16 = "__emu_f16"
SUFFIX_R32 = "__emu_r32"


def emulate_fp16(model):
    """Return an fp32 copy of `model` with explicit fp16 rounding after every fp16-valued node.

    Args:
        model: an fp16 (or mixed) onnx.ModelProto without subgraphs.
    Returns:
        onnx.ModelProto with the same graph inputs and outputs (names and dtypes), or None when the
        model has control-flow subgraphs (the rewrite does not descend into them).
    """
    import onnx
    from onnx import AttributeProto, TensorProto, helper, numpy_helper

    if any(a.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS) for n in model.graph.node for a in n.attribute):
        return None
    types = _tensor_types(model)
    FP16, FP32 = TensorProto.FLOAT16, TensorProto.FLOAT
    emu = onnx.ModelProto()
    emu.CopyFrom(model)
    g = emu.graph
    del g.value_info[:]  # the fp16 types recorded there no longer hold

    for i, t in enumerate(g.initializer):
        if t.data_type == FP16:
            g.initializer[i].CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float32), t.name))

    graph_outputs = {o.name for o in g.output}
    rename: dict[str, str] = {}  # tensor → the fp32 copy its consumers read instead
    nodes: list[tuple[object, bool]] = []  # (node, added by the emulation)

    def add(op_input: str, op_output: str, to: int, name: str) -> None:
        nodes.append((helper.make_node("Cast", [op_input], [op_output], to=to, name=name), True))

    for vi in g.input:
        if vi.type.tensor_type.elem_type == FP16:  # the caller feeds fp16; compute on in fp32
            rename[vi.name] = vi.name + SUFFIX_R32
            add(vi.name, rename[vi.name], FP32, f"{vi.name}/emu_to_f32")
    for node in g.node:
        _to_fp32_attributes(node, FP16, FP32)
        nodes.append((node, False))
        for k, out in enumerate(node.output):
            if not out or types.get(out) != FP16:
                continue
            node.output[k] = out + SUFFIX_F32
            if out in graph_outputs:  # the graph output stays fp16; other consumers read an fp32 copy
                add(out + SUFFIX_F32, out, FP16, f"{out}/emu_round")
                rename[out] = out + SUFFIX_R32
                add(out, rename[out], FP32, f"{out}/emu_back")
            else:
                add(out + SUFFIX_F32, out + SUFFIX_F16, FP16, f"{out}/emu_round")
                add(out + SUFFIX_F16, out, FP32, f"{out}/emu_back")
    for node, added in nodes:
        if not added:
            for i, name in enumerate(node.input):
                if name in rename:
                    node.input[i] = rename[name]
    del g.node[:]
    g.node.extend(n for n, _ in nodes)
    return emu


def _to_fp32_attributes(node, fp16: int, fp32: int) -> None:
    """Ops keep computing in fp32: Cast-to-fp16 becomes Cast-to-fp32 (the rounding is added after it),
    and fp16 constants inside attributes become fp32 with the same values."""
    from onnx import AttributeProto, numpy_helper

    for attr in node.attribute:
        if node.op_type == "Cast" and attr.name == "to" and attr.i == fp16:
            attr.i = fp32
        elif attr.type == AttributeProto.TENSOR and attr.t.data_type == fp16:
            name = attr.t.name
            attr.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(attr.t).astype(np.float32), name))
        elif attr.name == "dtype" and attr.type == AttributeProto.INT and attr.i == fp16:
            attr.i = fp32


def _tensor_types(model) -> dict[str, int]:
    """Element type of every tensor, from ONNX type inference on the fp16 model."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    g = inferred.graph
    types: dict[str, int] = defaultdict(int)
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        if vi.type.HasField("tensor_type"):
            types[vi.name] = vi.type.tensor_type.elem_type
    for t in g.initializer:
        types[t.name] = t.data_type
    return types

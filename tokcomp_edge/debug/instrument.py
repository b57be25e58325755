"""Extra graph outputs for debugging: block activations, and two scalars per tensor computed in the graph.

Marking every intermediate tensor as a full output would copy hundreds of activations out of ONNX
Runtime per run. Instead each float tensor `t` gets two tiny reductions appended to the graph:
`ReduceMax(Abs(t))` (its largest magnitude) and `ReduceSum(Cast(IsNaN(t − t)))` (how many of its values
are inf or NaN: t − t is NaN exactly there). Only the tensors whose values are compared (block outputs,
the nodes of the failing block) come back whole.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..core.ort_session import tensor_types

ABSMAX = "tokdbg_absmax__"
NONFINITE = "tokdbg_nonfinite__"


def node_outputs(model) -> dict[str, tuple[str, int]]:
    """Tensor → (producing node's name, output position)."""
    return {o: (n.name, i) for n in model.graph.node for i, o in enumerate(n.output) if o}


def map_tensor(name: str, producer: tuple[str, int] | None, variant_outputs: dict[str, tuple[str, int]],
               variant_by_node: dict[str, list[str]]) -> str | None:
    """The variant's tensor holding what fp32 tensor `name` holds, or None.

    AutoCast and ModelOpt's Q/DQ keep the original tensor names (they add `<t>_cast_to_fp16`,
    `<t>_QuantizeLinear_Output`, … beside them); a graph output moved behind a cast is `<t>_pre_cast`;
    otherwise the output of the node of the same name at the same position.
    """
    for candidate in (f"{name}_pre_cast", name):
        if candidate in variant_outputs:
            return candidate
    if producer is not None:
        outs = variant_by_node.get(producer[0])
        if outs and producer[1] < len(outs):
            return outs[producer[1]]
    return None


@dataclass
class Instrumented:
    """A model with extra outputs, and what they are.

    Attributes:
        model: the onnx.ModelProto to run.
        tensors: full tensors returned (their own names).
        stats: tensors with an absmax / nonfinite output pair.
    """

    model: object
    tensors: list[str]
    stats: list[str]


def instrument(model, tensors: list[str], stats: list[str]) -> Instrumented:
    """A copy of `model` that also outputs `tensors` whole and the two reductions of each of `stats`.

    Only float32 tensors are instrumented (run the fp16 emulation first: it makes every activation an
    fp32 tensor holding the fp16-rounded value), and int64 ones returned whole; others are silently left
    out of the lists returned.
    """
    import onnx
    from onnx import TensorProto, helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    types = tensor_types(m)
    g = m.graph
    existing = {o.name for o in g.output}
    # int64 whole tensors too: ToMe's patch → row maps, which pair the rows of its block outputs.
    keep_t = [t for t in dict.fromkeys(tensors) if types.get(t) in (TensorProto.FLOAT, TensorProto.INT64)]
    keep_s = [t for t in dict.fromkeys(stats) if types.get(t) == TensorProto.FLOAT]
    for t in keep_t:
        if t not in existing:
            g.output.append(helper.make_tensor_value_info(t, types[t], None))
    for i, t in enumerate(keep_s):
        p = f"tokdbg{i}"
        g.node.extend([
            helper.make_node("Abs", [t], [f"{p}_abs"], name=f"{p}/abs"),
            helper.make_node("ReduceMax", [f"{p}_abs"], [ABSMAX + t], name=f"{p}/absmax", keepdims=0),
            helper.make_node("Sub", [t, t], [f"{p}_zero"], name=f"{p}/sub"),
            helper.make_node("IsNaN", [f"{p}_zero"], [f"{p}_nan"], name=f"{p}/isnan"),
            helper.make_node("Cast", [f"{p}_nan"], [f"{p}_nanf"], name=f"{p}/cast", to=TensorProto.FLOAT),
            helper.make_node("ReduceSum", [f"{p}_nanf"], [NONFINITE + t], name=f"{p}/count", keepdims=0),
        ])
        g.output.extend([helper.make_tensor_value_info(ABSMAX + t, TensorProto.FLOAT, []),
                         helper.make_tensor_value_info(NONFINITE + t, TensorProto.FLOAT, [])])
    return Instrumented(model=m, tensors=keep_t, stats=keep_s)

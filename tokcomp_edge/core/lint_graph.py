"""Graph helpers for the lint: walking nodes through subgraphs and functions, and resolving constants.

TensorRT needs some node inputs (TopK's K, reduction axes, …) to be build-time constants. The exporter
usually writes them as initializers or `Constant` nodes, but a value can also be computed from other
constants or from a static shape (`Shape → Gather → Mul`); `ConstResolver` folds those small chains
with ONNX's reference evaluator, so the lint does not flag a K that TensorRT would fold itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# Ops folded when all their inputs are constant: cheap, shape-like arithmetic only.
FOLDABLE_OPS = frozenset({
    "Identity", "Cast", "Reshape", "Squeeze", "Unsqueeze", "Concat", "Gather", "Slice", "Add", "Sub",
    "Mul", "Div", "Min", "Max", "Floor", "Ceil", "Neg", "Abs", "Range", "ReduceProd", "ReduceSum",
    "ReduceMin", "ReduceMax", "Equal", "Where", "Expand", "ConstantOfShape", "Flatten",
})
# Folding stops above this many elements: such tensors are weights, not shape arithmetic.
MAX_FOLD_ELEMENTS = 4096
MAX_FOLD_DEPTH = 64


class _External:
    """Marks a constant whose bytes live in an external data file (constant, value not loaded)."""


EXTERNAL = _External()


@dataclass(frozen=True)
class NodeRef:
    """A node with its display name and the constant resolver of the graph it sits in."""

    node: Any  # onnx.NodeProto
    name: str
    consts: "ConstResolver"


def node_display_name(node, index: int, prefix: str = "") -> str:
    """The node's name, or `#<index> <op>` for unnamed nodes; nested nodes get their parent as prefix."""
    base = node.name or f"#{index} {node.op_type}"
    return f"{prefix}{base}"


class ConstResolver:
    """Answers "is this tensor a build-time constant, and what is its value?" for one graph.

    Args:
        graph: the onnx GraphProto.
        shapes: tensor name → static dims (None for unknown dims), from shape inference.
        outer: the resolver of the enclosing graph (subgraphs see outer-scope names).
    """

    def __init__(self, graph, shapes: dict[str, list[int | None]], outer: "ConstResolver | None" = None):
        self.initializers = {t.name: t for t in graph.initializer}
        self.producers = {out: n for n in graph.node for out in n.output if out}
        self.graph_inputs = {i.name for i in graph.input} - set(self.initializers)
        self.shapes = shapes
        self.outer = outer
        self._memo: dict[str, Any] = {}

    def is_const(self, name: str) -> bool:
        return self.value(name) is not None

    def value(self, name: str, depth: int = 0) -> Any:
        """The tensor's value (np.ndarray), `EXTERNAL` for an external-data constant, None if not constant."""
        if not name:
            return None
        if name in self._memo:
            return self._memo[name]
        result = self._resolve(name, depth)
        self._memo[name] = result
        return result

    def _resolve(self, name: str, depth: int) -> Any:
        from onnx import numpy_helper

        if name in self.initializers:
            t = self.initializers[name]
            if t.data_location == 1:  # TensorProto.EXTERNAL: the lint loads models without their weights
                return EXTERNAL
            return numpy_helper.to_array(t)
        if name in self.graph_inputs:
            return None
        node = self.producers.get(name)
        if node is None:
            return self.outer.value(name, depth) if self.outer is not None else None
        if depth > MAX_FOLD_DEPTH:
            return None
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            return _constant_value(node)
        if node.op_type == "Shape" and node.domain in ("", "ai.onnx"):
            return self._static_shape(node)
        if node.op_type in ("Gather", "Slice") and node.domain in ("", "ai.onnx"):
            picked = self._pick_from_shape(node, depth)
            if picked is not None:
                return picked
        if node.op_type in FOLDABLE_OPS and node.domain in ("", "ai.onnx"):
            return self._fold(node, name, depth)
        return None

    def _shape_dims(self, node) -> list[int | None] | None:
        """Dims a Shape node reports (None for symbolic ones, e.g. the batch axis)."""
        dims = self.shapes.get(node.input[0])
        if dims is None:
            return None
        attrs = {a.name: a.i for a in node.attribute}
        return dims[slice(attrs.get("start", 0), attrs.get("end", len(dims)))]

    def _static_shape(self, node) -> np.ndarray | None:
        dims = self._shape_dims(node)
        if dims is None or any(d is None for d in dims):
            return None
        return np.asarray(dims, dtype=np.int64)

    def _pick_from_shape(self, node, depth: int) -> np.ndarray | None:
        """`Gather(Shape(x), i)` / `Slice(Shape(x), …)`: constant when the picked dims are static, even if
        others (the dynamic batch axis) are not — the pattern torch exports for `x.size(i)`."""
        src = self.producers.get(node.input[0])
        if src is None or src.op_type != "Shape":
            return None
        dims = self._shape_dims(src)
        if dims is None:
            return None
        rest = [self.value(i, depth + 1) if i else None for i in node.input[1:]]
        if any(r is None or r is EXTERNAL for r, i in zip(rest, node.input[1:]) if i):
            return None
        positions = np.arange(len(dims))
        try:
            if node.op_type == "Gather":
                picked = positions[np.asarray(rest[0], dtype=np.int64)]
            else:
                starts, ends = (np.asarray(r, dtype=np.int64).reshape(-1) for r in rest[:2])
                has_steps = len(rest) > 3 and rest[3] is not None
                steps = np.asarray(rest[3], dtype=np.int64).reshape(-1) if has_steps else [1]
                picked = positions[slice(int(starts[0]), int(ends[0]), int(steps[0]))]
        except (IndexError, ValueError):
            return None
        values = [dims[int(i)] for i in np.asarray(picked).reshape(-1)]
        if any(v is None for v in values):
            return None
        return np.asarray(values, dtype=np.int64).reshape(np.asarray(picked).shape)

    def _fold(self, node, name: str, depth: int) -> Any:
        values = [self.value(i, depth + 1) if i else None for i in node.input]
        if any(v is None or v is EXTERNAL for v, i in zip(values, node.input) if i):
            return None
        if any(v is not None and v.size > MAX_FOLD_ELEMENTS for v in values):
            return None
        try:
            out = _evaluate(node, values)
        except Exception:  # a node the reference evaluator cannot run is simply "not known constant"
            return None
        return out.get(name)


def _constant_value(node) -> Any:
    from onnx import helper, numpy_helper

    for attr in node.attribute:
        if attr.name == "value":
            return numpy_helper.to_array(attr.t) if attr.t.data_location != 1 else EXTERNAL
        if attr.name in ("value_int", "value_float"):
            return np.asarray(helper.get_attribute_value(attr))
        if attr.name in ("value_ints", "value_floats"):
            return np.asarray(list(helper.get_attribute_value(attr)))
    return None  # sparse or string constants: reported by the Constant check, not foldable


def _evaluate(node, values: list[Any]) -> dict[str, np.ndarray]:
    """Run one node on constant inputs with onnx's reference evaluator."""
    from onnx import helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    inits = []
    inputs = []
    for i, (name, v) in enumerate(zip(node.input, values)):
        if not name:
            inputs.append("")
            continue
        fed = f"c{i}"
        inits.append(numpy_helper.from_array(np.asarray(v), fed))
        inputs.append(fed)
    single = helper.make_node(node.op_type, inputs, list(node.output), domain=node.domain)
    single.attribute.extend(node.attribute)
    graph = helper.make_graph([single], "fold", [], [helper.make_empty_tensor_value_info(o)
                                                     for o in node.output if o], inits)
    results = ReferenceEvaluator(helper.make_model(graph)).run(None, {})
    return dict(zip([o for o in node.output if o], (np.asarray(r) for r in results)))


def static_shapes(model) -> dict[str, list[int | None]]:
    """Tensor name → dims after ONNX shape inference (None for a symbolic or unknown dim)."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False)
    except Exception:  # shape inference is a help for constant folding, never a reason to fail the lint
        inferred = model
    shapes: dict[str, list[int | None]] = {}
    g = inferred.graph
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        t = vi.type.tensor_type
        if t.HasField("shape"):
            shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
    return shapes


def walk(graph, consts: ConstResolver, functions: dict[tuple[str, str], Any],
         prefix: str = "", seen: frozenset = frozenset()) -> Iterator[NodeRef]:
    """Every node of `graph`, then of its subgraphs (If/Loop/Scan bodies) and of the model-local
    functions it calls, each with a display name that says where it sits."""
    from onnx import AttributeProto

    for index, node in enumerate(graph.node):
        name = node_display_name(node, index, prefix)
        yield NodeRef(node, name, consts)
        for attr in node.attribute:
            subgraphs = ([attr.g] if attr.type == AttributeProto.GRAPH else
                         list(attr.graphs) if attr.type == AttributeProto.GRAPHS else [])
            for sub in subgraphs:
                inner = ConstResolver(sub, consts.shapes, outer=consts)
                yield from walk(sub, inner, functions, f"{name}/{attr.name}/", seen)
        key = (node.domain, node.op_type)
        if key in functions and key not in seen:
            body = _function_as_graph(functions[key])
            yield from walk(body, ConstResolver(body, {}), functions, f"{name}/", seen | {key})


def _function_as_graph(fn):
    """A FunctionProto's body viewed as a graph (nodes only; its inputs are not constants)."""
    from onnx import helper

    return helper.make_graph(list(fn.node), fn.name, [helper.make_empty_tensor_value_info(i) for i in fn.input],
                             [helper.make_empty_tensor_value_info(o) for o in fn.output])


def missing_external_files(model, base_dir: Path | None) -> list[tuple[str, str]]:
    """(initializer, location) for every external-data initializer whose file is not beside the model."""
    if base_dir is None:
        return []
    missing = []
    for t in model.graph.initializer:
        if t.data_location != 1:
            continue
        location = next((e.value for e in t.external_data if e.key == "location"), "")
        if not location or not (base_dir / location).is_file():
            missing.append((t.name, location or "<no location>"))
    return missing

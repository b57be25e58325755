"""Find the transformer blocks of an exported graph, and the tensor each block hands to the next.

The dynamo exporter's node names (`node_MatMul_65`) carry no module path after onnxslim, but parameter
names do: `tower.hf.encoder.layers.3.layer_norm1.weight`, `user.blocks.2.mlp.fc1.bias`. Nodes that
read such an initializer are anchors of the module path up to its first numeric part
(`tower.hf.encoder.layers.3`). Node metadata (`pkg.torch.onnx.name_scopes`, kept by un-slimmed exports)
and slash-separated node names (`/encoder/layers.3/mlp/fc1/MatMul`, the TorchScript exporter) are
read the same way when present. The blocks are the members of the numbered family with the most
members (so a projector's `mlp1.0` is not taken for a transformer block).

A block spans from its first anchor to its last, plus the residual plumbing right after it (Add, Mul
for LayerScale, Cast); its output is the last tensor of that span read by a later node (the residual
stream the next block's LayerNorm reads) or by a graph output.
"""

from __future__ import annotations

import ast
from collections import Counter
from dataclasses import dataclass
from typing import Any

from ..errors import InputError

# Ops that may follow a block's last anchor and still belong to it (the residual add, LayerScale, casts).
RESIDUAL_OPS = frozenset({"Add", "Mul", "Cast", "Identity"})


@dataclass(frozen=True)
class Block:
    """One transformer block of a graph.

    Attributes:
        index: 0-based, in execution order.
        name: the module path (`tower.hf.encoder.layers.3`).
        nodes: names of the block's nodes, in graph order.
        output: the tensor the block hands on (its residual stream).
    """

    index: int
    name: str
    nodes: tuple[str, ...]
    output: str


def _numbered_prefix(path: str) -> tuple[str, int] | None:
    """`a.b.layers.3.mlp.fc1.bias` → (`a.b.layers`, 3); None when no part after the first is a number."""
    parts = [p for p in path.replace("/", ".").split(".") if p]
    for i, p in enumerate(parts):
        if i and p.isdigit():
            return ".".join(parts[:i]), int(p)
    return None


def _node_paths(node, initializers: set[str]) -> list[str]:
    # `initializers`: only those read by exactly one node. onnxslim merges equal constants (freshly
    # initialised LayerNorm weights are all ones), so a shared one says nothing about where a node sits.
    """Module paths a node carries: its name scopes, a slash-style name, the initializers it reads."""
    paths = []
    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            try:
                scopes = ast.literal_eval(prop.value)
            except (ValueError, SyntaxError):
                scopes = []
            paths.extend(s for s in scopes if isinstance(s, str))
    if "/" in node.name:
        paths.append(node.name)
    paths.extend(i for i in node.input if i in initializers and "." in i)
    return paths


def find_blocks(model) -> list[Block]:
    """The transformer blocks of `model` (an onnx.ModelProto, topologically sorted), in execution order.

    Raises:
        InputError: no numbered module path (`…layers.N…`, `…blocks.N…`) is found in the graph.
    """
    nodes = list(model.graph.node)
    readers = Counter(i for n in nodes for i in set(n.input))
    inits = {t.name for t in model.graph.initializer if readers[t.name] == 1}
    anchors: dict[int, tuple[str, int]] = {}  # node position → (family prefix, number)
    for pos, node in enumerate(nodes):
        paths = _node_paths(node, inits)
        found = next((f for f in map(_numbered_prefix, paths) if f), None)
        if found:
            anchors[pos] = found
        elif paths:  # a module outside any numbered family (the embedding, the final norm, a projector)
            anchors[pos] = (paths[0].rsplit(".", 1)[0], -1)
    families = Counter()
    for fam in {a for a in anchors.values() if a[1] >= 0}:
        families[fam[0]] += 1
    if not families:
        raise InputError(f"found no transformer blocks in graph {model.graph.name!r}: no parameter or node name "
                         "carries a numbered module path such as encoder.layers.3",
                         "debug needs the module paths the torch exporter writes into parameter names; "
                         "re-export the bundle with `tokcomp export`")
    family = families.most_common(1)[0][0]
    positions: dict[int, list[int]] = {}
    for pos, (fam, num) in sorted(anchors.items()):
        if fam == family and num >= 0:
            positions.setdefault(num, []).append(pos)
    order = sorted(positions, key=lambda n: positions[n][0])
    all_anchors = sorted(anchors)
    consumers: dict[str, int] = {}  # tensor → position of its last consumer
    for pos, node in enumerate(nodes):
        for name in node.input:
            consumers[name] = pos
    graph_outputs = {o.name for o in model.graph.output}
    blocks = []
    prev_end = None
    for num in order:
        first, last = positions[num][0], positions[num][-1]
        # Blocks tile the graph: each starts right after the previous one ends (its LayerNorm may carry no
        # anchor); the first starts after the last other anchor before it (the embedding).
        if prev_end is not None:
            first = prev_end + 1
        else:
            first = max((p for p in all_anchors if p < first and anchors[p][0] != family), default=first - 1) + 1
        nxt = next((p for p in all_anchors if p > last and anchors[p] != (family, num)), len(nodes))
        end = last
        while end + 1 < nxt and nodes[end + 1].op_type in RESIDUAL_OPS:
            end += 1
        output = None
        for pos in range(end, first - 1, -1):
            out = nodes[pos].output[0] if nodes[pos].output else ""
            if out and (consumers.get(out, -1) > end or out in graph_outputs):
                output = out
                break
        if output is None:
            continue
        prev_end = end
        blocks.append(Block(index=len(blocks), name=f"{family}.{num}",
                            nodes=tuple(n.name for n in nodes[first:end + 1]), output=output))
    return blocks


def block_of_nodes(blocks: list[Block]) -> dict[str, int]:
    """Node name → index of the block that holds it."""
    return {n: b.index for b in blocks for n in b.nodes}


def describe(blocks: list[Block]) -> list[dict[str, Any]]:
    return [{"index": b.index, "name": b.name, "nodes": len(b.nodes), "output": b.output} for b in blocks]

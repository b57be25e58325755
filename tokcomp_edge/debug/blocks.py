"""The transformer blocks of a bundle's graph: recorded at export (manifest `blocks`, export/block_taps.py),
never guessed from the graph.

The manifest names each block's module path and the tensor it hands on. A block's nodes are the nodes the
graph needs for its output and not already for the previous block's output (block 0 also holds the
embedding in front of it); what follows the last block (final norm, compressor, projector) is no block's.
A bundle exported before blocks were recorded is refused with one line (re-export), never guessed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import BundleError

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
    source: str | None = None  # ToMe: the patch → row map after this block


def find_blocks(model, manifest: dict[str, Any]) -> list[Block]:
    """The blocks `manifest` records, with their nodes in `model` (an onnx.ModelProto of that bundle).

    Raises:
        BundleError: the manifest records no blocks (an older bundle, or a module whose blocks could not
            be recorded), or a recorded tensor is not in the graph.
    """
    recorded = manifest.get("blocks")
    name = manifest.get("name", "the bundle")
    if recorded is None:
        raise BundleError(f"{name} records no transformer blocks (exported before tokcomp recorded them)",
                          "re-export it with `tokcomp export` (the same command) and debug the new bundle")
    if not recorded:
        why = manifest.get("blocks_note") or "none were found at export"
        raise BundleError(f"{name} records no transformer blocks: {why}",
                          "debug needs a tower whose blocks tokcomp can see (a list of repeated modules)")
    nodes = list(model.graph.node)
    producer = {o: k for k, n in enumerate(nodes) for o in n.output if o}

    def ancestors(tensor: str) -> set[int]:
        seen: set[int] = set()
        stack = [producer[tensor]] if tensor in producer else []
        while stack:
            k = stack.pop()
            if k in seen:
                continue
            seen.add(k)
            stack.extend(producer[i] for i in nodes[k].input if i in producer)
        return seen

    blocks, before = [], set()
    for rec in sorted(recorded, key=lambda r: r["index"]):
        out = rec["output"]
        if out not in producer:
            raise BundleError(f"{name}: block {rec['index']} output {out!r} is not in {model.graph.name or 'the graph'}",
                              "the ONNX file does not match its manifest; re-export the bundle")
        mine = ancestors(out)
        own = sorted(mine - before)
        before |= mine
        blocks.append(Block(index=int(rec["index"]), name=str(rec["module"]),
                            nodes=tuple(nodes[k].name for k in own), output=out, source=rec.get("source")))
    return blocks


def block_of_nodes(blocks: list[Block]) -> dict[str, int]:
    """Node name → index of the block that holds it."""
    return {n: b.index for b in blocks for n in b.nodes}


def describe(blocks: list[Block]) -> list[dict[str, Any]]:
    return [{"index": b.index, "name": b.name, "nodes": len(b.nodes), "output": b.output} for b in blocks]

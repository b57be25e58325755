"""Run the fp32 graph and a variant side by side on the same inputs, block by block, on ONNX Runtime CPU.

The variant runs through the fp16 emulation (export/fp16_emulation.py): every op in fp32, every tensor the
variant stores as fp16 rounded to fp16 — what an fp16 engine computes, so overflow shows as inf where
the engine overflows (natively, ONNX Runtime CPU upcasts most fp16 ops and would hide it). Q/DQ (int8)
graphs run as they are, their fp16 parts emulated the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..core.ort_session import tensor_types
from ..core.tolerance import Tolerance
from .blocks import Block, find_blocks
from .instrument import ABSMAX, NONFINITE, instrument, map_tensor, node_outputs
from .membership import pair_by_membership
from .metrics import FP16_MAX, errors_over, overflow_margin
from .result import BlockFigures, NodeFigures

_DTYPE_NAMES = {1: "float32", 10: "float16", 16: "bfloat16", 3: "int8", 2: "uint8", 7: "int64", 6: "int32", 9: "bool"}
# Nodes whose output is no activation (shapes, constants): never instrumented, never islands.
_PLUMBING = frozenset({"Shape", "Constant", "ConstantOfShape", "Size", "Range"})


@dataclass
class Analysis:
    """Per-block figures plus what --fix needs.

    Attributes:
        blocks: figures per block; culprit: first breaking block (index, name, node) or None.
        node_io_absmax: fp32 node name → the largest fp32 |value| among its input and output activations.
        fp16_nodes: fp32 node names whose output the variant stores in fp16.
        runtime: how the graphs ran.
    """

    blocks: list[BlockFigures]
    culprit: dict[str, Any] | None
    node_io_absmax: dict[str, float]
    fp16_nodes: set[str]
    runtime: str
    graph_blocks: list[Block] = field(default_factory=list)
    node_ops: dict[str, str] = field(default_factory=dict)


def _session(model):
    from ..core.ort_session import ort_session

    return ort_session(model.SerializeToString())


def _run(sess, inputs: list[np.ndarray], names: list[str]) -> list[dict[str, np.ndarray]]:
    in_name = sess.get_inputs()[0].name
    dtype = np.float16 if sess.get_inputs()[0].type == "tensor(float16)" else np.float32
    return [dict(zip(names, sess.run(names, {in_name: x.astype(dtype)}))) for x in inputs]


def _stats(runs: list[dict[str, np.ndarray]], tensors: list[str]) -> tuple[dict[str, float], dict[str, int]]:
    absmax = {t: max(float(r[ABSMAX + t]) for r in runs) for t in tensors}
    nonfinite = {t: int(sum(float(r[NONFINITE + t]) for r in runs)) for t in tensors}
    return absmax, nonfinite


def _pairs(ref_runs, var_runs, ref_name: str, var_name: str) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """(fp32, variant) arrays of one tensor per input batch; None when a shape differs."""
    pairs = [(r[ref_name], v[var_name]) for r, v in zip(ref_runs, var_runs)]
    return pairs if all(np.shape(a) == np.shape(b) for a, b in pairs) else None


class _Pair:
    """The fp32 model and the (emulated) variant, with the fp32 → variant tensor-name map."""

    def __init__(self, fp32_model, variant_model):
        from ..export.fp16_emulation import emulate_fp16

        self.fp32 = fp32_model
        self.stored = tensor_types(variant_model)  # how the variant itself stores each tensor
        emulated = emulate_fp16(variant_model)
        self.variant = emulated if emulated is not None else variant_model
        self.emulated = emulated is not None
        self.fp32_producers = node_outputs(fp32_model)
        self.var_outputs = node_outputs(self.variant)
        self.var_by_node: dict[str, list[str]] = {n.name: list(n.output) for n in variant_model.graph.node}
        self.nodes = {n.name: n for n in fp32_model.graph.node}

    def vname(self, t: str) -> str | None:
        return map_tensor(t, self.fp32_producers.get(t), self.var_outputs, self.var_by_node)

    def stored_dtype(self, t: str) -> str:
        v = self.vname(t)
        return _DTYPE_NAMES.get(self.stored.get(v, 0) if v else 0, "unknown")


def analyse(fp32_model, variant_model, inputs: list[np.ndarray], tol: Tolerance,
            manifest: dict[str, Any]) -> Analysis:
    """Compare every block's output (and, in the first breaking block, every node) of the two graphs.

    Args:
        fp32_model, variant_model: onnx.ModelProto of the bundle's model.onnx and of the variant.
        inputs: pixel_values batches [B, 3, H, W] float32, fed to both.
        tol: when a block (or node) breaks.
        manifest: the bundle's manifest (its recorded `blocks`).
    """
    pair = _Pair(fp32_model, variant_model)
    blocks = find_blocks(fp32_model, manifest)
    activations = [o for n in fp32_model.graph.node if n.op_type not in _PLUMBING for o in n.output if o]
    graph_inputs = [i.name for i in fp32_model.graph.input]
    sources = [b.source for b in blocks if b.source]
    ref_inst = instrument(fp32_model, [b.output for b in blocks] + sources, activations + graph_inputs)
    ref_runs = _run(_session(ref_inst.model), inputs, [o.name for o in ref_inst.model.graph.output])
    # ToMe's protection mask holds −inf in fp32 as well: only values non-finite in the variant but finite
    # in fp32 count against it.
    ref_absmax, ref_nonfinite = _stats(ref_runs, ref_inst.stats)

    mapped = {t: pair.vname(t) for t in activations}
    var_tensors = [pair.vname(t) for t in [b.output for b in blocks] + sources]
    var_inst = instrument(pair.variant, [v for v in var_tensors if v], [v for v in mapped.values() if v])
    var_runs = _run(_session(var_inst.model), inputs, [o.name for o in var_inst.model.graph.output])
    _, var_nonfinite = _stats(var_runs, var_inst.stats)

    fp16_nodes = {n.name for n in fp32_model.graph.node if n.output and pair.stored_dtype(n.output[0]) == "float16"}
    node_io = {}
    for n in fp32_model.graph.node:
        vals = [ref_absmax[t] for t in list(n.input) + list(n.output) if t in ref_absmax]
        if vals and n.op_type not in _PLUMBING:
            node_io[n.name] = max(vals)

    figures = []
    for b in blocks:
        figures.append(_block_figures(b, pair, ref_runs, var_runs, ref_absmax, var_nonfinite, mapped, tol,
                                      ref_nonfinite))
    culprit = None
    first = next((f for f in figures if f.breaks), None)
    if first is not None:
        block = blocks[first.index]
        first.nodes = _node_figures(block, pair, inputs, tol)
        node = next((n for n in first.nodes if n.breaks), None) or _largest_jump(first.nodes)
        culprit = {"index": first.index, "name": first.name, "node": node.name if node else None,
                   "op_type": node.op_type if node else None, "reasons": list(first.reasons)}
    runtime = _runtime_label(pair)
    return Analysis(blocks=figures, culprit=culprit, node_io_absmax=node_io, fp16_nodes=fp16_nodes,
                    runtime=runtime, graph_blocks=blocks,
                    node_ops={n.name: n.op_type for n in fp32_model.graph.node})


def _runtime_label(pair: _Pair) -> str:
    import onnxruntime

    from ..core.ort_session import CPU

    how = ("fp16 emulation: fp32 compute, fp16 tensors rounded (as an fp16 engine stores them)" if pair.emulated
           else "as the file is (control flow: no fp16 emulation)")
    return f"onnxruntime {onnxruntime.__version__} CPUExecutionProvider ({CPU.describe()}); variant: {how}"


_NO_ERR = {"max_abs": float("nan"), "rel_l2": float("nan"), "min_cosine": float("nan")}


def output_errors(b: Block, ref_runs, var_runs, vout: str | None, vsource: str | None, tol: Tolerance):
    """(errors, reasons, membership) of a block output, variant vs fp32.

    A ToMe block (one with a recorded patch → row map) is compared by merge membership
    (debug/membership.py): rows holding the same patches are paired; patches whose merged set differs
    are a membership difference, judged by the share of patches that agree against min_jaccard, and are
    not numeric error. Other blocks are compared row by row.
    """
    if vout is None or vout not in var_runs[0]:
        return dict(_NO_ERR), [f"output {b.output} not found in the variant"], None
    if b.source:
        if vsource is None or vsource not in var_runs[0] or b.source not in ref_runs[0]:
            return dict(_NO_ERR), [f"merge map {b.source} of a ToMe block not found in the variant"], None
        paired = pair_by_membership([(r[b.output], r[b.source]) for r in ref_runs],
                                    [(v[vout], v[vsource]) for v in var_runs])
        if paired is None:
            return dict(_NO_ERR), [f"output {b.output} has another shape in the variant"], None
        membership = {"patches": paired.patches, "moved": paired.moved, "agreement": paired.agreement}
        reasons = []
        if not (paired.agreement >= tol.min_jaccard):
            reasons.append(f"merge membership: {paired.moved} of {paired.patches} patches in rows merged "
                           f"otherwise (agreement {paired.agreement:.3f} < {tol.min_jaccard:g})")
        return errors_over(paired.pairs), reasons, membership
    pairs = _pairs(ref_runs, var_runs, b.output, vout)
    if not pairs:
        return dict(_NO_ERR), [f"output {b.output} has another shape in the variant"], None
    return errors_over(pairs), [], None


def _block_figures(b: Block, pair: _Pair, ref_runs, var_runs, ref_absmax, var_nonfinite, mapped,
                   tol: Tolerance, ref_nonfinite: dict[str, int]) -> BlockFigures:
    err, reasons, membership = output_errors(b, ref_runs, var_runs, pair.vname(b.output),
                                              pair.vname(b.source) if b.source else None, tol)
    best, best_node = None, None
    first_bad = None
    for name in b.nodes:
        node = pair.nodes[name]
        for t in node.output:
            if t in ref_absmax and pair.stored_dtype(t) == "float16" and (best is None or ref_absmax[t] > best):
                best, best_node = ref_absmax[t], name
            v = mapped.get(t)
            new_bad = (var_nonfinite.get(v, 0) - ref_nonfinite.get(t, 0)) if v is not None else 0
            if first_bad is None and new_bad > 0:
                first_bad = {"node": name, "op_type": node.op_type, "tensor": t, "count": new_bad}
    margin = overflow_margin(best)
    if first_bad:
        reasons.append(f"{first_bad['count']} inf/NaN values, first in {first_bad['node']} ({first_bad['op_type']})")
    if margin is not None and margin < 1:
        reasons.append(f"|activation| {best:.4g} in {best_node} exceeds fp16's 65504")
    if not first_bad and np.isfinite(err["rel_l2"]) and err["rel_l2"] > tol.max_rel_l2:
        reasons.append(f"rel L2 {err['rel_l2']:.3g} > {tol.max_rel_l2:g}")
    if not first_bad and np.isfinite(err["min_cosine"]) and err["min_cosine"] < tol.min_cosine:
        reasons.append(f"min token cosine {err['min_cosine']:.5f} < {tol.min_cosine:g}")
    return BlockFigures(index=b.index, name=b.name, output=b.output, max_abs=err["max_abs"], rel_l2=err["rel_l2"],
                        min_cosine=err["min_cosine"], max_activation=best, max_activation_node=best_node,
                        overflow_margin=margin, first_nonfinite=first_bad, breaks=bool(reasons), reasons=reasons,
                        membership=membership)


def _node_figures(block: Block, pair: _Pair, inputs: list[np.ndarray], tol: Tolerance) -> list[NodeFigures]:
    """Every float output of every node of `block`, whole, in both graphs."""
    tensors = [(name, t) for name in block.nodes for t in pair.nodes[name].output[:1]
               if t and pair.nodes[name].op_type not in _PLUMBING]
    ref_inst = instrument(pair.fp32, [t for _, t in tensors], [])
    vnames = {t: pair.vname(t) for _, t in tensors}
    var_inst = instrument(pair.variant, [v for v in vnames.values() if v], [])
    ref_runs = _run(_session(ref_inst.model), inputs, [o.name for o in ref_inst.model.graph.output])
    var_runs = _run(_session(var_inst.model), inputs, [o.name for o in var_inst.model.graph.output])
    out = []
    for name, t in tensors:
        v = vnames.get(t)
        if t not in ref_runs[0] or v is None or v not in var_runs[0]:
            continue
        pairs = _pairs(ref_runs, var_runs, t, v)
        if not pairs:
            continue
        err = errors_over(pairs)
        amax = max(float(np.abs(r).max(initial=0.0)) for r, _ in pairs)
        dtype = pair.stored_dtype(t)
        nonfinite = sum(int((~np.isfinite(g) & np.isfinite(r)).sum()) for r, g in pairs)
        breaks = (nonfinite > 0 or (dtype == "float16" and amax > FP16_MAX) or err["rel_l2"] > tol.max_rel_l2
                  or err["min_cosine"] < tol.min_cosine)
        out.append(NodeFigures(name=name, op_type=pair.nodes[name].op_type, tensor=t, dtype=dtype,
                               max_abs=err["max_abs"], rel_l2=err["rel_l2"], min_cosine=err["min_cosine"],
                               max_activation=amax, nonfinite=nonfinite, breaks=bool(breaks)))
    return out


def _largest_jump(nodes: list[NodeFigures]) -> NodeFigures | None:
    """The node whose relative error grows most over the previous node's (errors accumulate, none breaks)."""
    best, prev, best_ratio = None, None, 0.0
    for n in nodes:
        if np.isfinite(n.rel_l2):
            ratio = n.rel_l2 / max(prev if prev is not None else 0.0, 1e-7)
            if ratio > best_ratio:
                best, best_ratio = n, ratio
            prev = n.rel_l2
    return best


def analyse_outputs(fp32_model, got: list[dict[str, np.ndarray]], names: dict[str, str], inputs: list[np.ndarray],
                    tol: Tolerance, manifest: dict[str, Any]) -> Analysis:
    """Per-block figures from block outputs another runtime computed (TensorRT: debug/trt.py).

    `got[i][names[block output]]` is the variant's block output for `inputs[i]`. Without the in-graph
    statistics, max_activation is the fp32 block output's and the node drill-down is left out.
    """
    blocks = find_blocks(fp32_model, manifest)
    ref_inst = instrument(fp32_model, [b.output for b in blocks] + [b.source for b in blocks if b.source], [])
    ref_runs = _run(_session(ref_inst.model), inputs, [o.name for o in ref_inst.model.graph.output])
    figures = []
    for b in blocks:
        v = names.get(b.output)
        vsrc = names.get(b.source) if b.source else None
        err, reasons, membership = output_errors(b, ref_runs, got, v, vsrc, tol)
        amax = max(float(np.abs(r[b.output]).max(initial=0.0)) for r in ref_runs)
        # Counted over the whole output: block outputs are finite in fp32 (ToMe's -inf mask is no block output).
        bad = sum(int((~np.isfinite(np.asarray(g[v], np.float64))).sum()) for g in got) if v and v in got[0] else 0
        if bad:
            reasons.append(f"{bad} inf/NaN values in the block output")
        elif not (err["rel_l2"] <= tol.max_rel_l2) and np.isfinite(err["rel_l2"]):
            reasons.append(f"rel L2 {err['rel_l2']:.3g} > {tol.max_rel_l2:g}")
        elif not (err["min_cosine"] >= tol.min_cosine) and np.isfinite(err["min_cosine"]):
            reasons.append(f"min token cosine {err['min_cosine']:.5f} < {tol.min_cosine:g}")
        figures.append(BlockFigures(index=b.index, name=b.name, output=b.output, max_abs=err["max_abs"],
                                    rel_l2=err["rel_l2"], min_cosine=err["min_cosine"], max_activation=amax,
                                    max_activation_node=None, overflow_margin=overflow_margin(amax),
                                    first_nonfinite=({"node": b.nodes[-1], "tensor": b.output, "count": bad}
                                                     if bad else None), breaks=bool(reasons), reasons=reasons,
                                    membership=membership))
    first = next((f for f in figures if f.breaks), None)
    culprit = None if first is None else {"index": first.index, "name": first.name, "node": None, "op_type": None,
                                          "reasons": list(first.reasons)}
    return Analysis(blocks=figures, culprit=culprit, node_io_absmax={}, fp16_nodes=set(), runtime="tensorrt",
                    graph_blocks=blocks)

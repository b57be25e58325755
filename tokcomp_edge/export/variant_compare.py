"""Building blocks of the variant checks: CPU sessions, prune scores, index and token comparisons.

Pruned bundles output `indices`: fp16 rounding can legitimately swap two tokens whose scores are
within the rounding error of each other. Rather than accept "most indices agree", the checks read the
score tensor each model feeds its TopK and count a swap as explained only when the scores of the two
tokens differ by less than twice the score error measured on the same images — any other swap fails.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# Token rows whose reference norm is below this fraction of the largest row norm are compared by
# absolute error only: their direction (cosine) is noise (zero padding tokens, for instance).
TINY_ROW = 1e-6


def ort_session(model: str | Path | bytes):
    """A CPU ONNX Runtime session for variant checks.

    ORT_ENABLE_EXTENDED, not _ALL: onnxruntime 1.24's NchwcTransformer (a layout optimisation that
    ENABLE_ALL adds) segfaults while creating the session for some AutoCast fp16 ViT graphs (seen with
    a Conv patch embedding + nn.TransformerEncoderLayer encoder; not with the HF tiny presets). EXTENDED
    keeps every graph fusion and only drops the layout rewrite, which changes speed, not results.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    opts.intra_op_num_threads = os.cpu_count() or 1
    opts.log_severity_level = 3
    src = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(src, sess_options=opts, providers=["CPUExecutionProvider"])


def runtime_label(sess) -> str:
    import onnxruntime

    return f"onnxruntime {onnxruntime.__version__} {sess.get_providers()[0]} (ORT_ENABLE_EXTENDED)"


# --- score tensors of TopK (for explaining index swaps) --------------------------------------------


def score_topk_nodes(model) -> list[str]:
    """Names of the TopK nodes that rank floating-point scores (the prune selection), in graph order.

    TopKs that sort integer indices back into grid order (prune's second TopK, VisionZip's two) are not
    score rankings and are skipped: those fed by another TopK, and any whose input is an integer tensor.
    """
    import onnx

    producers = {o: n for n in model.graph.node for o in n.output}
    try:
        typed = onnx.shape_inference.infer_shapes(model)
        types = {vi.name: vi.type.tensor_type.elem_type
                 for vi in list(typed.graph.value_info) + list(typed.graph.input) + list(typed.graph.output)}
    except Exception:  # noqa: BLE001 - inference is a refinement; the producer rule still applies
        types = {}
    integer = {onnx.TensorProto.INT64, onnx.TensorProto.INT32}
    names = []
    for node in model.graph.node:
        if node.op_type != "TopK" or not node.name:
            continue
        src = producers.get(node.input[0])
        if src is not None and src.op_type == "TopK":
            continue
        if types.get(node.input[0]) in integer:
            continue
        names.append(node.name)
    return names


@dataclass
class ScoredSession:
    """An ORT session that also returns the score input of the prune TopK nodes.

    Attributes:
        outputs: the graph's own output names.
        scores: TopK node name → name of the score tensor added as an extra output.
    """

    sess: Any
    outputs: list[str]
    scores: dict[str, str]

    def run(self, input_name: str, x: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Returns (graph outputs by name, scores by TopK node name, as float64)."""
        names = self.outputs + [t for t in self.scores.values() if t not in self.outputs]
        values = dict(zip(names, self.sess.run(names, {input_name: x})))
        return ({n: values[n] for n in self.outputs},
                {node: values[t].astype(np.float64) for node, t in self.scores.items()})


def scored_session(model_or_path, topk_nodes: list[str]) -> ScoredSession:
    """Open a model on ORT CPU with the score input of each named TopK node as an extra output.

    Args:
        model_or_path: an .onnx path or an onnx.ModelProto (not modified).
        topk_nodes: names from score_topk_nodes; nodes absent from this graph are left out (their
            swaps then count as unexplained).
    """
    import onnx

    path = Path(model_or_path) if isinstance(model_or_path, (str, Path)) else None
    model = onnx.load(str(path)) if path else onnx.ModelProto()
    if path is None:
        model.CopyFrom(model_or_path)
    outputs = [o.name for o in model.graph.output]
    by_name = {n.name: n for n in model.graph.node}
    wanted = {name: by_name[name].input[0] for name in topk_nodes if name in by_name}
    scores: dict[str, str] = {}
    if wanted:
        typed = onnx.shape_inference.infer_shapes(onnx.load(str(path), load_external_data=False) if path else model)
        types = {vi.name: vi.type.tensor_type.elem_type
                 for vi in list(typed.graph.value_info) + list(typed.graph.input) + list(typed.graph.output)}
        scores = {node: t for node, t in wanted.items() if t in types}
        for tensor in dict.fromkeys(scores.values()):
            if tensor not in outputs:
                model.graph.output.append(onnx.helper.make_tensor_value_info(tensor, types[tensor], None))
    if model.ByteSize() < 1_800_000_000:
        return ScoredSession(ort_session(model.SerializeToString()), outputs, scores)
    with tempfile.TemporaryDirectory(dir=path.parent if path else None) as tmp:  # > 2 GB: external data
        big = Path(tmp) / "scored.onnx"
        onnx.save_model(model, str(big), save_as_external_data=True, location="scored.onnx.data")
        return ScoredSession(ort_session(big), outputs, scores)


# --- comparisons ---------------------------------------------------------------------------------


# A swap is "explained" by rounding only within this share of the image's score range, however large the
# score error: an fp16 run whose scores moved by half their range is broken, not rounded.
EXPLAIN_CAP = 0.05


def compare_indices(ref: np.ndarray, got: np.ndarray, ref_scores: np.ndarray | None,
                    score_error: float | None) -> dict[str, Any]:
    """Index-set agreement per image, and how many disagreements the score error explains.

    A swap (token j chosen instead of token i) is explained when s_ref[i] − s_ref[j] ≤ window, where
    window = min(2·score_error, EXPLAIN_CAP · (max s_ref − min s_ref)): each score moved by at most
    score_error, so their order can only flip when they were that close — and never by more than a small
    share of the score range. Without scores, or with a non-finite score error (fp16 overflow: NaN/inf),
    every swap is unexplained.
    """
    k = ref.shape[-1]
    agreements, swaps, unexplained = [], 0, 0
    usable = ref_scores is not None and score_error is not None and bool(np.isfinite(score_error))
    for b in range(ref.shape[0]):
        a, g = set(ref[b].tolist()), set(got[b].tolist())
        agreements.append(len(a & g) / k if k else 1.0)
        gained, lost = sorted(g - a), sorted(a - g)
        swaps += len(gained)
        if not gained:
            continue
        if not usable:
            unexplained += len(gained)
            continue
        s = ref_scores[b]
        finite = s[np.isfinite(s)]
        spread = float(finite.max() - finite.min()) if finite.size else 0.0
        window = min(2.0 * score_error, EXPLAIN_CAP * spread)
        weakest_lost = min(float(s[i]) for i in lost) if lost else float("inf")
        unexplained += sum(1 for j in gained if not weakest_lost - float(s[j]) <= window)
    return {"index_agreement": float(np.mean(agreements)) if agreements else 1.0,
            "min_index_agreement": float(np.min(agreements)) if agreements else 1.0,
            "index_swaps": swaps, "unexplained_swaps": unexplained}


def aligned_rows(ref_tokens: np.ndarray, got_tokens: np.ndarray, ref_idx: np.ndarray | None,
                 got_idx: np.ndarray | None, merged: int = 0, ref_map: np.ndarray | None = None,
                 got_map: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of token rows to compare, as two [N, C] arrays.

    Indexed outputs are [prefix rows…, K rows in index order, `merged` rows]: prefix rows pair by
    position, indexed rows by the grid index they carry, so a legitimate swap does not count as a token
    error. Without `indices` but with merge maps (ToMe), rows pair where they hold the same patches.
    The merged rows (VisionZip's contextual tokens) are built from every token left over, so they
    pair by position only in images whose kept sets agree exactly (that fixes the targets) and, given
    the merge maps, only rows whose member patches are the same in both; others are not comparable.
    """
    c = ref_tokens.shape[-1]
    if ref_idx is None and ref_map is not None and got_map is not None:
        # ToMe: every row is a merge; rows pair where both runs put the same patches in them (prefix rows:
        # no patch, equal by construction).
        pairs = [(b, r) for b in range(ref_tokens.shape[0]) for r in range(ref_tokens.shape[1])
                 if np.array_equal(ref_map[b] == r, got_map[b] == r)]
        if not pairs:
            return np.zeros((0, c), ref_tokens.dtype), np.zeros((0, c), got_tokens.dtype)
        return (np.stack([ref_tokens[b, r] for b, r in pairs]), np.stack([got_tokens[b, r] for b, r in pairs]))
    if ref_idx is None or got_idx is None:
        return ref_tokens.reshape(-1, c), got_tokens.reshape(-1, c)
    k = ref_idx.shape[-1]
    t = ref_tokens.shape[1]
    p = t - k - merged
    rows_r, rows_g = [], []
    for b in range(ref_tokens.shape[0]):
        rows_r.append(ref_tokens[b, :p])
        rows_g.append(got_tokens[b, :p])
        where_g = {int(v): i for i, v in enumerate(got_idx[b])}
        for i, v in enumerate(ref_idx[b]):
            j = where_g.get(int(v))
            if j is not None:
                rows_r.append(ref_tokens[b, p + i:p + i + 1])
                rows_g.append(got_tokens[b, p + j:p + j + 1])
        if merged and set(ref_idx[b].tolist()) == set(got_idx[b].tolist()):
            for r in range(t - merged, t):
                if ref_map is not None and got_map is not None and not np.array_equal(ref_map[b] == r, got_map[b] == r):
                    continue
                rows_r.append(ref_tokens[b, r:r + 1])
                rows_g.append(got_tokens[b, r:r + 1])
    c = ref_tokens.shape[-1]
    return np.concatenate(rows_r).reshape(-1, c), np.concatenate(rows_g).reshape(-1, c)


def map_agreement(ref_map: np.ndarray, got_map: np.ndarray) -> dict[str, Any]:
    """Share of patches each merge map sends to the same output row (per image), and how many moved."""
    same = (ref_map == got_map).mean(axis=-1)
    return {"map_agreement": float(same.mean()), "min_map_agreement": float(same.min()),
            "patches_moved": int((ref_map != got_map).sum())}


def token_errors(ref_rows: np.ndarray, got_rows: np.ndarray) -> dict[str, float]:
    """Scale, max abs error and the worst per-token cosine of two [N, C] row sets."""
    r = ref_rows.astype(np.float64)
    g = got_rows.astype(np.float64)
    if not np.isfinite(g).all():
        return {"scale": float(np.abs(r).max(initial=0.0)), "max_abs": float("inf"), "min_token_cosine": -1.0}
    nr, ng = np.linalg.norm(r, axis=-1), np.linalg.norm(g, axis=-1)
    big = nr > TINY_ROW * max(float(nr.max(initial=0.0)), 1e-30)
    cos = (r[big] * g[big]).sum(-1) / np.maximum(nr[big] * ng[big], 1e-30)
    return {"scale": float(np.abs(r).max(initial=0.0)), "max_abs": float(np.abs(r - g).max(initial=0.0)),
            "min_token_cosine": float(cos.min(initial=1.0))}

"""The scores a prune ranks, read from the graph, and which kept-set swaps they explain.

Pruned bundles output `indices`: rounding (fp16, or fp32 reassociation) can legitimately swap two tokens
whose scores are within the rounding error of each other. Rather than accept "most indices agree", the
variant checks read the score tensor each model feeds its TopK and count a swap as explained only when
the scores of the two tokens differ by less than twice the score error measured on the same images, and
never by more than EXPLAIN_CAP of the image's score range. The comparator (core.comparison) takes the
result as evidence; without it (a TensorRT engine does not expose its scores) no swap is explained.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .ort_session import (
    CPU,
    SessionSettings,
    ort_session,
    session_with_outputs,
    tensor_types,
)

# A swap is "explained" by rounding only within this share of the image's score range, however large the
# score error: an fp16 run whose scores moved by half their range is broken, not rounded.
EXPLAIN_CAP = 0.05


def score_topk_nodes(model) -> list[str]:
    """Names of the TopK nodes that rank floating-point scores (the prune selection), in graph order.

    TopKs that sort integer indices back into grid order (prune's second TopK, VisionZip's two) are not
    score rankings and are skipped: those fed by another TopK, and any whose input is an integer tensor.
    """
    import onnx

    producers = {o: n for n in model.graph.node for o in n.output}
    types = tensor_types(model)
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


def ranking_topk(model, with_indices: bool) -> list[str]:
    """The prune's ranking TopK, when the graph has exactly one (anything else: indices must match exactly)."""
    nodes = score_topk_nodes(model) if with_indices else []
    return nodes if len(nodes) == 1 else []


@dataclass
class ScoredSession:
    """An ONNX Runtime session that also returns the score input of the prune TopK nodes.

    Attributes:
        sess: the InferenceSession.
        outputs: the graph's own output names.
        scores: TopK node name → name of the score tensor added as an extra output.
    """

    sess: Any
    outputs: list[str]
    scores: dict[str, str]

    @property
    def input_dtype(self) -> Any:
        return np.float16 if self.sess.get_inputs()[0].type == "tensor(float16)" else np.float32

    def run(self, input_name: str, x: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Returns (graph outputs by name, scores by TopK node name, as float64)."""
        names = self.outputs + [t for t in self.scores.values() if t not in self.outputs]
        values = dict(zip(names, self.sess.run(names, {input_name: x})))
        return ({n: values[n] for n in self.outputs},
                {node: values[t].astype(np.float64) for node, t in self.scores.items()})


def scored_session(model_or_path, topk_nodes: list[str], settings: SessionSettings = CPU) -> ScoredSession:
    """Open a model with the score input of each named TopK node as an extra output.

    Args:
        model_or_path: an .onnx path or an onnx.ModelProto (not modified).
        topk_nodes: names from score_topk_nodes; nodes absent from this graph are left out (their
            swaps then count as unexplained).
        settings: session settings (CPU by default).
    """
    import onnx

    if isinstance(model_or_path, (str, Path)):
        path = Path(model_or_path)
        if not topk_nodes:
            sess = ort_session(path, settings)
            return ScoredSession(sess, [o.name for o in sess.get_outputs()], {})
        model = onnx.load(str(path))
    else:
        model = model_or_path
    outputs = [o.name for o in model.graph.output]
    by_name = {n.name: n for n in model.graph.node}
    wanted = {name: by_name[name].input[0] for name in topk_nodes if name in by_name}
    types = tensor_types(model) if wanted else {}
    scores = {node: t for node, t in wanted.items() if t in types}
    sess = session_with_outputs(model, {t: types[t] for t in scores.values()}, settings)
    return ScoredSession(sess, outputs, scores)


@dataclass(frozen=True)
class ScoreEvidence:
    """What the reference ranked, and how far the target's scores moved from it, for one batch.

    Attributes:
        reference: [B, N] the reference model's scores (of the grid cells the indices name).
        error: max |target score − reference score| on these images (NaN/inf: the target overflowed).
    """

    reference: np.ndarray
    error: float

    @classmethod
    def from_runs(cls, ref_scores: dict[str, np.ndarray], got_scores: dict[str, np.ndarray]) -> "ScoreEvidence | None":
        """From two ScoredSession runs; None when either has no scores of the same TopK."""
        node = next(iter(ref_scores), None)
        if node is None or node not in got_scores:
            return None
        err = np.abs(ref_scores[node] - got_scores[node]).max(initial=0.0)
        return cls(ref_scores[node], float(err))

    @property
    def usable(self) -> bool:
        return bool(np.isfinite(self.error))


def explained_swaps(ref: np.ndarray, got: np.ndarray, evidence: ScoreEvidence | None) -> np.ndarray:
    """Per image, how many of the tokens `got` kept instead of `ref`'s are explained by the score error.

    A swap (token j chosen instead of token i) is explained when s_ref[i] − s_ref[j] ≤ window, where
    window = min(2·error, EXPLAIN_CAP · (max s_ref − min s_ref)): each score moved by at most `error`,
    so their order can only flip when they were that close — and never by more than a small share of the
    score range. Without evidence, or with a non-finite error (fp16 overflow: NaN/inf), none is.

    Args:
        ref, got: [B, K] kept grid indices.
    Returns:
        [B] int64 counts.
    """
    out = np.zeros(ref.shape[0], np.int64)
    if evidence is None or not evidence.usable:
        return out
    for b in range(ref.shape[0]):
        a, g = set(ref[b].tolist()), set(got[b].tolist())
        gained, lost = sorted(g - a), sorted(a - g)
        if not gained:
            continue
        s = evidence.reference[b]
        finite = s[np.isfinite(s)]
        spread = float(finite.max() - finite.min()) if finite.size else 0.0
        window = min(2.0 * evidence.error, EXPLAIN_CAP * spread)
        weakest_lost = min(float(s[i]) for i in lost if 0 <= i < s.shape[0]) if lost else float("inf")
        out[b] = sum(1 for j in gained if 0 <= j < s.shape[0] and weakest_lost - float(s[j]) <= window)
    return out

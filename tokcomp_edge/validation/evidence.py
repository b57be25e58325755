"""The prune scores behind a kept set, for the golden comparison of an ONNX target on ONNX Runtime CPU.

The variant checks at export judge kept-set swaps with score evidence (core/scores.py): a swap of two
tokens whose scores differ by less than the measured score error is rounding, not a fault. For the same
judgement here, `validate` runs the fp32 model.onnx and the target file once more on the golden inputs
with their ranking TopK's score tensor exposed (a separate, untimed CPU session; the timed runner is
untouched). A TensorRT engine, or ONNX Runtime on another device, exposes no scores: its kept sets are
judged as returned.
"""

from __future__ import annotations

import numpy as np

from ..calibration.images import Preprocess
from ..core.bundle import Bundle
from ..core.scores import ScoreEvidence, ranking_topk, scored_session
from .inputs import feed_for, golden_images


def golden_evidence(bundle: Bundle, target, ref: dict[str, np.ndarray], pre: Preprocess, *, device: str,
                    emulate_fp16: bool) -> dict[int, ScoreEvidence]:
    """Score evidence per golden batch (empty when the target has no kept set to explain, or cannot show
    its scores).

    Args:
        target: the validation Target; only `onnx` targets on `device == "cpu"` get evidence.
        emulate_fp16: run an fp16-holding graph through the fp16 emulation, as the runner does.
    """
    if target.kind != "onnx" or device != "cpu" or "indices" not in target.outputs:
        return {}
    import onnx

    fp32_path = bundle.onnx_path("fp32")
    nodes = ranking_topk(onnx.load(str(fp32_path), load_external_data=False), True)
    if not nodes:
        return {}
    model = onnx.load(str(target.path))
    if emulate_fp16:
        from ..export.fp16_emulation import emulate_fp16 as emulate

        model = emulate(model) or model
    ref_sess, tgt_sess = scored_session(fp32_path, nodes), scored_session(model, nodes)
    if not tgt_sess.scores:
        return {}
    base, name = bundle.input_names[0], target.inputs[0].name
    out: dict[int, ScoreEvidence] = {}
    for b in bundle.reference_batches():
        key = f"{base}.b{b}"
        if key not in ref:
            continue
        _, ref_scores = ref_sess.run(base, ref[key].astype(np.float32))
        feed = feed_for(target.inputs, golden_images(bundle, ref, b, pre, target.inputs))
        _, got_scores = tgt_sess.run(name, feed[name])
        evidence = ScoreEvidence.from_runs(ref_scores, got_scores)
        if evidence is not None:
            out[b] = evidence
    return out

"""The one comparator's prune judgement with score evidence, and the one tolerance model's meaning."""

from __future__ import annotations

import numpy as np
import pytest

from tokcomp_edge.core.comparison import OutputLayout, compare_outputs
from tokcomp_edge.core.scores import EXPLAIN_CAP, ScoreEvidence, explained_swaps
from tokcomp_edge.core.tolerance import DEFAULTS, NHWC, PARITY, Tolerance

LAYOUT = OutputLayout(method="prune", prefix_out=0, grid_in=(2, 3), grid_out=None, tokens="tokens",
                      indices="indices")
SCORES = np.array([[0.0, 5.0, 0.0, 3.0, 2.999, 0.0]])  # cells 3 and 4 differ by 0.001


def _pruned(idx):
    idx = np.asarray(idx)
    return np.repeat(idx[..., None].astype(np.float64) + 1.0, 2, axis=-1)


def _judge(got_idx, evidence, tol=None):
    ref = np.array([[1, 3]])
    tol = tol or Tolerance(min_jaccard=1.0)
    checks = compare_outputs({"tokens": _pruned(got_idx), "indices": np.asarray(got_idx)},
                             {"tokens": _pruned(ref), "indices": ref}, source="golden",
                             tols={"tokens": Tolerance(atol=1e-6), "indices": tol}, layout=LAYOUT, evidence=evidence)
    return {c.output: c for c in checks}


def test_swap_of_near_tied_tokens_is_explained_and_a_far_one_is_not():
    ref, near, far = np.array([[1, 3]]), np.array([[1, 4]]), np.array([[1, 5]])
    assert explained_swaps(ref, near, ScoreEvidence(SCORES, 0.001)).tolist() == [1]
    assert explained_swaps(ref, far, ScoreEvidence(SCORES, 0.001)).tolist() == [0]
    assert explained_swaps(ref, near, ScoreEvidence(SCORES, 0.0004)).tolist() == [0]  # half the gap
    assert explained_swaps(ref, near, None).tolist() == [0]  # no evidence, nothing explained
    # Through the comparator: the explained swap passes min_jaccard 1.0, the far one does not.
    assert _judge(near, ScoreEvidence(SCORES, 0.001))["indices"].passed
    far_check = _judge(far, ScoreEvidence(SCORES, 0.001))["indices"]
    assert not far_check.passed and far_check.metrics["unexplained_swaps"] == 1
    assert not _judge(near, None)["indices"].passed  # a TensorRT engine has no scores to show


def test_prune_checks_cannot_pass_by_accident():
    """Issue 9: each way a prune check could pass without comparing anything, planted."""
    ref, near, far = np.array([[1, 3]]), np.array([[1, 4]]), np.array([[1, 5]])
    # A NaN / inf score error (fp16 overflow) explains nothing, and fails the check by itself.
    for bad in (float("nan"), float("inf")):
        assert explained_swaps(ref, far, ScoreEvidence(SCORES, bad)).tolist() == [0]
        check = _judge(ref, ScoreEvidence(SCORES, bad))["indices"]
        assert not check.passed and "not finite" in check.failures[0]
    # A huge but finite score error explains only swaps within EXPLAIN_CAP of the score range (5 here).
    assert EXPLAIN_CAP * 5.0 < 3.0
    assert explained_swaps(ref, far, ScoreEvidence(SCORES, 100.0)).tolist() == [0]
    assert explained_swaps(ref, near, ScoreEvidence(SCORES, 100.0)).tolist() == [1]
    # Explained or not, an image that swapped too much of its set fails the per-image floor.
    floor = Tolerance(min_jaccard=0.9, min_image_jaccard=0.6)
    swapped = _judge(near, ScoreEvidence(SCORES, 0.001), floor)["indices"]  # Jaccard 1/3
    assert not swapped.passed and "explained or not" in swapped.failures[0]
    # Nothing in common: the tokens check fails rather than comparing zero rows.
    none_common = _judge(np.array([[0, 2]]), None, Tolerance(min_jaccard=0.0))["tokens"]
    assert not none_common.passed and "nothing to compare" in none_common.failures[-1]


def test_rtol_is_relative_to_the_output_scale_in_every_stage():
    """One meaning: |a − e| ≤ atol + rtol·max|e|. An element near zero in a large output may carry the
    rounding of the large ones (element-relative rtol would fail this exact-enough run)."""
    layout = OutputLayout(method="none", prefix_out=0, grid_in=(1, 2), grid_out=None)
    e = np.array([[[100.0, 0.001]]])
    a = e + np.array([[[0.0, 0.005]]])  # 5e-5 of the scale
    tol = Tolerance(atol=0.0, rtol=1e-4)
    (c,) = compare_outputs({"tokens": a}, {"tokens": e}, source="golden", tols={"tokens": tol}, layout=layout)
    assert c.passed and c.metrics["bound"] == pytest.approx(1e-2)
    (c,) = compare_outputs({"tokens": e + 0.02}, {"tokens": e}, source="golden", tols={"tokens": tol}, layout=layout)
    assert not c.passed and "rtol 0.0001·scale 100" in c.failures[0]


@pytest.fixture(scope="module")
def clip_bundle(tmp_path_factory):
    from tokcomp_edge.export import ExportConfig, export_bundle

    out = tmp_path_factory.mktemp("one_tolerance") / "b"
    return export_bundle(ExportConfig(model="tiny-clip", out=out, batch_max=4, lint=False, quiet=True))


# Far below any runtime difference (ORT vs PyTorch fp32 differ by ~1e-6): a stage judged by it must fail,
# and its failure must quote it. Each stage below is called with it; none reads a config default.
TIGHT = Tolerance(atol=1e-12, rtol=0.0)


def test_every_stage_uses_the_one_tolerance_model(clip_bundle, tmp_path):
    """Export parity, the fp16 variant check, the int8 check and validate each judge by the Tolerance they
    are given: with their defaults the same run passes, with TIGHT each fails quoting its bound."""
    import shutil

    from tokcomp_edge.calibration.int8_check import check_int8
    from tokcomp_edge.core.bundle import Bundle
    from tokcomp_edge.core.tolerance import parse_override, resolve_tolerances
    from tokcomp_edge.errors import ParityError
    from tokcomp_edge.export import ExportConfig, export_bundle
    from tokcomp_edge.export.variants import VariantOptions, ensure_variant
    from tokcomp_edge.validation import ValidateConfig, validate

    assert clip_bundle.parity.passed and clip_bundle.parity.tolerance["atol"] == PARITY.atol
    quoted = "1e-12"
    # export parity
    with pytest.raises(ParityError, match=f"bound {quoted}"):
        export_bundle(ExportConfig(model="tiny-clip", out=tmp_path / "tight", batch_max=4, lint=False, quiet=True,
                                   tolerance=TIGHT))
    dst = tmp_path / "b"
    shutil.copytree(clip_bundle.path, dst)
    bundle = Bundle.load(dst)
    # the fp16 variant check
    with pytest.raises(ParityError, match=f"atol {quoted}"):
        ensure_variant(bundle, "fp16", options=VariantOptions(quiet=True, fp16_tolerance=TIGHT))
    assert "fp16" not in Bundle.load(dst).variants()
    # the int8 check (its judging; run on the fp32 file, as an int8 variant needs a calibration)
    outputs, batches, ref = bundle.output_names, bundle.reference_batches(), bundle.reference()
    ok = check_int8(dst / "model.onnx", bundle.manifest, ref, batches, resolve_tolerances("int8", outputs))
    assert ok.passed, ok.failures
    tight = (parse_override("atol", quoted), parse_override("rtol", "0"))
    bad = check_int8(dst / "model.onnx", bundle.manifest, ref, batches, resolve_tolerances("int8", outputs, tight))
    assert not bad.passed and quoted in bad.failures[0] and bad.metrics["tolerance"]["tokens"]["atol"] == 1e-12
    # validate
    fast = dict(target=dst, iterations=0, warmup=0, extra_inputs=0, quiet=True, batches=(1,), torch="off")
    assert validate(ValidateConfig(**fast, out_dir=tmp_path / "r0")).passed
    res = validate(ValidateConfig(**fast, out_dir=tmp_path / "r1", tolerance_overrides=tight))
    assert not res.passed and any(quoted in f for f in res.failures), res.failures

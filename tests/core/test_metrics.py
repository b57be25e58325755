"""Metrics and judging against hand-computed numbers."""

import math

import numpy as np
import pytest

from tokcomp_edge.core.comparison import (
    OutputLayout,
    compare_outputs,
    summarize_checks,
    worst_grid,
)
from tokcomp_edge.core.metrics import (
    align_pruned,
    compare_tensors,
    cosine_grid,
    elementwise_violations,
    jaccard,
    keep_frequency,
    token_cosine,
)
from tokcomp_edge.core.tolerance import Tolerance


def test_token_cosine_hand_computed():
    a = np.array([[[1.0, 0.0], [1.0, 1.0], [0.0, 0.0], [0.0, 0.0]]])
    e = np.array([[[1.0, 0.0], [0.0, 1.0], [0.0, 0.0], [1.0, 0.0]]])
    cos = token_cosine(a, e)
    assert cos.shape == (1, 4)
    assert cos[0, 0] == pytest.approx(1.0)
    assert cos[0, 1] == pytest.approx(1 / math.sqrt(2))
    assert cos[0, 2] == 1.0  # both zero: identical
    assert cos[0, 3] == 0.0  # one zero: no direction in common


def test_compare_tensors_hand_computed():
    e = np.array([[[3.0, 4.0]]], np.float32)
    a = np.array([[[3.0, 4.5]]], np.float32)
    m, cos = compare_tensors(a, e)
    assert m.max_abs_err == pytest.approx(0.5)
    assert m.mean_abs_err == pytest.approx(0.25)
    assert m.rel_l2_err == pytest.approx(0.5 / 5.0)
    assert m.cosine_min == pytest.approx(27.0 / (5.0 * math.sqrt(29.25)))
    assert m.ref_max_abs == 4.0
    assert m.nonfinite == 0
    assert m.worst_token == [0, 0]


def test_cosine_percentile_and_worst_token():
    e = np.array([[[1.0, 0.0], [1.0, 0.0]]])
    a = np.array([[[0.0, 1.0], [1.0, 0.0]]])  # cosines 0 and 1
    m, _ = compare_tensors(a, e)
    assert m.cosine_min == 0.0 and m.cosine_mean == 0.5
    assert m.cosine_p1 == pytest.approx(0.01)  # linear interpolation between 0 and 1
    assert m.worst_token == [0, 0]


def test_nan_counts_and_is_worst():
    e = np.ones((1, 2, 3), np.float32)
    a = e.copy()
    a[0, 1, 2] = np.nan
    m, _ = compare_tensors(a, e)
    assert m.nonfinite == 1
    assert m.cosine_min == -1.0 and m.worst_token == [0, 1]
    assert m.max_abs_err is None  # NaN is stored as null, never as a number that could pass


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="shape"):
        compare_tensors(np.zeros((1, 2, 3)), np.zeros((1, 3, 3)))


def test_elementwise_violations():
    e = np.array([1.0, 10.0])
    # one bound for the whole output (atol + rtol·scale = 0.1 + 0.1·10 = 1.1); ratios 0.15/1.1, 0.5/1.1
    assert elementwise_violations(np.array([1.15, 10.5]), e, 1.1) == (0, pytest.approx(0.5 / 1.1))
    n, worst = elementwise_violations(np.array([1.0, 11.65]), e, 1.1)
    assert n == 1 and worst == pytest.approx(1.5)
    assert elementwise_violations(np.array([1.0, 10.0]), e, 0.0) == (0, 0.0)  # exact, bound 0
    assert elementwise_violations(np.array([1.0, np.nan]), e, 1.0)[0] == 1


def test_jaccard():
    assert jaccard(np.array([1, 2, 3]), np.array([2, 3, 4])) == 0.5
    assert jaccard(np.array([3, 1]), np.array([1, 3])) == 1.0
    assert jaccard(np.array([], int), np.array([], int)) == 1.0


def _pruned(idx, prefix=1, c=2, base=0.0):
    """Tokens whose value encodes their grid index, so pairings can be checked."""
    idx = np.asarray(idx)
    b, k = idx.shape
    t = np.zeros((b, prefix + k, c))
    t[:, :prefix] = -1.0
    t[:, prefix:] = idx[..., None] + base
    return t


def test_align_pruned_pairs_by_grid_index():
    ia, ie = np.array([[5, 2, 7]]), np.array([[2, 5, 9]])
    al = align_pruned(_pruned(ia), ia, _pruned(ie), ie, prefix=1, grid_cells=16)
    assert al.jaccard[0] == pytest.approx(2 / 4)
    assert al.swapped[0] == 1 and al.invalid[0] == 0
    assert al.grid_of.tolist() == [-1, 2, 5]  # prefix, then common cells in grid order
    np.testing.assert_array_equal(al.actual_tokens, al.expected_tokens)  # pairs agree despite different order


def test_align_pruned_flags_invalid_indices():
    ia, ie = np.array([[3, 3, 99]]), np.array([[1, 2, 3]])
    al = align_pruned(_pruned(ia), ia, _pruned(ie), ie, prefix=0, grid_cells=16)
    assert al.invalid[0] == 2  # one out of range, one repeated


LAYOUT = OutputLayout(method="prune", prefix_out=1, grid_in=(4, 4), grid_out=None, tokens="tokens", indices="indices")


def test_prune_swap_judged_by_min_jaccard():
    ie = np.array([[0, 1, 2, 3], [4, 5, 6, 7]])
    ia = np.array([[0, 1, 2, 9], [4, 5, 6, 7]])  # one swap in image 0
    exp = {"tokens": _pruned(ie), "indices": ie}
    act = {"tokens": _pruned(ia), "indices": ia}
    strict = {"tokens": Tolerance(atol=1e-6, max_rel_l2=1e-6, min_cosine=0.9999), "indices": Tolerance(min_jaccard=1.0)}
    checks = compare_outputs(act, exp, source="golden", tols=strict, layout=LAYOUT)
    by = {c.output: c for c in checks}
    assert not by["indices"].passed
    assert "mean Jaccard of kept sets 0.8000 < 1" in by["indices"].failures[0]
    assert by["indices"].metrics["swapped_total"] == 1
    assert by["tokens"].passed  # the tokens both kept are identical
    assert by["tokens"].metrics["matched_tokens"] == 2 + 3 + 4  # prefix ×2 + common cells
    loose = dict(strict, indices=Tolerance(min_jaccard=0.8))  # image 0: 3/5, image 1: 1 → mean 0.8
    assert all(c.passed for c in compare_outputs(act, exp, source="golden", tols=loose, layout=LAYOUT))


def test_prune_token_error_on_common_cells_fails():
    ie = np.array([[0, 1, 2, 3]])
    exp = {"tokens": _pruned(ie), "indices": ie}
    bad = _pruned(ie)
    bad[0, 2, 0] += 0.5  # the token of grid cell 1 turns: [1, 1] → [1.5, 1]
    tol = {"tokens": Tolerance(max_rel_l2=1e-3), "indices": Tolerance(min_jaccard=1.0)}
    checks = compare_outputs({"tokens": bad, "indices": ie}, exp, source="golden", tols=tol, layout=LAYOUT)
    tok = next(c for c in checks if c.output == "tokens")
    assert not tok.passed and tok.failures[0].startswith("rel L2 error")
    assert tok.metrics["worst_token"] == [0, 1]  # image 0, grid cell 1
    grid = tok.grid
    assert grid[0][1] < 1.0 and grid[0][0] == pytest.approx(1.0) and grid[3][3] is None


def test_dense_checks_grid_and_summary():
    layout = OutputLayout(method="pool", prefix_out=0, grid_in=(4, 4), grid_out=(2, 2))
    rng = np.random.default_rng(0)
    e = rng.normal(size=(2, 4, 8)).astype(np.float32)
    a = e.copy()
    a[1, 3] = -a[1, 3]  # image 1, cell (1, 1): cosine −1
    tol = {"tokens": Tolerance(atol=1e-3, rtol=1e-3, max_rel_l2=1e-3, min_cosine=0.999)}
    (c,) = compare_outputs({"tokens": a}, {"tokens": e}, source="golden", tols=tol, layout=layout)
    assert not c.passed and len(c.failures) == 3
    assert c.failures[2].startswith("min per-token cosine -1.000000 < 0.999 (image 1, token 3)")
    assert c.grid[1][1] == pytest.approx(-1.0) and c.grid[0][0] == pytest.approx(1.0)
    s = summarize_checks([c])
    assert s["tokens"]["passed"] is False and s["tokens"]["cosine_min"] == pytest.approx(-1.0)
    assert worst_grid([c], "tokens")[1][1] == pytest.approx(-1.0)


def test_missing_output_fails():
    layout = OutputLayout(method="pool", prefix_out=0, grid_in=(2, 2), grid_out=(1, 1))
    (c,) = compare_outputs({}, {"tokens": np.zeros((1, 1, 2))}, source="golden",
                           tols={"tokens": Tolerance()}, layout=layout)
    assert not c.passed and "missing" in c.failures[0]


def test_cosine_grid_skips_prefix_and_takes_min():
    cos = np.array([[0.1, 1.0, 0.9, 1.0, 1.0], [0.2, 0.5, 1.0, 1.0, 1.0]])
    assert cosine_grid(cos, (2, 2), prefix=1) == [[0.5, 0.9], [1.0, 1.0]]


def test_keep_frequency():
    f = keep_frequency(np.array([[0, 3], [0, 1]]), (2, 2))
    assert f == [[1.0, 0.5], [0.0, 0.5]]

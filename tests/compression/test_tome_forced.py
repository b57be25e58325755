"""A ToMe target judged on its own merge decisions (compression/tome_forced.py, export/tome_parity.py
explain_by_forcing): PyTorch is forced to take the decisions the target's per-block maps show, every one
that differs from PyTorch's on the same tokens must be a near-tie in PyTorch's scores (≤ score_atol), and
the target must then equal the forced run. Two near-tie flips on one image (which one flipped decision
cannot reproduce) pass; a planted wrong decision that is not a near-tie, NaN scores, NaN tokens and maps
that are no ToMe step fail. The "targets" are PyTorch runs with decisions flipped (tome_replay.replay), so
the forced run must equal them exactly.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from tokcomp_edge.compression import parse_spec, plan_compression, tome
from tokcomp_edge.compression.module import CompressedEncoder
from tokcomp_edge.compression.tome_forced import decode_step, forced_run
from tokcomp_edge.compression.tome_replay import Decision, near_ties, replay
from tokcomp_edge.core.target_checks import TargetLayout
from tokcomp_edge.core.tolerance import DEFAULTS
from tokcomp_edge.encoders import EncoderConfig, build_encoder
from tokcomp_edge.export.reference import compare_outputs
from tokcomp_edge.export.tome_parity import explain_by_forcing, explain_by_replay

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NAMES = ["tokens", "sizes", "merge_map"]
FP16 = DEFAULTS["fp16"]  # score_atol 5e-3


@pytest.fixture(scope="module")
def siglip():
    """tiny-siglip (no CLS), tome:30,10 (two steps), two random images, and PyTorch's own outputs."""
    enc = build_encoder(EncoderConfig("tiny-siglip"))
    s = enc.spec
    plan = plan_compression(parse_spec("tome:30,10"), grid=s.grid, prefix_tokens=s.prefix_tokens, has_cls=s.has_cls,
                            hidden_size=s.hidden_size, prefix="keep", layers=enc.tower.num_used)
    x = torch.randn(2, 3, *s.image_size, generator=torch.Generator().manual_seed(0)).numpy()
    model = CompressedEncoder(enc.tower, plan).eval()
    return model, x, _run(model, lambda: model(torch.from_numpy(x)))


def _run(model, call) -> dict[str, np.ndarray]:
    """Outputs by name and `maps`: the patch → row map after each merging block (the block taps)."""
    tower, maps = model.tower, []
    tower.block_tap = lambda i, x, source: maps.append(source.clone()) if model.compressor.plan.schedule[i] else None
    try:
        with torch.no_grad():
            out = {n: t.numpy() for n, t in zip(NAMES, call())}
    finally:
        tower.block_tap = None
    return {**out, "maps": [m.numpy() for m in maps]}


def _target(model, x, flips):
    return _run(model, lambda: replay(model, torch.from_numpy(x), flips))


def _layout(out) -> TargetLayout:
    (rows, dim), cells = out["tokens"].shape[1:], out["merge_map"].shape[1]
    return TargetLayout(method="tome", grid_cells=cells, rows_out=rows,
                        shapes={"tokens": ("batch", rows, dim), "sizes": ("batch", rows), "merge_map": ("batch", cells)},
                        merge_map="merge_map", sizes="sizes")


def _forced(model, x, expected, got, tol=FP16):
    return explain_by_forcing(model, x, expected, got, got["maps"], NAMES, "merge_map", tol)


def test_pytorch_forced_to_its_own_decisions_is_itself(siglip):
    model, x, expected = siglip
    y, forced = forced_run(model, torch.from_numpy(x), expected["maps"], 0)
    assert forced.differing == {0: [], 1: []} and not forced.invalid and not forced.nonfinite
    for n, t in zip(NAMES, y):
        assert np.array_equal(t.numpy(), expected[n])
    assert tome._steer is None


def test_two_near_tie_flips_on_one_image_pass_where_one_flip_replays_cannot(siglip):
    model, x, expected = siglip
    ties = near_ties(model, torch.from_numpy(x), 0.01, limit=1000)
    step0 = sorted((d for d in ties.decisions[1] if d.step == 0 and d.kind == "match"), key=lambda d: d.gap)
    flips = [step0[0], next(d for d in step0[1:] if d.keep != step0[0].keep)]
    got = _target(model, x, flips)  # both flipped in ToMe step 0 of image 1
    atol = 1.01 * max(d.gap for d in flips)
    tol = replace(FP16, score_atol=atol)
    assert explain_by_replay(model, x, expected, got, NAMES, "merge_map", tol).expected is None
    verdict = _forced(model, x, expected, got, tol)
    assert verdict.expected is not None, verdict.notes
    assert len(verdict.notes) == 1 and verdict.notes[0].startswith("explained: image 1")
    assert "2 differ from its own on the same tokens, all near-ties" in verdict.notes[0]
    for n in NAMES:  # forced to the target's decisions, PyTorch computes the target exactly
        assert np.array_equal(verdict.expected[n], got[n])
    # With score_atol below the larger gap, one of the two is no near-tie: not explained.
    below = _forced(model, x, expected, got, replace(FP16, score_atol=0.99 * min(d.gap for d in flips)))
    assert below.expected is None and "2 differ from its own on the same tokens, 2 of them not near-ties" in below.notes[0]


def test_a_planted_wrong_decision_that_is_no_near_tie_fails(siglip):
    model, x, expected = siglip
    with torch.no_grad():  # image 0's best-matched A token, sent to its WORST B token instead
        xt = torch.from_numpy(x)
        seen = {}

        def peek(scores, node_max, node_idx, order, r):
            seen.setdefault("s", (scores.clone(), node_max.clone(), order.clone()))
            return order, node_idx

        from tokcomp_edge.compression.tome_replay import _steering

        with _steering(peek):
            model(xt)
    scores, node_max, order = seen["s"]
    a = int(order[0, 0])
    worst = int(scores[0, a].argmin())
    gap = float(node_max[0, a] - scores[0, a, worst])
    assert gap > 10 * FP16.score_atol
    got = _target(model, x, [Decision(0, 0, "match", a, worst, int(scores[0, a].argmax()), gap)])
    verdict = _forced(model, x, expected, got)
    assert verdict.expected is None
    assert "1 of them not near-ties (> score_atol 0.005): block 0 best match gap" in verdict.notes[0]
    # The rank boundary: the best-ranked A token kept and the worst-ranked one merged instead.
    last = int(order[0, -1])
    rank_gap = float(node_max[0, a] - node_max[0, last])
    assert rank_gap > 10 * FP16.score_atol
    got = _target(model, x, [Decision(0, 0, "rank", a, last, -1, rank_gap)])
    verdict = _forced(model, x, expected, got)
    assert verdict.expected is None and "block 0 rank boundary gap" in verdict.notes[0]


def test_nan_scores_and_nan_tokens_fail(siglip):
    model, x, expected = siglip
    bad = x.copy()
    bad[1, :, :16, :16] = np.nan  # one patch of image 1 NaN: every later score of that image is NaN
    theirs = _run(model, lambda: model(torch.from_numpy(bad)))
    verdict = _forced(model, bad, expected, theirs)
    assert verdict.expected is None
    assert any("image 1" in n and "not finite" in n for n in verdict.notes), verdict.notes
    # The target's decisions are PyTorch's but its tokens hold a NaN: the forcing explains the map, the
    # comparison with the forced run fails.
    ties = near_ties(model, torch.from_numpy(x), 0.01, limit=1000)
    d = min(ties.decisions[0], key=lambda d: d.gap)
    got = _target(model, x, [d])
    got["tokens"][0, 3, 5] = np.nan
    ok = _forced(model, x, expected, got, replace(FP16, score_atol=1.01 * d.gap))
    assert ok.expected is not None
    res = compare_outputs(ok.expected, {n: got[n] for n in NAMES}, FP16, _layout(got))
    assert "NaN" in res["tokens"]["error"] or "finite" in res["tokens"]["error"], res["tokens"]
    assert not res["tokens"]["ok"] and res["merge_map"]["ok"]


def test_maps_that_are_no_tome_step_fail(siglip):
    model, x, expected = siglip
    got = {k: (v.copy() if k != "maps" else [m.copy() for m in v]) for k, v in expected.items()}
    first = got["maps"][0][0]
    merged = np.flatnonzero(np.bincount(first) == 2)[0]  # a row holding two patches: one merge
    p = np.flatnonzero(first == merged)[0]
    first[p] = (merged + 1) % first.max()  # one patch of that pair sent to another row
    got["merge_map"][0] = got["maps"][-1][0] = got["maps"][1][0]  # keep the last map = the merge map
    verdict = _forced(model, x, expected, got)
    assert verdict.expected is None and "no ToMe step PyTorch can take" in verdict.notes[0]


def test_decode_step():
    # 6 tokens (A = 0, 2, 4; B = 1, 3, 5), one patch each: token 2 merged into token 5 → rows 0, 1 (unmerged
    # A 0, 4), then B 1, 3, 5 at rows 2, 3, 4.
    before = np.arange(6)
    after = np.array([0, 2, 4, 3, 1, 4])
    assert decode_step(before, after, 6, 1) == ({1: 2}, "")
    assert "merged, the step merges 2" in decode_step(before, after, 6, 2)[1]
    assert "different rows" in decode_step(np.array([0, 0, 1, 2, 3, 4]), np.array([0, 1, 2, 3, 4, 5]), 6, 1)[1]
    assert "A tokens 0 and 2 share row 0 without a B token" in decode_step(before, np.array([0, 1, 0, 3, 4, 5]), 6, 1)[1]
    assert "B tokens 1 and 3 share row 2" in decode_step(before, np.array([0, 2, 4, 2, 1, 3]), 6, 1)[1]
    assert "outside the step's 6 tokens" in decode_step(np.array([0, 1, 2, 3, 4, 7]), after, 6, 1)[1]

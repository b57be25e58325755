"""Candidates: the user's list (typos fail naming them, refusals are kept with the reason, `none` first) and
the default grid (every method at ¼ and ⅛ of the tokens), planned with the export's own arithmetic."""

from __future__ import annotations

import pytest

from tokcomp_edge.compression.spec import parse_spec
from tokcomp_edge.errors import SpecError
from tokcomp_edge.sweep.candidates import candidate_grid, parse_candidates, tome_spec
from tokcomp_edge.vlm import plan_vlm, resolve_vlm


@pytest.fixture(scope="module")
def llava15():
    return resolve_vlm("llava-1.5-7b")  # config only: no weights are built


def test_grid_on_llava_1_5(llava15):
    grid = {c.spec: c for c in candidate_grid(llava15)}
    assert list(grid)[0] == "none" and grid["none"].tokens == 576
    for spec, tokens in {"pool:2": 144, "bilinear:12x12": 144, "prune:144:cls-attn": 144, "visionzip:122:22": 144,
                         "tome:19": 139, "pool:3": 64, "prune:72:norm": 72, "visionzip:61:11": 72}.items():
        assert grid[spec].tokens == tokens, spec
    methods = {parse_spec(s).method for s, c in grid.items() if c.refused is None}
    assert methods == {"none", "pool", "bilinear", "prune", "visionzip", "tome"}
    assert grid["unshuffle:2"].refused and "channel" in grid["unshuffle:2"].refused
    for c in grid.values():  # the token count is the export's arithmetic
        if c.refused is None:
            assert c.tokens == plan_vlm(llava15, parse_spec(c.spec), None).tokens_out


def test_user_list(llava15):
    cands = parse_candidates(" pool:2, tome:8,4 ,PRUNE:144:cls-attn,pool:2,unshuffle:2", llava15)
    assert [c.spec for c in cands] == ["none", "pool:2", "tome:8,4", "prune:144:cls-attn", "unshuffle:2"]
    assert cands[-1].refused and cands[-1].tokens is None
    # One schedule item (its comma is not a list separator); refused: LLaVA-1.5 runs 23 blocks, not 2.
    assert cands[2].refused and "23" in cands[2].refused
    sched = ",".join(["8"] * 23)
    assert parse_candidates(f"tome:{sched}", llava15)[1].tokens == 576 - 8 * 23


@pytest.mark.parametrize("text", ["pool:2,prnue:16", "pool:x", "", " , "])
def test_typos_fail_naming_them(llava15, text):
    with pytest.raises(SpecError) as ex:
        parse_candidates(text, llava15)
    assert ex.value.exit_code == 2
    assert "--candidates" in ex.value.one_line()


def test_tome_schedule_respects_the_bipartite_limit():
    assert tome_spec(576, 432, 23, 1) == "tome:19"
    assert tome_spec(64, 48, 2, 1) == "tome:32,16"  # a constant 24 would merge more than half in block 2

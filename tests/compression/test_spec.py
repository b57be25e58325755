"""Spec parsing and the token arithmetic, on odd and even grids."""

import pytest

from tokcomp_edge.compression.plan import plan_compression
from tokcomp_edge.compression.spec import MAX_TOPK, parse_spec
from tokcomp_edge.errors import SpecError


def plan(text, grid=(14, 14), prefix_tokens=1, has_cls=True, hidden=64, prefix="drop"):
    return plan_compression(parse_spec(text), grid=grid, prefix_tokens=prefix_tokens, has_cls=has_cls,
                            hidden_size=hidden, prefix=prefix)


@pytest.mark.parametrize("text,method,params", [
    ("none", "none", {}),
    ("pool:2", "pool", {"size": 2, "mode": "avg"}),
    ("POOL:3:max", "pool", {"size": 3, "mode": "max"}),
    ("bilinear:8x6", "bilinear", {"height": 8, "width": 6}),
    ("bilinear:5", "bilinear", {"height": 5, "width": 5}),
    ("unshuffle:2", "unshuffle", {"factor": 2, "order": "torch", "pad": False}),
    ("unshuffle:2:pad:internvl", "unshuffle", {"factor": 2, "order": "internvl", "pad": True}),
    ("prune:64", "prune", {"k": 64, "score": "norm"}),
    ("prune:32:cls-attn", "prune", {"k": 32, "score": "cls-attn"}),
])
def test_parse(text, method, params):
    s = parse_spec(text)
    assert (s.method, s.params) == (method, params)


def test_canonical_text_and_slug():
    assert parse_spec("unshuffle:2:pad:internvl").text == "unshuffle:2:internvl:pad"
    assert parse_spec("pool:2").slug == "pool2"
    assert parse_spec("prune:64:cls-attn").slug == "prune64-cls-attn"


@pytest.mark.parametrize("text,needle", [
    ("", "empty"), ("squash:2", "unknown compression method"), ("pool", "needs a parameter"),
    ("pool:x", "integer"), ("pool:0", "≥ 1"), ("pool:2:median", "unknown option 'median'"),
    ("pool:2:avg:max", "twice"), ("bilinear:3x4x5", "HxW"), ("unshuffle:1", "≥ 2"),
    ("prune:-3", "≥ 1"), ("prune:8:entropy", "unknown option"), ("none:2", "no parameters"),
])
def test_malformed(text, needle):
    with pytest.raises(SpecError, match=needle) as exc:
        parse_spec(text)
    assert exc.value.exit_code == 2


@pytest.mark.parametrize("grid,s,expected", [((14, 14), 2, (7, 7)), ((27, 27), 2, (14, 14)),
                                             ((24, 24), 3, (8, 8)), ((16, 16), 3, (6, 6)), ((7, 5), 2, (4, 3))])
def test_pool_counts_odd_and_even(grid, s, expected):
    p = plan(f"pool:{s}", grid=grid)
    assert p.grid_out == expected and p.tokens_out == expected[0] * expected[1]


def test_prefix_keep_adds_prefix_tokens():
    p = plan("pool:2", grid=(14, 14), prefix_tokens=5, prefix="keep")
    assert (p.tokens_in, p.tokens_out, p.prefix_out) == (201, 54, 5)
    assert p.formula.startswith("5 prefix")


def test_unshuffle_counts_and_dim():
    p = plan("unshuffle:2", grid=(24, 24), hidden=1024)
    assert (p.tokens_out, p.dim_out, p.grid_out) == (144, 4096, (12, 12))
    p = plan("unshuffle:2:pad", grid=(27, 27), hidden=1152)
    assert (p.tokens_out, p.dim_out, p.grid_out) == (196, 4608, (14, 14))


def test_unshuffle_not_dividing_names_numbers():
    with pytest.raises(SpecError, match=r"factor 2 does not divide the 27x27") as exc:
        plan("unshuffle:2", grid=(27, 27))
    assert "28x28" in exc.value.hint


def test_unshuffle_with_kept_prefix_is_impossible():
    with pytest.raises(SpecError, match="prefix"):
        plan("unshuffle:2", prefix="keep")


def test_prune_bounds():
    assert plan("prune:195").tokens_out == 195
    with pytest.raises(SpecError, match="K=196 keeps every one of the 196"):
        plan("prune:196")
    with pytest.raises(SpecError, match=str(MAX_TOPK)):
        plan(f"prune:{MAX_TOPK}", grid=(100, 100))
    with pytest.raises(SpecError, match="needs a CLS token"):
        plan("prune:8:cls-attn", has_cls=False, prefix_tokens=0)


def test_pool_larger_than_grid():
    with pytest.raises(SpecError, match="larger than the 14x14"):
        plan("pool:15")


def test_bad_prefix_policy():
    with pytest.raises(SpecError, match="keep or drop"):
        plan("none", prefix="maybe")

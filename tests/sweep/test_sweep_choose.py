"""The chooser on synthetic tables: each constraint, the tie order, infeasible picks naming the closest."""

from __future__ import annotations

import pytest

from tokcomp_edge.errors import InputError
from tokcomp_edge.sweep.choose import Constraint, NoFeasibleCandidate, choose, pareto_front


def row(spec, tokens, top1, lo=None, kl=0.1, match=0.5, ms=1.0):
    return {"spec": spec, "tokens": tokens, "top1": top1, "top1_lo": top1 - 0.05 if lo is None else lo, "kl": kl,
            "match": match, "latency_ms": ms}


TABLE = [row("none", 64, 1.0, lo=1.0, kl=0.0, match=1.0, ms=5.0), row("pool:2", 16, 0.9, lo=0.85, ms=2.0),
         row("prune:16:norm", 16, 0.7, lo=0.6, ms=1.5), row("pool:4", 4, 0.6, lo=0.5, ms=1.0),
         row("prune:32:norm", 32, 0.85, lo=0.8, ms=3.0)]


def test_tokens_picks_best_top1_within_budget():
    assert choose(TABLE, Constraint(tokens=16))["spec"] == "pool:2"
    assert choose(TABLE, Constraint(tokens=64))["spec"] == "none"
    assert choose(TABLE, Constraint(tokens=31))["spec"] == "pool:2"
    assert choose(TABLE, Constraint(tokens=4))["spec"] == "pool:4"


def test_max_ms_picks_best_top1_within_latency():
    assert choose(TABLE, Constraint(max_ms=1.6))["spec"] == "prune:16:norm"
    assert choose(TABLE, Constraint(max_ms=2.0))["spec"] == "pool:2"
    assert choose(TABLE, Constraint(max_ms=99))["spec"] == "none"


def test_min_agreement_uses_the_lower_bound_and_fewest_tokens():
    assert choose(TABLE, Constraint(min_agreement=0.8))["spec"] == "pool:2"  # 16 tokens, lower bound 0.85
    assert choose(TABLE, Constraint(min_agreement=0.86))["spec"] == "none"  # pool:2's point 0.9 is not enough
    assert choose(TABLE, Constraint(min_agreement=0.5))["spec"] == "pool:4"
    assert choose(TABLE, Constraint(min_agreement=1.0))["spec"] == "none"


def test_ties_are_broken_in_the_documented_order():
    t = [row("b", 16, 0.8, kl=0.2), row("a", 16, 0.8, kl=0.2), row("c", 8, 0.8, kl=0.3)]
    assert choose(t, Constraint(tokens=16))["spec"] == "c"  # same top1: fewer tokens
    t = [row("b", 16, 0.8, kl=0.2), row("a", 16, 0.8, kl=0.2), row("d", 16, 0.8, kl=0.1)]
    assert choose(t, Constraint(tokens=16))["spec"] == "d"  # then lower kl
    t = [row("b", 16, 0.8), row("a", 16, 0.8)]
    assert choose(t, Constraint(tokens=16))["spec"] == "a"  # then the spec text
    assert choose(list(reversed(t)), Constraint(tokens=16))["spec"] == "a"  # whatever the row order
    t = [row("b", 16, 0.8, lo=0.7), row("a", 16, 0.9, lo=0.7)]
    assert choose(t, Constraint(min_agreement=0.7))["spec"] == "a"  # equal tokens: higher top1


def test_infeasible_names_the_closest_and_exits_1():
    with pytest.raises(NoFeasibleCandidate) as ex:
        choose(TABLE, Constraint(min_agreement=1.5))
    assert ex.value.exit_code == 1 and ex.value.closest == "none" and "none" in ex.value.message
    with pytest.raises(NoFeasibleCandidate) as ex:
        choose(TABLE, Constraint(tokens=3))
    assert ex.value.closest == "pool:4" and "4" in ex.value.message
    with pytest.raises(NoFeasibleCandidate) as ex:
        choose(TABLE, Constraint(max_ms=0.5))
    assert ex.value.closest == "pool:4" and "1 ms" in ex.value.message


def test_no_constraint_no_pick():
    assert choose(TABLE, Constraint()) is None


def test_pareto_fronts():
    assert pareto_front(TABLE, "tokens") == ["pool:4", "pool:2", "none"]
    assert pareto_front(TABLE, "latency_ms") == ["pool:4", "prune:16:norm", "pool:2", "none"]
    # prune:16:norm (same tokens as pool:2, lower top1) and prune:32:norm (more tokens, lower top1) are dominated.
    assert "prune:16:norm" not in pareto_front(TABLE, "tokens")
    tied = [row("a", 16, 0.8), row("b", 16, 0.8)]
    assert pareto_front(tied) == ["a", "b"]


@pytest.mark.parametrize("kw", [dict(tokens=0), dict(tokens=-3), dict(max_ms=0.0), dict(max_ms=float("nan")),
                                dict(min_agreement=-0.1), dict(min_agreement=float("nan")),
                                dict(tokens=16, min_agreement=0.9)])
def test_impossible_budgets_are_bad_input(kw):
    with pytest.raises(InputError) as ex:
        Constraint(**kw)
    assert ex.value.exit_code == 2 and "\n" not in ex.value.one_line()


def test_max_ms_without_latency_is_bad_input():
    t = [dict(r, latency_ms=None) for r in TABLE]
    with pytest.raises(InputError):
        choose(t, Constraint(max_ms=3))

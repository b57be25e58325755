"""Tolerance defaults per precision and command-line overrides."""

import pytest

from tokcomp_edge.core.tolerance import (
    DEFAULTS,
    default_tolerance,
    parse_override,
    resolve_tolerances,
    tolerance_from_dict,
)
from tokcomp_edge.errors import InputError


def test_defaults_tighten_with_precision():
    fp32, fp16, int8 = DEFAULTS["fp32"], DEFAULTS["fp16"], DEFAULTS["int8"]
    assert fp32.max_rel_l2 < fp16.max_rel_l2 < int8.max_rel_l2
    assert fp32.min_cosine > fp16.min_cosine > int8.min_cosine
    assert fp32.min_jaccard == 1.0  # fp32 accepts no swapped token
    assert int8.atol is None  # int8: scale-free checks only
    assert default_tolerance("bf16") == fp16


def test_unknown_precision():
    with pytest.raises(InputError, match="unknown precision 'fp4'"):
        default_tolerance("fp4")


def test_parse_override_forms():
    o = parse_override("atol", "tokens=1e-3")
    assert (o.field, o.value, o.output) == ("atol", 1e-3, "tokens")
    o = parse_override("min-cosine", "0.999")
    assert (o.field, o.value, o.output) == ("min_cosine", 0.999, None)
    assert parse_override("atol", "tokens=none").value is None


@pytest.mark.parametrize("flag,text,match", [("atol", "tokens=abc", "not a number"), ("atol", "-1", "non-negative"),
                                             ("min-cosine", "1.5", "0..1"), ("bogus", "1", "unknown tolerance")])
def test_parse_override_errors(flag, text, match):
    with pytest.raises(InputError, match=match):
        parse_override(flag, text)


def test_resolve_named_overrides_win_over_unnamed():
    ovs = (parse_override("min-cosine", "tokens=0.98"), parse_override("min-cosine", "0.9"))
    tols = resolve_tolerances("fp32", ["tokens", "indices"], ovs)
    assert tols["tokens"].min_cosine == 0.98
    assert tols["indices"].min_cosine == 0.9
    assert tols["tokens"].max_rel_l2 == DEFAULTS["fp32"].max_rel_l2


def test_resolve_rejects_unknown_output():
    with pytest.raises(InputError, match="output 'logits'"):
        resolve_tolerances("fp32", ["tokens"], (parse_override("atol", "logits=1"),))


def test_round_trip_dict():
    t = DEFAULTS["fp16"]
    assert tolerance_from_dict({**t.to_dict(), "future_field": 1}) == t

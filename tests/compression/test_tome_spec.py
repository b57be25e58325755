"""tome:R / tome:R1,…,RL: parsing, the static per-block arithmetic, and the errors that name the block."""

import pytest

from tokcomp_edge.compression.plan import plan_compression
from tokcomp_edge.compression.spec import parse_spec
from tokcomp_edge.errors import SpecError


def plan(text, layers=12, grid=(14, 14), prefix_tokens=0, prefix="drop"):
    return plan_compression(parse_spec(text), grid=grid, prefix_tokens=prefix_tokens, has_cls=prefix_tokens > 0,
                            hidden_size=768, prefix=prefix, layers=layers)


def test_issue_example_siglip_b16_r13():
    p = plan("tome:13")  # siglip-b16-224: 196 tokens, 12 blocks
    assert (p.tokens_out, p.patch_tokens_out, p.grid_out) == (40, 40, None)
    assert p.formula == "196 − 13·12 = 40"
    assert p.block_tokens == tuple(196 - 13 * (i + 1) for i in range(12)) and p.schedule == (13,) * 12
    assert p.extra_outputs == ("sizes", "merge_map")
    d = p.to_dict()
    assert d["schedule"] == [13] * 12 and d["block_tokens"][-1] == 40


def test_schedule_and_prefix():
    s = parse_spec("tome:16,16,12,8")
    assert s.params == {"schedule": (16, 16, 12, 8)} and s.text == "tome:16,16,12,8" and s.slug == "tome16-16-12-8"
    p = plan("tome:16,16,12,8", layers=4, prefix_tokens=1, prefix="keep")
    assert p.block_tokens == (181, 165, 153, 145) and p.tokens_out == 145 and p.prefix_out == 1
    assert plan("tome:0,5", layers=2).tokens_out == 191


def test_cap_is_half_the_unprotected_tokens_and_odd_counts():
    # 197 tokens, 1 protected: block 1 may merge (197 − 1) // 2 = 98, block 2 then (99 − 1) // 2 = 49
    assert plan("tome:98,49", layers=2, prefix_tokens=1).tokens_out == 196 - 147
    p = plan("tome:98,49", layers=2, prefix_tokens=1, prefix="keep")
    assert p.block_tokens == (99, 50)
    with pytest.raises(SpecError, match=r"block 2 of 2 would merge r=50 tokens, but it has 99 tokens \(1 protected\) "
                                        r"and can merge at most 49") as e:
        plan("tome:98,50", layers=2, prefix_tokens=1)
    assert e.value.exit_code == 2
    with pytest.raises(SpecError, match="block 9 of 12"):
        plan("tome:20")  # 196 − 8·20 = 36 tokens left before block 9: cap 18


@pytest.mark.parametrize("text,needle", [
    ("tome:0", "≥ 1"), ("tome:-2", "≥ 0"), ("tome:x", "integer"), ("tome:4:2", "one parameter"),
    ("tome:1,2", "gives 2 merge counts, but the tower runs 12 blocks"),
])
def test_errors(text, needle):
    with pytest.raises(SpecError, match=needle):
        plan(text)


def test_topk_limit():
    with pytest.raises(SpecError, match="3872 A tokens of a 7744-token block, which is not below TensorRT's TopK"):
        plan("tome:8", grid=(88, 88))

"""Latency statistics and the LLM prefill FLOPs formula, against hand-computed numbers."""

import pytest

from tokcomp_edge.errors import InputError
from tokcomp_edge.validation.economics import (
    LLM_PRESETS,
    LlmShape,
    custom_llm,
    llm_preset,
    llm_saving,
    prefill_flops,
    token_economics,
)
from tokcomp_edge.validation.latency import pair_ratio_median, summarize, time_calls, time_interleaved


def test_summarize_hand_computed():
    s = summarize([1.0, 2.0, 3.0, 4.0, 5.0], runner="target", batch=2, warmup=1, tokens_per_image=10)
    assert (s.mean_ms, s.p50_ms, s.min_ms, s.max_ms) == (3.0, 3.0, 1.0, 5.0)
    assert s.p90_ms == pytest.approx(4.6) and s.p99_ms == pytest.approx(4.96)
    assert s.std_ms == pytest.approx(2 ** 0.5)
    assert s.images_per_s == pytest.approx(2 / 0.003)
    assert s.tokens_per_s == pytest.approx(10 * 2 / 0.003)
    assert s.iterations == 5 and s.samples_ms == [1.0, 2.0, 3.0, 4.0, 5.0]


def test_summarize_needs_samples():
    with pytest.raises(ValueError):
        summarize([], runner="t", batch=1, warmup=0, tokens_per_image=1)


def test_time_calls_counts_warmup_and_steps():
    calls, steps = [], []
    samples = time_calls(lambda: calls.append(1), warmup=2, iterations=3, on_step=lambda: steps.append(1))
    assert len(samples) == 3 and len(calls) == 5 and len(steps) == 5
    assert all(x >= 0 for x in samples)


def test_pair_ratio_median_survives_a_burst_on_one_side():
    """Regression: a report said ONNX Runtime was 0.74× PyTorch on a bundle an interleaved run measures
    ≈ 2.4× faster — timed one runner after the other, another process landed on one side. Per-pair ratios
    of interleaved runs, and their median, ignore the pairs such a burst hits."""
    target = [10.0] * 9
    reference = [24.0] * 9
    noisy_target = target[:3] + [60.0, 70.0, 65.0] + target[6:]  # a burst while the target ran
    assert pair_ratio_median(noisy_target, reference) == 2.4
    assert sum(reference) / sum(noisy_target) < 1.5  # the ratio of means would have said otherwise
    assert pair_ratio_median([0.0], [1.0]) is None


def test_time_interleaved_alternates_the_calls():
    order = []
    a, b = (lambda: order.append("a")), (lambda: order.append("b"))
    out = time_interleaved([a, b], warmup=1, iterations=3)
    assert order == ["a", "b"] * 4 and [len(x) for x in out] == [3, 3]


TINY = LlmShape("t", hidden=4, layers=2, mlp=8, heads=2, kv_heads=1)


def test_prefill_flops_hand_computed():
    # per layer, n = 3, d = 4, d_kv = 2, m = 8, gated: 4·3·4·6 + 4·9·4 + 2·3·3·4·8 = 288 + 144 + 576
    assert prefill_flops(TINY, 3) == 2 * (288 + 144 + 576)
    plain = LlmShape("p", hidden=4, layers=1, mlp=8, heads=1, kv_heads=1, gated=False)
    assert prefill_flops(plain, 1) == 4 * 1 * 4 * 8 + 4 * 4 + 2 * 2 * 4 * 8


def test_llm_saving_hand_computed():
    s = llm_saving(TINY, tokens_in=3, tokens_out=1)
    assert s.flops_uncompressed == 2016 and s.flops_compressed == 2 * (96 + 16 + 192)
    assert s.flops_saved == 2016 - 608
    assert s.saved_fraction == pytest.approx(1408 / 2016)
    assert s.kv_cache_bytes_saved == 2 * 2 * 2 * 2 * 2  # 2·L·Δtokens·d_kv·2 bytes
    with_text = llm_saving(TINY, tokens_in=3, tokens_out=1, text_tokens=2)
    assert with_text.flops_saved == prefill_flops(TINY, 5) - prefill_flops(TINY, 3)


def test_presets_and_custom():
    q = llm_preset("Qwen2-0.5B")
    assert (q.hidden, q.layers, q.mlp, q.heads, q.kv_heads) == (896, 24, 4864, 14, 2)
    assert q.kv_dim == 128
    assert LLM_PRESETS["vicuna-7b"].hidden == 4096 and LLM_PRESETS["vicuna-7b"].mlp == 11008
    with pytest.raises(InputError, match="unknown --llm preset 'gpt-5'"):
        llm_preset("gpt-5")
    c = custom_llm(2048, 24)
    assert c.mlp == 8192 and c.kv_heads == c.heads
    with pytest.raises(InputError, match="--llm-kv-heads 8 is larger"):
        custom_llm(2048, 24, heads=4, kv_heads=8)
    with pytest.raises(InputError, match="--llm-layers 0"):
        custom_llm(2048, 0)


def test_token_economics_section():
    e = token_economics(197, 49, [TINY], text_tokens=0)
    assert e["tokens_in"] == 197 and e["tokens_out"] == 49 and e["ratio"] == pytest.approx(49 / 197)
    assert "F(n) = L_kv·[" in e["formula"] and len(e["llms"]) == 1

"""Prefill FLOPs of hybrid LLMs: the n² attention term only in softmax-attention layers; LFM2's short
convolutions and Qwen3.5's gated-DeltaNet layers cost what their own modules compute, linear in n.

The reference is torch's FLOP counter (torch.utils.flop_counter) on transformers' Lfm2Model and
Qwen3_5TextModel themselves, eager attention (it counts Q·Kᵀ and attention·V as the matmuls they are).
"""

from __future__ import annotations

import pytest

from tokcomp_edge.errors import InputError
from tokcomp_edge.validation.economics import (
    DELTA_CHUNK,
    LlmShape,
    bundle_llm,
    llm_from_facts,
    llm_saving,
    prefill_flops,
    prefill_terms,
)
from tokcomp_edge.vlm.spec import llm_facts

SMALL = dict(hidden_size=32, intermediate_size=64, num_attention_heads=2, num_key_value_heads=1, vocab_size=64)


def _lfm2():
    from transformers import Lfm2Config

    return Lfm2Config(num_hidden_layers=3, layer_types=["conv", "full_attention", "conv"], **SMALL)


def _qwen35():
    from transformers import Qwen3_5TextConfig

    # head_dim 24 (not hidden / heads = 16) and 4 value heads of 12 over 2 key heads of 8: every dimension
    # the count reads differs from the others, so a swapped one shows.
    return Qwen3_5TextConfig(num_hidden_layers=4, head_dim=24, full_attention_interval=2, linear_num_key_heads=2,
                             linear_key_head_dim=8, linear_num_value_heads=4, linear_value_head_dim=12, **SMALL)


def _counted(config, n: int) -> float:
    """torch's FLOP count of transformers' model (no LM head) on an n-token prompt."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import AutoModel

    torch.manual_seed(0)
    model = AutoModel.from_config(config, attn_implementation="eager").eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(input_ids=(torch.arange(n) % 64)[None], use_cache=False)
    return float(counter.get_total_flops())


def test_lfm2_like_hand_count():
    """d 32, m 256 (Lfm2MLP's auto-adjusted width), 1 attention layer (q 32, q_kv 16) + 2 conv layers (K 3)."""
    shape = llm_from_facts("lfm2", llm_facts(_lfm2()).to_dict())
    assert (shape.mlp, shape.kv_layers, shape.conv_layers, shape.conv_kernel) == (256, 1, 2, 3)
    n = 10
    attention = 2 * n * 32 * (32 + 2 * 16) + 2 * n * 32 * 32 + 4 * n * n * 32
    conv = 2 * n * 32 * 96 + 2 * n * 32 * 32 + 2 * n * 32 * 3
    mlp = 2 * 3 * n * 32 * 256
    assert prefill_flops(shape, n) == attention + 2 * conv + 3 * mlp


def test_qwen35_like_hand_count():
    """d 32, 2 gated-attention layers (q 48 with its output gate, q_kv 24), 2 linear-attention layers."""
    shape = llm_from_facts("qwen3.5", llm_facts(_qwen35()).to_dict())
    assert (shape.kv_layers, shape.linear_layers, shape.head_dim, shape.attn_gate) == (2, 2, 24, True)
    n, c, C = 10, 2 * 2 * 8 + 4 * 12, DELTA_CHUNK
    attention = 2 * n * 32 * (2 * 48 + 2 * 24) + 2 * n * 48 * 32 + 4 * n * n * 48
    linear = (2 * n * 32 * (c + 4 * 12 + 2 * 4) + 2 * n * 48 * 32 + 2 * n * c * 4
              + n * 4 * (4 * C * 8 + 2 * C * 12 + (C - 1) * (8 + 12) + 6 * 8 * 12))
    mlp = 2 * 3 * n * 32 * 64
    assert prefill_flops(shape, n) == 2 * attention + 2 * linear + 4 * mlp


@pytest.mark.parametrize("which", ["lfm2", "qwen3.5"])
def test_prefill_flops_equal_transformers_modules(which):
    """The count equals what transformers' own model computes, less only what the docstring says: the counter
    leaves the delta rule's triangular solves uncounted, and the reference convolutions compute K − 1 padded
    outputs more. n = 2 chunks of the delta rule, so no chunk padding."""
    config = _lfm2() if which == "lfm2" else _qwen35()
    shape = llm_from_facts(which, llm_facts(config).to_dict())
    n = 2 * DELTA_CHUNK
    solves = shape.linear_layers * n * shape.linear_v_heads * (DELTA_CHUNK - 1) * (shape.linear_k_dim
                                                                                  + shape.linear_v_dim)
    c = 2 * shape.linear_k_heads * shape.linear_k_dim + shape.linear_v_heads * shape.linear_v_dim
    pad = (2 * (shape.conv_kernel - 1) * shape.hidden * shape.conv_kernel * shape.conv_layers
           + 2 * (shape.linear_conv_kernel - 1) * c * shape.linear_conv_kernel * shape.linear_layers)
    assert _counted(config, n) == prefill_flops(shape, n) - solves + pad


@pytest.mark.parametrize("which", ["lfm2", "qwen3.5"])
def test_only_attention_layers_are_quadratic(which):
    """The second difference of F(n) is 8·q per softmax-attention layer: conv and linear-attention layers add
    nothing in n², and the KV cache counts the same layers."""
    shape = llm_from_facts(which, llm_facts(_lfm2() if which == "lfm2" else _qwen35()).to_dict())
    n = 50
    second = prefill_flops(shape, n + 1) - 2 * prefill_flops(shape, n) + prefill_flops(shape, n - 1)
    assert second == 8 * shape.q_dim * shape.kv_layers < 8 * shape.q_dim * shape.layers
    terms = prefill_terms(shape, n)
    assert terms["attention_scores"] == 4 * n * n * shape.q_dim * shape.kv_layers
    assert llm_saving(shape, 64, 16).kv_cache_bytes_saved == 2 * shape.kv_layers * 48 * shape.kv_dim * 2


def test_bundle_round_trip_and_older_bundles():
    """A manifest's vlm.llm (LlmFacts.to_dict) gives back the same shape; a dense LLM's dict is unchanged
    (no hybrid keys); a bundle that recorded kv_layers but not the layer kinds charges its other layers
    the attention projections without the n² term."""
    facts = llm_facts(_qwen35()).to_dict()
    shape = bundle_llm({"vlm": {"family": "qwen3_5", "llm": facts}})
    assert prefill_flops(shape, 77) == prefill_flops(llm_from_facts("x", facts), 77)
    from transformers import LlamaConfig

    dense = llm_facts(LlamaConfig(num_hidden_layers=3, **SMALL)).to_dict()
    assert set(dense) == {"model_type", "hidden", "layers", "heads", "kv_heads", "mlp", "gated", "kv_layers"}
    old = LlmShape("old", hidden=32, layers=3, mlp=256, heads=2, kv_heads=1, kv_layers=1)
    terms = prefill_terms(old, 10)
    assert terms["other_projections"] == 2 * terms["attention_projections"]
    assert terms["attention_scores"] == 4 * 100 * 32
    with pytest.raises(InputError, match="exceed its 3 layers"):
        LlmShape("bad", hidden=32, layers=3, mlp=8, heads=2, kv_heads=1, kv_layers=2, conv_layers=2)


def test_doc_figures_lfm2_vl_450m():
    """docs/validate-and-report.md quotes these: 256 → 64 tokens 112 GFLOP (75.2 %), 1024 → 256 466 GFLOP
    (75.8 %); the n² term on all 16 layers said 110 and 490 GFLOP."""
    from tokcomp_edge.validation.economics import fmt_flops
    from tokcomp_edge.vlm.presets import VLM_PRESETS
    from tokcomp_edge.vlm.spec import hf_config_object

    p = VLM_PRESETS["lfm2-vl-450m"]
    facts = llm_facts(hf_config_object(p.model_type, p.config, p.name).text_config).to_dict()
    shape = llm_from_facts("lfm2-vl-450m", facts)
    every = LlmShape("all n²", hidden=1024, layers=16, mlp=facts["mlp"], heads=16, kv_heads=8)
    got = [(fmt_flops(llm_saving(x, a, b).flops_saved), round(llm_saving(x, a, b).saved_fraction, 3))
           for x in (shape, every) for a, b in ((256, 64), (1024, 256))]
    assert got == [("112 GFLOP", 0.752), ("466 GFLOP", 0.758), ("110 GFLOP", 0.756), ("490 GFLOP", 0.77)]


def test_sweep_cost_reads_the_same_shape():
    """sweep/cost.py prices candidates with the shape the report uses (the layer kinds included)."""
    from tokcomp_edge.sweep.cost import economics, llm_shape
    from tokcomp_edge.vlm.presets import VLM_PRESETS
    from tokcomp_edge.vlm.spec import hf_config_object, vlm_spec

    p = VLM_PRESETS["tiny-lfm2-vl"]
    spec = vlm_spec(p.name, p.model_type, hf_config_object(p.model_type, p.config, p.name).to_dict(), None,
                    "preset", p.name)
    shape = llm_shape(spec)
    assert (shape.kv_layers, shape.conv_layers, shape.conv_kernel) == (1, 1, 3)
    report = bundle_llm({"vlm": {"family": "lfm2_vl", "llm": spec.llm.to_dict()}})  # what validate reads
    assert prefill_flops(shape, 77) == prefill_flops(report, 77)
    want = llm_saving(shape, 64, 16, 5)
    assert economics(spec, 64, 16, [1], 5)["prefill_flops_saved"] == want.flops_saved

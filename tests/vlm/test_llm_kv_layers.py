"""Token economics count the KV cache only in layers that keep one (issue 17): hybrid LLMs mix attention with
LFM2's short convolutions or Qwen3.5's linear attention, whose state does not grow with the prompt.

The reference is transformers' own cache: the layers whose keys hold one row per prompt token after a forward.
"""

from __future__ import annotations

import pytest
import torch

from tokcomp_edge.validation.economics import LlmShape, bundle_llm, llm_saving
from tokcomp_edge.vlm.spec import kv_cache_layers

PROMPT = 7


def _small(**kw):
    return dict(hidden_size=32, intermediate_size=64, num_attention_heads=2, num_key_value_heads=1,
                vocab_size=64, **kw)


def _configs():
    from transformers import Lfm2Config, LlamaConfig, Qwen3_5TextConfig

    return {
        "lfm2 full_attn_idxs": Lfm2Config(num_hidden_layers=5, full_attn_idxs=[1, 3], **_small()),
        "lfm2 layer_types": Lfm2Config(num_hidden_layers=3, layer_types=["conv", "full_attention", "conv"],
                                       **_small()),
        "qwen3.5 interval 4": Qwen3_5TextConfig(num_hidden_layers=8, head_dim=16, **_small()),
        "qwen3.5 interval 2": Qwen3_5TextConfig(num_hidden_layers=4, head_dim=16, full_attention_interval=2,
                                                **_small()),
        "llama": LlamaConfig(num_hidden_layers=3, **_small()),
    }


def _cached_layers(config) -> int:
    """Layers of transformers' cache whose keys grew to the prompt's length."""
    from transformers import AutoModel

    torch.manual_seed(0)
    model = AutoModel.from_config(config).eval()
    with torch.no_grad():
        cache = model(input_ids=torch.arange(PROMPT)[None], use_cache=True).past_key_values
    keys = [getattr(layer, "keys", None) for layer in cache.layers]
    return sum(1 for k in keys if isinstance(k, torch.Tensor) and k.dim() == 4 and k.shape[-2] == PROMPT)


@pytest.mark.parametrize("name", list(_configs()))
def test_kv_layers_equal_transformers_cache(name):
    config = _configs()[name]
    want = _cached_layers(config)
    assert kv_cache_layers(config) == want
    if not name.startswith("llama"):
        assert want < config.num_hidden_layers  # a hybrid: fewer caching layers than layers


def test_presets_and_economics_use_kv_layers():
    """lfm2-vl-450m: 16 layers, 6 of them attention (LFM2-350M's published layer_types); the KV cache saved
    counts those 6, and so does the prefill's n² term (a bundle without kv_layers charges it to all 16; its
    10 other layers keep their linear projections: tests/validation/test_economics_hybrid.py)."""
    from tokcomp_edge.vlm.presets import VLM_PRESETS
    from tokcomp_edge.vlm.spec import hf_config_object

    p = VLM_PRESETS["lfm2-vl-450m"]
    text = hf_config_object(p.model_type, p.config, p.name).text_config
    assert (text.num_hidden_layers, kv_cache_layers(text)) == (16, 6)
    llm = {"model_type": "lfm2", "hidden": 1024, "layers": 16, "heads": 16, "kv_heads": 8, "mlp": 4608,
           "gated": True}
    old = bundle_llm({"vlm": {"family": "lfm2_vl", "llm": llm}})  # a bundle written before kv_layers
    new = bundle_llm({"vlm": {"family": "lfm2_vl", "llm": {**llm, "kv_layers": 6}}})
    assert old.kv_layers == 16 and new.kv_layers == 6
    a, b = llm_saving(old, 256, 64), llm_saving(new, 256, 64)
    assert b.kv_cache_bytes_saved == 2 * 6 * (256 - 64) * (1024 * 8 / 16) * 2
    assert b.kv_cache_bytes_saved * 16 == a.kv_cache_bytes_saved * 6
    assert a.flops_saved - b.flops_saved == 10 * 4 * 1024 * (256 ** 2 - 64 ** 2)  # 10 layers' Q·Kᵀ and A·V
    assert LlmShape("x", hidden=8, layers=3, mlp=8, heads=1, kv_heads=1).kv_layers == 3


def test_vlm_spec_records_kv_layers():
    """The manifest's vlm.llm (VlmSpec.llm) carries kv_layers: the tiny LFM2-VL has 1 attention layer of 2."""
    from tokcomp_edge.vlm.presets import VLM_PRESETS
    from tokcomp_edge.vlm.spec import hf_config_object, vlm_spec

    p = VLM_PRESETS["tiny-lfm2-vl"]
    facts = vlm_spec(p.name, p.model_type, hf_config_object(p.model_type, p.config, p.name).to_dict(), None,
                     "preset", p.name).llm
    assert (facts.layers, facts.kv_layers) == (2, 1) and facts.to_dict()["kv_layers"] == 1

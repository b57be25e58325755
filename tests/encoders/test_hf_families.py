"""The HF adapters reproduce HF's own forward: hidden states per layer, last_hidden_state, CLS attention."""

from __future__ import annotations

import pytest
import torch

from tokcomp_edge.encoders import EncoderConfig, build_encoder
from tokcomp_edge.encoders.hf_towers import build_hf_model

TINY = ["tiny-clip", "tiny-siglip", "tiny-dinov2", "tiny-vit"]
PREFIX = {"tiny-clip": 1, "tiny-siglip": 0, "tiny-dinov2": 5, "tiny-vit": 1}


def reference(enc, attn_implementation="sdpa"):
    """An independent HF model with the tower's parameters."""
    spec = enc.spec
    ref = build_hf_model(spec.config["model_type"], spec.config["hf"], attn_implementation)
    ref.load_state_dict(enc.tower.hf.state_dict())
    return ref.eval()


@pytest.mark.parametrize("name", TINY)
def test_tiny_shapes_and_frozen(name, pixels):
    enc = build_encoder(EncoderConfig(name))
    assert enc.spec.prefix_tokens == PREFIX[name]
    assert enc.spec.grid == (14, 14)
    assert not enc.tower.training
    assert all(not p.requires_grad and p.dtype == torch.float32 for p in enc.tower.parameters())
    with torch.no_grad():
        y, attn = enc.tower(pixels())
    assert y.shape == (2, PREFIX[name] + 196, enc.spec.hidden_size)
    assert attn is None
    assert enc.weights.kind == "random" and enc.weights.seed == 0


@pytest.mark.parametrize("name", TINY)
def test_layers_match_hf_hidden_states(name, pixels):
    x = pixels()
    enc = build_encoder(EncoderConfig(name, layer=-1))
    ref = reference(enc)
    with torch.no_grad():
        out = ref(pixel_values=x, output_hidden_states=True)
        hs = out.hidden_states
        n = enc.spec.num_layers
        assert len(hs) == n + 1
        # the embedding stage (incl. CLIP's pre_layrnorm) is HF's hidden_states[0]
        torch.testing.assert_close(enc.tower.embed(x), hs[0], rtol=0, atol=0)
        for layer in [-1, n, *range(1, n), -2]:
            tower = build_encoder(EncoderConfig(name, layer=layer)).tower
            y, _ = tower(x)
            idx = layer if layer > 0 else n + 1 + layer
            want = out.last_hidden_state if idx == n else hs[idx]
            torch.testing.assert_close(y, want, rtol=0, atol=1e-6, msg=f"{name} layer {layer}")


def test_final_norm_semantics(pixels):
    """CLIP's last layer is raw (post_layernorm only touches the pooled CLS); the others are normed."""
    x = pixels()
    for name, normed in [("tiny-clip", False), ("tiny-siglip", True), ("tiny-dinov2", True), ("tiny-vit", True)]:
        enc = build_encoder(EncoderConfig(name))
        with torch.no_grad():
            hs = reference(enc)(pixel_values=x, output_hidden_states=True).hidden_states
            y, _ = enc.tower(x)
        assert torch.allclose(y, hs[-1], atol=1e-6) is (not normed), name


@pytest.mark.parametrize("name", ["tiny-clip", "tiny-dinov2", "tiny-vit"])
@pytest.mark.parametrize("layer", [-1, 1])
def test_cls_attention_matches_hf_eager(name, layer, pixels):
    x = pixels()
    enc = build_encoder(EncoderConfig(name, layer=layer))
    ref = reference(enc, "eager")
    with torch.no_grad():
        atts = ref(pixel_values=x, output_attentions=True).attentions
        y, attn = enc.tower(x, with_cls_attention=True)
    idx = enc.tower.num_used - 1
    want = atts[idx][:, :, 0, :].mean(dim=1)
    assert attn.shape == (2, y.shape[1])
    torch.testing.assert_close(attn, want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(attn.sum(-1), torch.ones(2))


def test_siglip_has_no_cls_attention(pixels):
    from tokcomp_edge.errors import InputError

    enc = build_encoder(EncoderConfig("tiny-siglip"))
    assert not enc.spec.has_cls
    with pytest.raises(InputError, match="no CLS"):
        enc.tower(pixels(), with_cls_attention=True)


def test_image_size_override_changes_grid(pixels):
    enc = build_encoder(EncoderConfig("tiny-vit", image_size=160))
    assert enc.spec.image_size == (160, 160) and enc.spec.grid == (10, 10)
    with torch.no_grad():
        y, _ = enc.tower(pixels(size=160))
    assert y.shape == (2, 101, 64)

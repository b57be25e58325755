"""`VisionTower.attention_probe` (what VisionZip reads) against HF's own eager attention and timm's
unfused attention: the importance row and the head-averaged keys of the last block run."""

from __future__ import annotations

import pytest
import torch

from tokcomp_edge.encoders import EncoderConfig, build_encoder
from tokcomp_edge.encoders.hf_towers import build_hf_model
from tokcomp_edge.errors import InputError


def eager_reference(enc):
    spec = enc.spec
    ref = build_hf_model(spec.config["model_type"], spec.config["hf"], "eager")
    ref.load_state_dict(enc.tower.hf.state_dict())
    return ref.eval()


def k_proj_of(block):
    attn = getattr(block, "self_attn", None) or block.attention
    return attn.k_proj


@pytest.mark.parametrize("name", ["tiny-clip", "tiny-siglip", "tiny-dinov2", "tiny-vit"])
@pytest.mark.parametrize("layer", [-1, 1])
def test_probe_matches_hf_eager(name, layer, pixels):
    x = pixels()
    enc = build_encoder(EncoderConfig(name, layer=layer))
    ref = eager_reference(enc)
    idx = enc.tower.num_used - 1
    seen = {}
    hook = k_proj_of(enc.tower.blocks[idx]).register_forward_hook(
        lambda m, a, out: seen.setdefault("k", []).append(out))
    with torch.no_grad():
        atts = ref(pixel_values=x, output_attentions=True).attentions
        y, (importance, keys) = enc.tower(x, with_probe=True)
    hook.remove()
    heads = enc.spec.num_heads
    if enc.spec.has_cls:
        want = atts[idx][:, :, 0, :].mean(dim=1)  # CLS query, mean over heads
    else:
        want = atts[idx].mean(dim=(1, 2))  # attention each token receives, mean over heads and queries
    torch.testing.assert_close(importance, want, rtol=1e-5, atol=1e-6)
    k = seen["k"][-1]  # the last call is the block's own attention (the first is the probe's)
    assert len(seen["k"]) == 2
    b, t, c = k.shape
    torch.testing.assert_close(keys, k.reshape(b, t, heads, c // heads).mean(dim=2), rtol=1e-5, atol=1e-6)
    assert importance.shape == (2, y.shape[1])


@pytest.mark.parametrize("model", ["timm:test_vit", "timm:test_vit2"])
def test_probe_matches_timm_unfused_attention(model, pixels):
    """timm with fused attention off hands its softmax probabilities to attn_drop: read them there."""
    enc = build_encoder(EncoderConfig(model))
    tower = enc.tower
    blk = tower.timm.blocks[tower.num_used - 1]
    seen = {}
    blk.attn.fused_attn = False
    h1 = blk.attn.attn_drop.register_forward_hook(lambda m, a, out: seen.setdefault("p", a[0]))
    h2 = blk.attn.k_norm.register_forward_hook(lambda m, a, out: seen.setdefault("k", out))
    x = pixels(size=160)
    with torch.no_grad():
        tower(x)  # the block's own forward, hooks fill `seen`
        seen_ref = dict(seen)
        seen.clear()
        h1.remove()
        h2.remove()
        _, (importance, keys) = tower(x, with_probe=True)
    p, k = seen_ref["p"], seen_ref["k"]  # [B, H, T, T], [B, H, T, d]
    want = p[:, :, 0, :].mean(1) if enc.spec.has_cls else p.mean(dim=(1, 2))
    torch.testing.assert_close(importance, want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(keys, k.mean(dim=1), rtol=1e-5, atol=1e-6)


def test_user_tower_refuses_visionzip(tmp_path):
    from tokcomp_edge.compression import parse_spec, plan_compression
    from tokcomp_edge.compression.module import CompressedEncoder

    enc = build_encoder(EncoderConfig("tiny-clip"))

    class Opaque(type(enc.tower)):
        def forward(self, pixel_values, with_cls_attention=False):  # its own forward: no block loop
            return super().forward(pixel_values, with_cls_attention)

    tower = Opaque(enc.spec, enc.tower.hf)
    spec = enc.spec
    plan = plan_compression(parse_spec("visionzip:8:4"), grid=spec.grid, prefix_tokens=spec.prefix_tokens,
                            has_cls=spec.has_cls, hidden_size=spec.hidden_size, prefix="drop")
    with pytest.raises(InputError, match="reads the attention inside"):
        CompressedEncoder(tower, plan)

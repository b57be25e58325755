"""timm:<name>: a timm VisionTransformer as a tower (timm's test models, random init)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from tokcomp_edge.encoders import EncoderConfig, build_encoder, resolve_spec
from tokcomp_edge.errors import InputError, UnknownModelError


def test_spec_of_test_vit():
    spec = resolve_spec("timm:test_vit")
    assert (spec.family, spec.source, spec.image_size, spec.grid) == ("timm", "timm", (160, 160), (10, 10))
    assert (spec.prefix_tokens, spec.has_cls, spec.hidden_size, spec.num_layers, spec.num_heads) == (1, True, 64, 6, 2)
    assert spec.mean == (0.5, 0.5, 0.5)
    assert resolve_spec("timm:test_vit", image_size=224).grid == (14, 14)
    with pytest.raises(InputError, match="multiple of its patch size 16"):
        resolve_spec("timm:test_vit", image_size=170)


def test_registers_without_cls():
    spec = resolve_spec("timm:test_vit2")
    assert spec.prefix_tokens == 1 and not spec.has_cls


@pytest.mark.parametrize("layer", [-1, -2, 1, 4])
def test_layers_match_timm(layer, pixels):
    enc = build_encoder(EncoderConfig("timm:test_vit", layer=layer))
    m = enc.tower.timm
    x = pixels(size=160)
    with torch.no_grad():
        y, _ = enc.tower(x)
        if layer == -1:
            want = m.forward_features(x)
        else:
            idx = layer - 1 if layer > 0 else 6 + layer
            spatial, prefix = m.forward_intermediates(x, indices=[idx], return_prefix_tokens=True, norm=False,
                                                      output_fmt="NLC", intermediates_only=True)[0]
            want = torch.cat([prefix, spatial], dim=1)
    assert y.shape == (2, 101, 64)
    torch.testing.assert_close(y, want, rtol=0, atol=1e-6)


@pytest.mark.parametrize("layer", [-1, 2])
def test_cls_attention_against_manual(layer, pixels):
    enc = build_encoder(EncoderConfig("timm:test_vit", layer=layer))
    tower = enc.tower
    blk = tower.timm.blocks[tower.num_used - 1]
    seen = {}
    hook = blk.attn.register_forward_hook(lambda mod, args, out: seen.setdefault("h", args[0]))
    x = pixels(size=160)
    with torch.no_grad():
        _, attn = tower(x, with_cls_attention=True)
    hook.remove()
    h = seen["h"]  # the attention input, i.e. norm1 of the block input
    b, t, c = h.shape
    heads, d = blk.attn.num_heads, c // blk.attn.num_heads
    w, bias = blk.attn.qkv.weight, blk.attn.qkv.bias
    q = (h[:, :1] @ w[:c].T + bias[:c]).reshape(b, 1, heads, d)
    k = (h @ w[c:2 * c].T + bias[c:2 * c]).reshape(b, t, heads, d)
    scores = torch.einsum("bqhd,bthd->bhqt", q, k) / d ** 0.5
    want = scores.softmax(-1).mean(1)[:, 0]
    torch.testing.assert_close(attn, want, rtol=1e-5, atol=1e-6)


def test_no_cls_model_refuses_cls_attention(pixels):
    enc = build_encoder(EncoderConfig("timm:test_vit2"))
    with pytest.raises(InputError, match="no CLS"):
        enc.tower(pixels(size=160), with_cls_attention=True)


def test_weights_resampled_like_timm_dynamic_size(pixels, tmp_path):
    import timm

    src = build_encoder(EncoderConfig("timm:test_vit", seed=4))  # trained at 160 px
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in src.tower.timm.state_dict().items()}, str(path))
    enc = build_encoder(EncoderConfig("timm:test_vit", image_size=224, weights=path))
    dyn = timm.create_model("test_vit", pretrained=False, num_classes=0, dynamic_img_size=True).eval()
    dyn.load_state_dict(src.tower.timm.state_dict())
    x = pixels(size=224)
    with torch.no_grad():
        torch.testing.assert_close(enc.tower(x)[0], dyn.forward_features(x), rtol=1e-5, atol=1e-5)


def test_classifier_head_in_checkpoint_is_dropped(pixels, tmp_path):
    import timm

    full = timm.create_model("test_vit", pretrained=False).eval()  # with its 1000-class head
    assert any(k.startswith("head.") for k in full.state_dict())
    torch.save(full.state_dict(), tmp_path / "w.pth")
    enc = build_encoder(EncoderConfig("timm:test_vit", weights=tmp_path / "w.pth"))
    x = pixels(size=160)
    with torch.no_grad():
        # (the reference uses fused SDPA; the exportable tower the explicit softmax: float rounding only)
        torch.testing.assert_close(enc.tower(x)[0], full.forward_features(x), rtol=1e-5, atol=1e-5)


def test_non_vit_and_unknown_names():
    with pytest.raises(InputError, match="not a ViT-family model|not a VisionTransformer"):
        resolve_spec("timm:test_resnet")
    with pytest.raises(UnknownModelError, match="timm has no model named 'vit_nonexistent_9'"):
        resolve_spec("timm:vit_nonexistent_9")

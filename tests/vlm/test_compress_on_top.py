"""`--compress` on a VLM acts on the selected patch features, before the VLM's own transform and projector.
Each case is computed independently here from transformers' modules and torch ops."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from vlm_helpers import tile_pixels

from tokcomp_edge.core.ort_session import ort_session


def _grid(x: torch.Tensor) -> torch.Tensor:
    b, n, c = x.shape
    s = int(n ** 0.5)
    return x.transpose(1, 2).reshape(b, c, s, s)


def _tokens(g: torch.Tensor) -> torch.Tensor:
    return g.flatten(2).transpose(1, 2)


def _run(res, x):
    sess = ort_session(res.path / "model.onnx")
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, {"pixel_values": x.numpy()})))


def _close(got, want):
    want = want.detach().numpy() if isinstance(want, torch.Tensor) else want
    scale = float(np.abs(want).max())
    assert scale > 1e-3
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 + 1e-4 * scale)


def _tower(model, x, **kw):
    with torch.no_grad():
        return model.model.vision_tower(pixel_values=x, **kw)


def test_llava_pool2_is_projector_of_averaged_patch_grid(vlm_folder, vlm_bundle):
    _, model = vlm_folder("llava")
    res = vlm_bundle("llava", "pool:2")
    assert res.manifest["vlm"]["arithmetic"] == "65 → drop CLS → 64 → pool:2 → 16 → mlp → 16 × 48"
    x = tile_pixels(2, seed=5)
    feats = _tower(model, x, output_hidden_states=True).hidden_states[-2][:, 1:]
    with torch.no_grad():
        want = model.model.multi_modal_projector(_tokens(F.avg_pool2d(_grid(feats), 2)))
    _close(_run(res, x)["tokens"], want)


def test_llava_prune_by_norm_keeps_grid_order_and_indices(vlm_folder, vlm_bundle):
    _, model = vlm_folder("llava")
    res = vlm_bundle("llava", "prune:20:norm")
    x = tile_pixels(2, seed=6)
    feats = _tower(model, x, output_hidden_states=True).hidden_states[-2][:, 1:]
    idx = torch.sort(torch.topk(feats.norm(dim=-1), 20, dim=1).indices, dim=1).values
    kept = torch.stack([feats[b, idx[b]] for b in range(2)])
    with torch.no_grad():
        want = model.model.multi_modal_projector(kept)
    out = _run(res, x)
    np.testing.assert_array_equal(out["indices"], idx.numpy())
    _close(out["tokens"], want)


def test_internvl_pool2_then_its_pixel_shuffle(vlm_folder, vlm_bundle):
    _, model = vlm_folder("internvl")
    res = vlm_bundle("internvl", "pool:2")
    x = tile_pixels(2, seed=7)
    feats = _tower(model, x).last_hidden_state[:, 1:]
    pooled = _tokens(F.avg_pool2d(_grid(feats), 2))  # 4x4
    with torch.no_grad():
        shuffled = model.model.pixel_shuffle(pooled.reshape(2, 4, 4, -1), scale_factor=0.5).reshape(2, 4, -1)
        want = model.model.multi_modal_projector(shuffled)
    assert res.manifest["tokens_out"] == 4
    _close(_run(res, x)["tokens"], want)


def test_smolvlm_pool2_then_its_connector(vlm_folder, vlm_bundle):
    _, model = vlm_folder("smolvlm")
    res = vlm_bundle("smolvlm", "pool:2")
    x = tile_pixels(1, seed=8)
    with torch.no_grad():
        feats = model.model.vision_model(pixel_values=x).last_hidden_state
        want = model.model.connector(_tokens(F.avg_pool2d(_grid(feats), 2)).contiguous())  # its shuffle infers 4x4
    _close(_run(res, x)["tokens"], want)


def test_gemma3_bilinear_then_its_pooling_norm_and_projection(vlm_folder, vlm_bundle):
    _, model = vlm_folder("gemma3")
    res = vlm_bundle("gemma3", "bilinear:4x4")
    assert res.manifest["vlm"]["arithmetic"] == "64 → bilinear:4x4 → 16 → avg pool 2×2 → 4 → rmsnorm+proj → 4 × 48"
    x = tile_pixels(2, seed=9)
    p = model.model.multi_modal_projector
    feats = _tower(model, x).last_hidden_state
    g = F.interpolate(_grid(feats), size=(4, 4), mode="bilinear", align_corners=False)
    with torch.no_grad():
        want = torch.matmul(p.mm_soft_emb_norm(_tokens(F.avg_pool2d(g, 2))), p.mm_input_projection_weight)
    _close(_run(res, x)["tokens"], want)


def test_onevision_video_pooling_is_our_bilinear_spec():
    """LLaVA-OneVision's apply_pooling (video frames) is bilinear to ⌈h/2⌉×⌈w/2⌉: `bilinear:14x14` on 27×27."""
    import transformers as T

    from tokcomp_edge.compression.functional import bilinear_tokens

    cfg = T.LlavaOnevisionConfig(vision_config=dict(model_type="siglip_vision_model", image_size=378, patch_size=14,
                                                    hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                                    intermediate_size=32),
                                 text_config=dict(model_type="qwen2", hidden_size=16, num_hidden_layers=1,
                                                  num_attention_heads=2, num_key_value_heads=1,
                                                  intermediate_size=32, vocab_size=64))
    with torch.device("meta"):
        model = T.LlavaOnevisionModel(cfg)
    x = torch.randn(2, 27 * 27, 16)
    want = model.apply_pooling(x)
    assert want.shape == (2, 196, 16)
    torch.testing.assert_close(bilinear_tokens(x, 27, 27, 14, 14), want, rtol=0, atol=1e-6)


@pytest.mark.parametrize("family,tokens,dim", [("internvl", 16, 128), ("gemma3", 64, 32), ("llava", 64, 32)])
def test_no_projector_stops_where_the_projector_module_starts(vlm_folder, vlm_bundle, family, tokens, dim):
    _, model = vlm_folder(family)
    res = vlm_bundle(family, projector=False)
    assert res.manifest["vlm"]["projector"] is False and res.manifest["dim_out"] == dim
    x = tile_pixels(1, seed=10)
    proj = model.model.multi_modal_projector
    seen = {}
    hook = proj.register_forward_hook(lambda m, i, o: seen.__setitem__("in", i[0]))
    try:
        from vlm_helpers import hf_features

        hf_features(model, family, x)
    finally:
        hook.remove()
    assert seen["in"].shape == (1, tokens, dim)
    _close(_run(res, x)["tokens"], seen["in"])


def test_onevision_video_path_equals_get_video_features(vlm_folder, vlm_bundle):
    """--video: per frame, tower → projector → apply_pooling (bilinear ⌈h/2⌉×⌈w/2⌉), as get_video_features."""
    _, model = vlm_folder("llava_onevision")
    res = vlm_bundle("llava_onevision", video=True)
    assert res.manifest["vlm"]["arithmetic"] == "64 → mlp → 64 → video pooling bilinear 4x4 → 16 × 48"
    frames = tile_pixels(3, seed=11)
    with torch.no_grad():
        out = model.get_video_features(frames.unsqueeze(0)).pooler_output  # [1, F·16 + newline, 48]
    want = out[0, :-1].reshape(3, 16, 48)
    _close(_run(res, frames)["tokens"], want)

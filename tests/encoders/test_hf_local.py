"""hf:<local dir>: HF checkpoint folders written by save_pretrained (nothing is downloaded)."""

from __future__ import annotations

import json

import pytest
import torch

from tokcomp_edge.encoders import EncoderConfig, build_encoder, resolve_spec
from tokcomp_edge.errors import InputError, WeightsError


def run(enc, x):
    with torch.no_grad():
        return enc.tower(x)[0]


def test_vit_folder_with_processor(pixels, tmp_path):
    src = build_encoder(EncoderConfig("tiny-vit", seed=3))
    src.tower.hf.save_pretrained(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(
        {"image_mean": [0.1, 0.2, 0.3], "image_std": [0.4, 0.5, 0.6], "size": {"height": 224, "width": 224}}))
    enc = build_encoder(EncoderConfig(f"hf:{tmp_path}", layer=-2))
    assert enc.spec.source == "hf-local" and enc.spec.family == "vit"
    assert enc.spec.mean == (0.1, 0.2, 0.3) and enc.spec.std == (0.4, 0.5, 0.6)
    assert enc.weights.kind == "file" and enc.weights.path == str(tmp_path / "model.safetensors")
    ref = build_encoder(EncoderConfig("tiny-vit", seed=3, layer=-2))
    x = pixels()
    torch.testing.assert_close(run(enc, x), run(ref, x), rtol=0, atol=0)
    # the spec alone is JSON work
    assert resolve_spec(f"hf:{tmp_path}").grid == (14, 14)


def test_full_clip_folder_takes_vision_tower(pixels, tmp_path):
    from transformers import CLIPConfig, CLIPModel

    vision = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64,
                  patch_size=16, image_size=64)
    text = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, vocab_size=99)
    torch.manual_seed(0)
    full = CLIPModel(CLIPConfig(text_config=text, vision_config=vision)).eval()
    full.save_pretrained(tmp_path)
    enc = build_encoder(EncoderConfig(f"hf:{tmp_path}"))
    spec = enc.spec
    assert (spec.family, spec.patch_size, spec.grid, spec.num_layers, spec.prefix_tokens) == ("clip", 16, (4, 4), 3, 1)
    assert spec.mean[0] == pytest.approx(0.48145466)  # family default: the folder has no processor config
    x = pixels(size=64)
    with torch.no_grad():
        want = full.vision_model(pixel_values=x).last_hidden_state
    torch.testing.assert_close(run(enc, x), want, rtol=0, atol=1e-6)


def test_folder_without_weights_is_random_with_seed(pixels, tmp_path):
    src = build_encoder(EncoderConfig("tiny-siglip"))
    src.tower.hf.config.save_pretrained(tmp_path)  # config.json only
    enc = build_encoder(EncoderConfig(f"hf:{tmp_path}", seed=9))
    assert enc.weights.kind == "random" and enc.weights.seed == 9
    assert "NOT trained" in enc.weights.describe()
    same = build_encoder(EncoderConfig("tiny-siglip", seed=9))
    x = pixels()
    torch.testing.assert_close(run(enc, x), run(same, x), rtol=0, atol=0)


def test_weights_flag_overrides_folder_and_bin_is_read(pixels, tmp_path):
    folder = tmp_path / "ck"
    a = build_encoder(EncoderConfig("tiny-dinov2", seed=1))
    a.tower.hf.config.save_pretrained(folder)
    torch.save(a.tower.hf.state_dict(), folder / "pytorch_model.bin")
    enc = build_encoder(EncoderConfig(f"hf:{folder}"))
    assert enc.weights.path == str(folder / "pytorch_model.bin")
    x = pixels()
    torch.testing.assert_close(run(enc, x), run(a, x), rtol=0, atol=0)
    b = build_encoder(EncoderConfig("tiny-dinov2", seed=2))
    torch.save(b.tower.hf.state_dict(), tmp_path / "other.pt")
    enc = build_encoder(EncoderConfig(f"hf:{folder}", weights=tmp_path / "other.pt"))
    assert enc.weights.path == str(tmp_path / "other.pt")
    torch.testing.assert_close(run(enc, x), run(b, x), rtol=0, atol=0)


def test_bad_folders(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        resolve_spec(f"hf:{tmp_path / 'missing'}")
    with pytest.raises(InputError, match="no config.json"):
        resolve_spec(f"hf:{tmp_path}")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 64}))
    with pytest.raises(InputError, match=r"model_type 'bert'") as ei:
        resolve_spec(f"hf:{tmp_path}")
    assert "dinov2_with_registers" in ei.value.hint
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(InputError, match="cannot be read as JSON"):
        resolve_spec(f"hf:{tmp_path}")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "clip_vision_model", "hidden_size": 65,
                                                      "num_attention_heads": 4}))
    with pytest.raises(InputError, match="invalid"):
        resolve_spec(f"hf:{tmp_path}")


def test_corrupt_folder_weights(tmp_path):
    build_encoder(EncoderConfig("tiny-vit")).tower.hf.config.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"garbage" * 10)
    with pytest.raises(WeightsError, match="model.safetensors"):
        build_encoder(EncoderConfig(f"hf:{tmp_path}"))


def test_plain_dinov2_folder_matches_hf(pixels, tmp_path):
    """Dinov2Model (no registers) is reached through hf: folders; check layers, CLS attention, resampling."""
    from transformers import Dinov2Config, Dinov2Model

    cfg = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, patch_size=16, image_size=64)
    torch.manual_seed(0)
    ref = Dinov2Model(Dinov2Config(**cfg, attn_implementation="eager")).eval()
    ref.save_pretrained(tmp_path)
    x = pixels(size=64)
    with torch.no_grad():
        out = ref(pixel_values=x, output_hidden_states=True, output_attentions=True)
        last = build_encoder(EncoderConfig(f"hf:{tmp_path}"))
        assert (last.spec.family, last.spec.prefix_tokens, last.spec.has_cls) == ("dinov2", 1, True)
        y, attn = last.tower(x, with_cls_attention=True)
        torch.testing.assert_close(y, out.last_hidden_state, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(attn, out.attentions[-1][:, :, 0].mean(1), rtol=1e-5, atol=1e-6)
        first = build_encoder(EncoderConfig(f"hf:{tmp_path}", layer=1))
        torch.testing.assert_close(first.tower(x)[0], out.hidden_states[1], rtol=1e-5, atol=1e-5)
        # weights at 64 px (4x4) into a 96 px tower (6x6) == HF interpolating at every forward
        big = build_encoder(EncoderConfig(f"hf:{tmp_path}", image_size=96))
        xb = pixels(size=96)
        torch.testing.assert_close(big.tower(xb)[0], ref(pixel_values=xb).last_hidden_state, rtol=1e-5, atol=1e-5)

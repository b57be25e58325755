"""Weight files: round trips, checkpoint layouts, position-grid resampling, and every refusal."""

from __future__ import annotations

import builtins
import hashlib

import pytest
import torch
from safetensors.torch import save_file

from tokcomp_edge.encoders import EncoderConfig, build_encoder, load_state_dict
from tokcomp_edge.encoders.hf_towers import build_hf_model
from tokcomp_edge.errors import WeightsError

TINY = ["tiny-clip", "tiny-siglip", "tiny-dinov2", "tiny-vit"]


def run(enc, x):
    with torch.no_grad():
        return enc.tower(x)[0]


@pytest.mark.parametrize("name", TINY + ["timm:test_vit"])
def test_safetensors_round_trip(name, pixels, tmp_path):
    src = build_encoder(EncoderConfig(name, seed=1))
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in src.tower.core.state_dict().items()}, str(path))
    got = build_encoder(EncoderConfig(name, seed=2, weights=path))
    x = pixels(size=src.spec.image_size[0])
    assert not torch.equal(run(build_encoder(EncoderConfig(name, seed=2)), x), run(src, x))
    torch.testing.assert_close(run(got, x), run(src, x), rtol=0, atol=0)
    assert got.weights.kind == "file" and got.weights.path == str(path)
    assert got.weights.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("wrap", [None, "state_dict", "model"])
def test_torch_save_round_trip(wrap, pixels, tmp_path):
    src = build_encoder(EncoderConfig("tiny-dinov2", seed=3))
    sd = src.tower.core.state_dict()
    obj = sd if wrap is None else {wrap: sd, "epoch": 7}
    path = tmp_path / "w.pt"
    torch.save(obj, path)
    got = build_encoder(EncoderConfig("tiny-dinov2", seed=4, weights=path))
    x = pixels()
    torch.testing.assert_close(run(got, x), run(src, x), rtol=0, atol=0)


@pytest.mark.parametrize("family", ["clip", "siglip"])
def test_full_two_tower_checkpoint_takes_vision_subset(family, pixels, tmp_path):
    import transformers

    name = f"tiny-{family}"
    spec = build_encoder(EncoderConfig(name)).spec
    cls = {"clip": ("CLIPConfig", "CLIPModel"), "siglip": ("SiglipConfig", "SiglipModel")}[family]
    text = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, vocab_size=99)
    vision = dict(spec.config["hf"])
    vision.pop("vision_use_head", None)  # a real SigLIP checkpoint carries the pooling head: it is dropped
    torch.manual_seed(11)
    full = getattr(transformers, cls[1])(getattr(transformers, cls[0])(text_config=text, vision_config=vision)).eval()
    sd = full.state_dict()
    assert any(k.startswith("text_model.") for k in sd) and any(k.startswith("vision_model.") for k in sd)
    path = tmp_path / "full.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    got = build_encoder(EncoderConfig(name, weights=path))
    x = pixels()
    with torch.no_grad():
        want = full.vision_model(pixel_values=x).last_hidden_state
    torch.testing.assert_close(run(got, x), want, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["tiny-vit", "tiny-dinov2"])
def test_pre_v5_key_names_load(name, pixels, tmp_path):
    """save_pretrained writes the classic names (encoder.layer.N.attention.attention.query …)."""
    src = build_encoder(EncoderConfig(name, seed=5))
    src.tower.hf.save_pretrained(tmp_path)
    from safetensors.torch import load_file

    keys = list(load_file(str(tmp_path / "model.safetensors")))
    assert any(".attention.attention." in k for k in keys)  # really the old layout
    got = build_encoder(EncoderConfig(name, weights=tmp_path / "model.safetensors"))
    x = pixels()
    torch.testing.assert_close(run(got, x), run(src, x), rtol=0, atol=0)


@pytest.mark.parametrize("name", TINY)
def test_position_table_resampled_like_hf_interpolation(name, pixels, tmp_path):
    """Weights trained at 224 into a 160 px tower == HF's interpolate_pos_encoding at every forward."""
    src = build_encoder(EncoderConfig(name, seed=6))
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in src.tower.core.state_dict().items()}, str(path))
    got = build_encoder(EncoderConfig(name, image_size=160, weights=path))
    x = pixels(size=160)
    ref = build_hf_model(src.spec.config["model_type"], src.spec.config["hf"])
    ref.load_state_dict(src.tower.hf.state_dict())
    kwargs = {} if "dinov2" in name else {"interpolate_pos_encoding": True}
    with torch.no_grad():
        want = ref.eval()(pixel_values=x, **kwargs).last_hidden_state
    assert got.spec.grid == (10, 10)
    torch.testing.assert_close(run(got, x), want, rtol=1e-5, atol=1e-5)


class _Payload:
    """Unpickling this calls open(marker, "w"), i.e. creates a file: arbitrary code from a checkpoint."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (builtins.open, (self.marker, "w"))


def test_pickle_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    sd = build_encoder(EncoderConfig("tiny-vit")).tower.core.state_dict()
    torch.save({**sd, "x": _Payload(marker)}, path)
    with pytest.raises(WeightsError, match="run code") as ei:
        build_encoder(EncoderConfig("tiny-vit", weights=path))
    assert ei.value.exit_code == 2
    assert not marker.exists()
    # the payload is live: an unrestricted load would have created the file
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        load_state_dict(tmp_path / "nope.safetensors")
    junk = b"\x00\x01 not a checkpoint " * 50
    for name in ("junk.safetensors", "junk.pt", "junk.bin"):
        (tmp_path / name).write_bytes(junk)
        with pytest.raises(WeightsError, match="junk"):
            load_state_dict(tmp_path / name)
    good = tmp_path / "good.safetensors"
    save_file({"a": torch.zeros(1000)}, str(good))
    (tmp_path / "cut.safetensors").write_bytes(good.read_bytes()[:-100])
    with pytest.raises(WeightsError, match="not a readable safetensors"):
        load_state_dict(tmp_path / "cut.safetensors")
    torch.save([torch.zeros(2)], tmp_path / "list.pt")
    with pytest.raises(WeightsError, match="not a dict of tensors"):
        load_state_dict(tmp_path / "list.pt")
    torch.save({"epoch": 3}, tmp_path / "meta.pt")
    with pytest.raises(WeightsError, match="no tensors"):
        load_state_dict(tmp_path / "meta.pt")


def test_wrong_keys_and_shapes_are_named(tmp_path):
    sd = build_encoder(EncoderConfig("tiny-vit")).tower.core.state_dict()
    missing = {k: v for k, v in sd.items() if k != "layernorm.weight"}
    extra = {**sd, "bogus.weight": torch.zeros(3)}
    shaped = {**sd, "layers.0.mlp.fc1.weight": torch.zeros(5, 64)}
    cases = [(missing, r"1 missing: layernorm\.weight"), (extra, r"1 unexpected: bogus\.weight"),
             (shaped, r"wrong shape .*layers\.0\.mlp\.fc1\.weight \(5, 64\) vs \(128, 64\)")]
    for i, (d, pattern) in enumerate(cases):
        path = tmp_path / f"w{i}.safetensors"
        save_file({k: v.contiguous() for k, v in d.items()}, str(path))
        with pytest.raises(WeightsError, match=pattern):
            build_encoder(EncoderConfig("tiny-vit", weights=path))


def test_other_family_weights_are_refused_with_names(tmp_path):
    for src, pattern in [
        ("tiny-siglip", r"does not fit tiny-clip: 3 missing: embeddings\.class_embedding.*1 unexpected: "
                        r"embeddings\.patch_embedding\.bias.*wrong shape.*\(196, 64\) vs \(197, 64\)"),
        # many names: the first few are shown, the rest counted
        ("tiny-vit", r"does not fit tiny-clip: \d+ missing: [^;]*\(\+\d+ more\); \d+ unexpected"),
    ]:
        sd = build_encoder(EncoderConfig(src)).tower.core.state_dict()
        path = tmp_path / f"{src}.safetensors"
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
        with pytest.raises(WeightsError, match=pattern):
            build_encoder(EncoderConfig("tiny-clip", weights=path))

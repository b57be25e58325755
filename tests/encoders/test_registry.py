"""Model ids, specs without building, determinism of random init, and the input errors."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from tokcomp_edge.encoders import EncoderConfig, build_encoder, list_presets, resolve_spec
from tokcomp_edge.errors import InputError, UnknownModelError

REAL = {
    # name: (grid, prefix, hidden, layers, heads, mean[0])
    "clip-b16-224": ((14, 14), 1, 768, 12, 12, 0.48145466),
    "clip-l14-336": ((24, 24), 1, 1024, 24, 16, 0.48145466),
    "siglip-b16-224": ((14, 14), 0, 768, 12, 12, 0.5),
    "siglip-so400m-14-384": ((27, 27), 0, 1152, 27, 16, 0.5),
    "dinov2-s14-224": ((16, 16), 1, 384, 12, 6, 0.485),
    "dinov2-s14-reg-224": ((16, 16), 5, 384, 12, 6, 0.485),
    "vit-b16-224": ((14, 14), 1, 768, 12, 12, 0.5),
}


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_preset_specs(name):
    grid, prefix, hidden, layers, heads, mean0 = REAL[name]
    spec = resolve_spec(name)
    assert (spec.grid, spec.prefix_tokens, spec.hidden_size, spec.num_layers, spec.num_heads) == (
        grid, prefix, hidden, layers, heads)
    assert spec.mean[0] == pytest.approx(mean0)
    assert spec.source == "transformers" and spec.config["checkpoint"]


def test_so400m_hyperparameters():
    hf = resolve_spec("siglip-so400m-14-384").config["hf"]
    assert (hf["hidden_size"], hf["num_hidden_layers"], hf["num_attention_heads"], hf["intermediate_size"],
            hf["patch_size"], hf["image_size"]) == (1152, 27, 16, 4304, 14, 384)


def test_default_prefix_table():
    got = {s.name: s.default_prefix for s in list_presets()}
    assert got["clip-l14-336"] == "drop" and got["siglip-b16-224"] == "drop"
    assert got["dinov2-s14-reg-224"] == "drop" and got["vit-b16-224"] == "keep"


def test_list_presets_real_first_tiny_last():
    names = [s.name for s in list_presets()]
    assert set(REAL) | {"tiny-clip", "tiny-siglip", "tiny-dinov2", "tiny-vit"} == set(names)
    first_tiny = min(i for i, n in enumerate(names) if n.startswith("tiny-"))
    assert all(n.startswith("tiny-") for n in names[first_tiny:])
    assert all(not n.startswith("tiny-") for n in names[:first_tiny])


def test_resolve_spec_builds_nothing():
    code = ("import sys; import tokcomp_edge.encoders as E; "
            "s = E.resolve_spec('clip-l14-336'); E.list_presets(); E.resolve_spec('tiny-dinov2', 256); "
            "assert s.grid == (24, 24); "
            "heavy = [m for m in ('torch', 'transformers', 'timm') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_image_size_override_and_errors():
    assert resolve_spec("dinov2-s14-224", image_size=336).grid == (24, 24)
    with pytest.raises(InputError, match=r"image size 230 .* multiple of its patch size 14") as ei:
        resolve_spec("dinov2-s14-224", image_size=230)
    assert "224" in ei.value.hint and "238" in ei.value.hint
    for bad in (0, -16, 22.4):
        with pytest.raises(InputError):
            build_encoder(EncoderConfig("tiny-vit", image_size=bad))


def test_unknown_model_lists_presets_and_forms():
    with pytest.raises(UnknownModelError) as ei:
        resolve_spec("clip-b99")
    err = ei.value
    assert err.exit_code == 2 and "clip-b99" in err.message
    for part in ("clip-l14-336", "tiny-vit", "timm:<name>", "hf:<local dir>", "py:<module>:<factory>"):
        assert part in err.hint
    with pytest.raises(InputError, match="after the colon"):
        resolve_spec("timm:")


@pytest.mark.parametrize("layer", [3, -3, 0, 99])
def test_layer_out_of_range(layer):
    with pytest.raises(InputError, match="has 2 layers") as ei:
        build_encoder(EncoderConfig("tiny-clip", layer=layer))
    assert "-2..-1" in ei.value.hint


def _params(enc):
    return [p.detach().clone() for p in enc.tower.parameters()]


@pytest.mark.parametrize("name", ["tiny-clip", "tiny-siglip", "tiny-dinov2", "tiny-vit", "timm:test_vit"])
def test_seeded_init_is_deterministic(name):
    a = _params(build_encoder(EncoderConfig(name, seed=7)))
    b = _params(build_encoder(EncoderConfig(name, seed=7)))
    c = _params(build_encoder(EncoderConfig(name, seed=8)))
    assert len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))
    # every randomly initialised tensor differs with another seed (constants such as norms do not)
    differ = sum(not torch.equal(x, z) for x, z in zip(a, c))
    random_like = sum(x.numel() > 1 and x.std() > 0 for x in a)
    assert differ >= random_like > 0


def test_build_leaves_caller_rng_alone():
    torch.manual_seed(123)
    want = torch.rand(3)
    torch.manual_seed(123)
    build_encoder(EncoderConfig("tiny-vit", seed=5))
    assert torch.equal(torch.rand(3), want)

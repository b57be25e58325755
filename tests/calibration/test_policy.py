"""Preprocessing policies (image_policy.py): derivation per family, preprocessor_config.json, the
manifest round trip, and the legacy fallback for bundles exported before policies existed."""

import numpy as np
import pytest
from PIL import Image

from tokcomp_edge.calibration.images import load_images
from tokcomp_edge.image_policy import FAMILY_RULES, PreprocessPolicy, policy_for, policy_for_spec
from tokcomp_edge.encoders import resolve_spec
from tokcomp_edge.errors import BundleError, InputError

HALF = (0.5, 0.5, 0.5)


@pytest.mark.parametrize("preset, rule", [
    ("clip-b16-224", ("CLIPImageProcessor", "shortest_edge", 224, "bicubic", (224, 224))),
    ("clip-l14-336", ("CLIPImageProcessor", "shortest_edge", 336, "bicubic", (336, 336))),
    ("siglip-b16-224", ("SiglipImageProcessor", "square", (224, 224), "bicubic", None)),
    ("siglip-so400m-14-384", ("SiglipImageProcessor", "square", (384, 384), "bicubic", None)),
    ("dinov2-s14-224", ("BitImageProcessor", "shortest_edge", 256, "bicubic", (224, 224))),
    ("vit-b16-224", ("ViTImageProcessor", "square", (224, 224), "bilinear", None)),
])
def test_family_policies(preset, rule):
    p = policy_for_spec(resolve_spec(preset))
    assert (p.processor, p.resize, p.resize_size, p.interpolation, p.crop) == rule
    assert p.rescale_factor == pytest.approx(1 / 255) and not p.legacy


def test_other_export_sizes_keep_the_framing():
    # DINOv2's 256 → 224 margin, and CLIP's crop, follow --image-size.
    assert policy_for_spec(resolve_spec("dinov2-s14-224", image_size=448)).resize_size == 512
    p = policy_for_spec(resolve_spec("clip-b16-224", image_size=336))
    assert (p.resize_size, p.crop) == (336, (336, 336))


def test_timm_follows_its_eval_transform():
    pytest.importorskip("timm")
    p = policy_for("timm", (224, 224), HALF, HALF, timm_name="vit_base_patch16_siglip_224")
    assert (p.resize, p.resize_size, p.crop, p.interpolation) == ("shortest_edge", 248, (224, 224), "bicubic")
    assert "crop_pct 0.9" in p.processor


def test_timm_transform_matches_timm_itself():
    timm = pytest.importorskip("timm")
    from pathlib import Path

    from timm.data import create_transform, resolve_data_config

    name = "vit_base_patch16_siglip_224"
    model = timm.create_model(name, pretrained=False, num_classes=0)
    transform = create_transform(**resolve_data_config({}, model=model))
    photos = sorted((Path(__file__).parent / "photos").glob("*.jpg"))
    p = policy_for("timm", (224, 224), HALF, HALF, timm_name=name)
    ours = load_images(photos, p).pixel_values
    ref = np.stack([transform(Image.open(f).convert("RGB")).numpy() for f in photos])
    assert np.abs(ours - ref).max() * 0.5 < 1e-5


def test_unknown_family_says_it_falls_back():
    p = policy_for("user", (224, 224), HALF, HALF)
    # the old framing, recorded as this bundle's policy (no "re-export" warning: it would not change)
    assert (p.processor, p.resize, p.legacy) == ("generic", "cover", False) and "no processor known" in p.source


def test_processor_config_overrides_and_scales():
    base = ("clip", (336, 336), HALF, HALF)
    p = policy_for(*base, {"size": {"shortest_edge": 224}, "crop_size": 224, "resample": 2, "do_center_crop": True})
    assert (p.resize_size, p.crop, p.interpolation) == (336, (336, 336), "bilinear")
    assert "scaled from 224x224" in p.source
    # old-style int sizes: CLIP reads an int as the shortest edge, SigLIP as a square
    assert policy_for("clip", (224, 224), HALF, HALF, {"size": 224, "crop_size": 224}).resize == "shortest_edge"
    assert policy_for("siglip", (224, 224), HALF, HALF, {"size": 224}).resize_size == (224, 224)
    assert policy_for("siglip", (224, 224), HALF, HALF, {"do_rescale": False}).rescale_factor == 1.0
    with pytest.raises(InputError, match="resample 9"):
        policy_for(*base, {"resample": 9})
    with pytest.raises(InputError, match="without a centre crop"):
        policy_for("clip", (224, 224), HALF, HALF, {"do_center_crop": False})


def test_manifest_round_trip_and_legacy():
    p = policy_for_spec(resolve_spec("dinov2-s14-224"))
    manifest = {"encoder": {"image_size": [224, 224], "mean": list(p.mean), "std": list(p.std)},
                "preprocess": {"image_size": [224, 224], "mean": list(p.mean), "std": list(p.std),
                               "layout": "NCHW", **p.to_dict()}}
    assert PreprocessPolicy.from_manifest(manifest) == p
    # a bundle from before policies: today's shorter side + centre crop, and it says so
    del manifest["preprocess"]["resize"]
    old = PreprocessPolicy.from_manifest(manifest)
    assert old.legacy and old.resize == "cover" and "exported before policies" in old.source
    manifest["preprocess"].update(resize="tiles", interpolation="bicubic")
    with pytest.raises(BundleError, match="'tiles'"):
        PreprocessPolicy.from_manifest(manifest)


def test_exported_manifest_records_the_policy(exported):
    import json

    pre = json.loads((exported / "manifest.json").read_text())["preprocess"]
    # the keys old readers use stay, the policy is added next to them
    assert {"image_size", "mean", "std", "layout", "range"} <= set(pre)
    assert (pre["processor"], pre["resize"], pre["resize_size"], pre["crop"], pre["interpolation"]) == \
        ("CLIPImageProcessor", "shortest_edge", 224, [224, 224], "bicubic")
    assert pre["policy_source"] == "clip family default (CLIPImageProcessor)"


def test_every_family_rule_is_applicable():
    for family, rule in FAMILY_RULES.items():
        p = policy_for(family, (224, 224), HALF, HALF)
        arr = np.zeros((100, 300, 3), np.uint8)
        from tokcomp_edge.calibration.images import frame

        assert frame(Image.fromarray(arr), p).shape == (224, 224, 3), (family, rule)

"""visionzip and tome through a VLM's vision path (`hf:<LLaVA folder>`): the method at the VLM's feature layer, then the
VLM's projector — computed independently from transformers' eager attention; refused before a grid transform."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from vlm_helpers import run_main, save_vlm, tile_pixels

from tokcomp_edge.core.ort_session import ort_session

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "compression"))
from visionzip_reference import visionzip_reference  # noqa: E402


def test_llava_visionzip_is_projector_of_visionzip_tokens(vlm_folder, vlm_bundle):
    _, model = vlm_folder("llava")
    res = vlm_bundle("llava", "visionzip:20:6")
    assert res.manifest["vlm"]["arithmetic"] == "65 → drop CLS → 64 → visionzip:20:6 → 26 → mlp → 26 × 48"
    tower = model.model.vision_tower
    tower.set_attn_implementation("eager")
    layers = tower.encoder.layers
    idx = len(layers) - 2  # vision_feature_layer −2: the output of this block, its attention and keys
    seen = []
    hook = layers[idx].self_attn.k_proj.register_forward_hook(lambda m, a, out: seen.append(out))
    x = tile_pixels(2, seed=8)
    try:
        with torch.no_grad():
            out = tower(pixel_values=x, output_hidden_states=True, output_attentions=True)
    finally:
        hook.remove()
        tower.set_attn_implementation("sdpa")
    feats = out.hidden_states[-2]
    probs = out.attentions[idx]
    k = seen[0]
    b, t, c = k.shape
    heads = tower.config.num_attention_heads
    keys = k.reshape(b, t, heads, c // heads).mean(axis=2)
    cls_sum = probs[:, :, 0, :].sum(dim=1)  # VisionZip: CLS row summed over heads
    want, want_idx, want_map = visionzip_reference(feats[:, 1:].numpy(), cls_sum[:, 1:].numpy(),
                                                   keys[:, 1:].numpy(), 20, 6)
    with torch.no_grad():
        projected = model.model.multi_modal_projector(torch.from_numpy(want).float())
    sess = ort_session(res.path / "model.onnx")
    names = [o.name for o in sess.get_outputs()]
    assert names == ["tokens", "indices", "merge_map"]
    got = dict(zip(names, sess.run(names, {"pixel_values": x.numpy()})))
    np.testing.assert_array_equal(got["indices"], want_idx)
    np.testing.assert_array_equal(got["merge_map"], want_map)
    scale = float(projected.abs().max())
    np.testing.assert_allclose(got["tokens"], projected.numpy(), rtol=0, atol=1e-4 + 1e-4 * scale)


@pytest.mark.parametrize("argv,needle", [
    (["tiny-internvl", "--compress", "visionzip:12:4"], "keeps 16 scattered tokens, but tiny-internvl applies a pixel shuffle"),
    (["tiny-gemma3", "--compress", "visionzip:6:2"], "avg pool 2×2 that needs a full grid"),
])
def test_visionzip_refused_before_a_grid_transform(capsys, tmp_path, argv, needle):
    code, _, err = run_main(capsys, "export", *argv, "--out", tmp_path / "b")
    assert code == 2 and needle.lower() in err.lower()
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("family", ["internvl", "idefics3", "smolvlm"])
def test_attention_probe_of_vlm_towers_matches_eager(vlm_folder, family):
    """InternViT (q/k norms, LayerScale) and the Idefics3/SmolVLM SigLIP towers: the probe VisionZip reads
    equals transformers' own eager attention of the last block the tower runs."""
    from tokcomp_edge.vlm import load_vlm

    folder, model = vlm_folder(family)
    tower = load_vlm(f"hf:{folder}").tower.eval()
    hf = model.model.vision_tower if hasattr(model.model, "vision_tower") else model.model.vision_model
    hf.set_attn_implementation("eager")
    x = tile_pixels(2, seed=9, size=tower.spec.image_size[0])
    idx = tower.num_used - 1
    try:
        with torch.no_grad():
            atts = hf(pixel_values=x, output_attentions=True).attentions
            _, (importance, keys) = tower(x, with_probe=True)
    finally:
        hf.set_attn_implementation("sdpa")
    probs = atts[idx]
    want = probs[:, :, 0, :].mean(dim=1) if tower.spec.has_cls else probs.mean(dim=(1, 2))
    torch.testing.assert_close(importance, want, rtol=1e-5, atol=1e-6)
    assert keys.shape == (2, importance.shape[1], tower.spec.hidden_size // tower.spec.num_heads)


def test_llava_tome_through_the_vlm_path(vlm_folder, vlm_bundle):
    """tome inside the tower at the VLM's feature layer (−2: the blocks it runs), then its projector."""
    from tokcomp_edge.vlm import load_vlm

    folder, model = vlm_folder("llava")
    res = vlm_bundle("llava", "tome:8")
    comp = res.manifest["compression"]
    loaded = load_vlm(f"hf:{folder}")
    tower = loaded.tower.eval()
    assert len(comp["schedule"]) == tower.num_used and comp["tokens_out"] == 64 - 8 * tower.num_used
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "compression"))
    from tome_reference import reference_for

    class Enc:  # what reference_for reads: the tower and its spec
        pass

    enc = Enc()
    enc.tower, enc.spec = tower, tower.spec
    x = tile_pixels(2, seed=10)
    want, sizes, mmap = reference_for(enc, x, tuple(comp["schedule"]))
    with torch.no_grad():
        projected = model.model.multi_modal_projector(want[:, 1:])  # LLaVA drops CLS
    sess = ort_session(res.path / "model.onnx")
    names = [o.name for o in sess.get_outputs()]
    got = dict(zip(names, sess.run(names, {"pixel_values": x.numpy()})))
    np.testing.assert_array_equal(got["merge_map"], (mmap - 1).numpy())
    np.testing.assert_allclose(got["sizes"], sizes[:, 1:].numpy())
    scale = float(projected.abs().max())
    np.testing.assert_allclose(got["tokens"], projected.numpy(), rtol=0, atol=1e-4 + 1e-4 * scale)


def test_tome_refused_before_pixel_shuffle(capsys, tmp_path):
    code, _, err = run_main(capsys, "export", "tiny-internvl", "--compress", "tome:4", "--out", tmp_path / "b")
    assert code == 2 and "scattered tokens, but tiny-internvl applies a pixel shuffle" in err


@pytest.mark.parametrize("family", ["paligemma"])
def test_tome_through_siglip_vlm_paths(vlm_folder, vlm_bundle, family):
    """SigLIP VLM towers without a grid transform take tome (no prefix, projector after the merge): parity,
    a clean lint, and sizes that count exactly the patches the map sends to each row. (LLaVA-OneVision packs
    its crops as grids: test_scattered_compression_refused_by_onevision.)"""
    res = vlm_bundle(family, "tome:4")
    assert res.parity.passed and res.lint_warnings == []
    comp = res.manifest["compression"]
    assert comp["tokens_out"] == 64 - 4 * len(comp["schedule"]) and res.manifest["vlm"]["family"] == family
    sess = ort_session(res.path / "model.onnx")
    names = [o.name for o in sess.get_outputs()]
    got = dict(zip(names, sess.run(names, {"pixel_values": tile_pixels(2, seed=11).numpy()})))
    assert names == ["tokens", "sizes", "merge_map"] and got["tokens"].shape[1] == comp["tokens_out"]
    counts = np.stack([np.bincount(m, minlength=comp["tokens_out"]) for m in got["merge_map"]])
    np.testing.assert_array_equal(counts, got["sizes"])


@pytest.mark.parametrize("compress", ["tome:4", "prune:16", "visionzip:8:4"])
def test_scattered_compression_refused_by_onevision(capsys, tmp_path, vlm_folder, compress):
    """pack_image_features unpads each crop's features as a grid and appends a newline token per row, so a
    compression that keeps scattered tokens has no grid to give it: one line, exit 2, nothing written."""
    folder, _ = vlm_folder("llava_onevision")
    code, _, err = run_main(capsys, "export", f"hf:{folder}", "--compress", compress, "--out", tmp_path / "b")
    assert code == 2 and "packs each crop's features as a grid" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("family,needle", [
    ("idefics3", "applies a pixel shuffle 2×2 that needs a full grid"),
    ("gemma3", "avg pool 2×2 that needs a full grid"),
])
def test_tome_refused_before_a_grid_transform(capsys, tmp_path, vlm_folder, family, needle):
    folder, _ = vlm_folder(family)
    code, _, err = run_main(capsys, "export", f"hf:{folder}", "--compress", "tome:4", "--out", tmp_path / "b")
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "b").exists()


def test_tome_on_the_internvit_tower(vlm_folder, tmp_path):
    """InternViT alone (`hf:<InternVLVisionModel folder>`): q/k norms over the full width and LayerScale as
    bare parameters; tome exports, passes parity and equals the independent ToMe. (Inside InternVL the pixel
    shuffle refuses it: test_tome_refused_before_pixel_shuffle.)"""
    from tokcomp_edge.encoders import EncoderConfig, build_encoder
    from tokcomp_edge.export import ExportConfig, export_bundle

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "compression"))
    from tome_reference import reference_for

    _, model = vlm_folder("internvl")
    folder = save_vlm(model.model.vision_tower, tmp_path / "internvit")
    res = export_bundle(ExportConfig(model=f"hf:{folder}", compress="tome:12,8,4", prefix="keep",
                                     out=tmp_path / "b", batch_max=4, quiet=True))
    assert res.parity.passed and res.lint_warnings == []
    enc = build_encoder(EncoderConfig(f"hf:{folder}"))
    x = tile_pixels(2, seed=12)
    want, sizes, mmap = reference_for(enc, x, (12, 8, 4))
    sess = ort_session(res.path / "model.onnx")
    names = [o.name for o in sess.get_outputs()]
    got = dict(zip(names, sess.run(names, {"pixel_values": x.numpy()})))
    np.testing.assert_array_equal(got["merge_map"], mmap.numpy())
    np.testing.assert_allclose(got["sizes"], sizes.numpy())
    np.testing.assert_allclose(got["tokens"], want.numpy(), rtol=1e-4, atol=1e-4)

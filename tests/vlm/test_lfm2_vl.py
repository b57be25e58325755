"""LFM2-VL (SigLIP2 NaFlex → pixel unshuffle → LayerNorm + MLP) at a static tile (issue 17, LFM2 part).

A tiny random Lfm2VlForConditionalGeneration saved with save_pretrained in 3+ shards → `hf:` export →
ONNX Runtime equals transformers' `get_image_features` for full images (spatial_shapes = the grid, every
patch valid) at batch 1 and 2, the patches flattened by transformers' own image processor code.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from vlm_helpers import build_lfm2_vl, run_main, save_vlm, tile_pixels

from tokcomp_edge.core.ort_session import ort_session

TILE = 128  # 8x8 patches of 16 from a 6x6 position table (upsampled), 4x4 = 16 tokens after the unshuffle
# The processor's limits written into the folder (the published ones, 64..256 tokens, start at 256 px).
PROCESSOR = dict(encoder_patch_size=16, downsample_factor=2, min_image_tokens=4, max_image_tokens=64,
                 tile_size=TILE, do_image_splitting=False)


@pytest.fixture(scope="module")
def lfm2(tmp_path_factory):
    """(folder, model): the tiny LFM2-VL saved in 3+ safetensors shards with its image processor config."""
    model = build_lfm2_vl(vision_layers=3)
    folder = save_vlm(model, tmp_path_factory.mktemp("lfm2") / "lfm2_vl", max_shard_size="100KB")
    (folder / "preprocessor_config.json").write_text(json.dumps(
        {"image_processor_type": "Lfm2VlImageProcessor", "image_mean": [0.5] * 3, "image_std": [0.5] * 3,
         "resample": 2, **PROCESSOR}))
    return folder, model


@pytest.fixture(scope="module")
def exported(lfm2, tmp_path_factory):
    from tokcomp_edge.export import ExportConfig, export_bundle

    folder, _ = lfm2
    root = tmp_path_factory.mktemp("lfm2_bundles")
    return {c: export_bundle(ExportConfig(model=f"hf:{folder}", compress=c, out=root / c.replace(":", "-"),
                                          batch_max=2, quiet=True)) for c in ("none", "pool:2")}


def _patches(x: torch.Tensor) -> torch.Tensor:
    """transformers' own flattening (Lfm2VlImageProcessor's convert_image_to_patches)."""
    from transformers.models.lfm2_vl.image_processing_lfm2_vl import convert_image_to_patches

    return convert_image_to_patches(x, 16)


def hf_image_features(model, x: torch.Tensor) -> torch.Tensor:
    """get_image_features for B full images [B, 3, H, W]: spatial_shapes = the grid, every patch valid."""
    b, _, h, w = x.shape
    patches = _patches(x)
    with torch.no_grad():
        out = model.model.get_image_features(
            pixel_values=patches, spatial_shapes=torch.tensor([[h // 16, w // 16]] * b),
            pixel_attention_mask=torch.ones(b, patches.shape[1], dtype=torch.long)).pooler_output
    return torch.stack(list(out))


def _close(got, want) -> None:
    want = np.asarray(want)
    scale = float(np.abs(want).max())
    assert scale > 1e-3, "the reference is (near) zero: the comparison would prove nothing"
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 + 1e-4 * scale)


def test_shards_and_manifest(lfm2, exported):
    folder, _ = lfm2
    assert len(list(folder.glob("model-*.safetensors"))) >= 3
    m = exported["none"].manifest
    v = m["vlm"]
    assert v["family"] == "lfm2_vl" and v["shuffle"] == 2 and v["final_norm"] is True
    assert v["arithmetic"] == "64 → pixel unshuffle 2×2 → 16 → layernorm+mlp → 16 × 48"
    assert m["encoder"]["image_size"] == [TILE, TILE] and m["encoder"]["weights"]["covers"] == "vision-path tensors"
    assert (m["tokens_out"], m["dim_out"]) == (16, 48)
    assert v["tile"]["tiles_per_request"] == 1  # the folder's processor has do_image_splitting false


def test_onnx_equals_get_image_features(lfm2, exported):
    _, model = lfm2
    sess = ort_session(exported["none"].path / "model.onnx")
    for batch in (1, 2):
        x = tile_pixels(batch, seed=batch, size=TILE)
        want = hf_image_features(model, x).numpy()
        (got,) = sess.run(["tokens"], {"pixel_values": x.numpy()})
        assert got.shape == want.shape == (batch, 16, 48)
        _close(got, want)


def test_pool2_equals_transformers_modules(lfm2, exported):
    """pool:2 = 2x2 average of the tower's 8x8 grid, then transformers' projector on the 4x4 grid."""
    _, model = lfm2
    inner = model.model
    sess = ort_session(exported["pool:2"].path / "model.onnx")
    x = tile_pixels(2, seed=5, size=TILE)
    b = x.shape[0]
    with torch.no_grad():
        hidden = inner.vision_tower(pixel_values=_patches(x), spatial_shapes=torch.tensor([[8, 8]] * b),
                                    pixel_attention_mask=torch.ones(b, 64, dtype=torch.long)).last_hidden_state
        grid = hidden.reshape(b, 8, 8, -1).permute(0, 3, 1, 2)
        pooled = torch.nn.functional.avg_pool2d(grid, 2).permute(0, 2, 3, 1)  # [B, 4, 4, C]
        want = inner.multi_modal_projector(pooled).reshape(b, 4, -1)
    (got,) = sess.run(["tokens"], {"pixel_values": x.numpy()})
    assert exported["pool:2"].manifest["tokens_out"] == 4
    _close(got, want.numpy())


def test_graph_has_no_data_dependent_or_resize_op(exported):
    """The NaFlex position resize is a constant MatMul: no antialiased Resize, no NonZero/Loop/If/Range."""
    import onnx

    for res in exported.values():
        ops = {n.op_type for n in onnx.load(str(res.path / "model.onnx")).graph.node}
        banned = ops & {"NonZero", "Loop", "If", "Range", "Resize", "Scan", "Unique", "TopK", "GatherND", "ScatterND"}
        assert not banned, banned


@pytest.mark.parametrize("tile", [(128, 96), (64, 128)])
def test_non_square_tile_equals_transformers(lfm2, tile):
    """--image-size HxW through the same path, in PyTorch: 8x6 patches (the 6x6 table upsampled in H only) and
    4x8 (downsampled in H: the antialiased case, where plain bilinear would differ)."""
    from tokcomp_edge.compression.spec import parse_spec
    from tokcomp_edge.vlm import load_vlm, plan_vlm
    from tokcomp_edge.vlm.path import VlmVisionPath

    folder, model = lfm2
    loaded = load_vlm(f"hf:{folder}", image_size=tile)
    path = VlmVisionPath(loaded.tower, plan_vlm(loaded.spec, parse_spec("none"), None), loaded.projector).eval()
    x = tile_pixels(2, seed=7, size=128)[..., :tile[0], :tile[1]]
    with torch.no_grad():
        got = path(x)
    assert got.shape == (2, tile[0] * tile[1] // 32 // 32, 48)
    _close(got.numpy(), hf_image_features(model, x).numpy())


def test_tower_embeddings_equal_siglip2(lfm2):
    """Siglip2Tower.embed = Siglip2VisionEmbeddings on the processor's patches (position table resized by HF)."""
    from tokcomp_edge.vlm import load_vlm

    folder, model = lfm2
    tower = load_vlm(f"hf:{folder}").tower
    x = tile_pixels(2, seed=3, size=TILE)
    with torch.no_grad():
        want = model.model.vision_tower.embeddings(_patches(x), torch.tensor([[8, 8]] * 2))
        got = tower.embed(x)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=0, atol=1e-5)


def test_bad_image_size_exits_2_naming_valid_sizes(lfm2, tmp_path, capsys):
    folder, _ = lfm2
    out = tmp_path / "bad"
    code, stdout, err = run_main(capsys, "export", f"hf:{folder}", "--image-size", "112", "--out", out)
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code == 2 and len(lines) <= 2, err
    assert "not a multiple of 32" in err and "nearest valid sizes: 96, 128" in err.lower()
    assert not out.exists()


def test_presets_published_shapes():
    from tokcomp_edge.compression.spec import parse_spec
    from tokcomp_edge.errors import InputError
    from tokcomp_edge.vlm import plan_vlm, resolve_vlm
    from tokcomp_edge.vlm.tiles import tiles_per_request

    for name, dim in (("lfm2-vl-450m", 1024), ("lfm2-vl-1.6b", 2048)):
        v = resolve_vlm(name)
        assert v.tower.image_size == (512, 512) and v.tower.grid == (32, 32)
        assert plan_vlm(v, parse_spec("none"), None).arithmetic == f"1024 → pixel unshuffle 2×2 → 256 → mlp → 256 × {dim}"
    assert plan_vlm(resolve_vlm("lfm2-vl-450m", (256, 256)), parse_spec("none"), None).tokens_out == 64
    # LFM2's MLP is auto-adjusted (2/3 of block_ff_dim, rounded up to 256): 6656 → 4608, 12288 → 8192.
    assert (resolve_vlm("lfm2-vl-450m").llm.mlp, resolve_vlm("lfm2-vl-1.6b").llm.mlp) == (4608, 8192)
    # Its processor splits a large image into up to max_tiles (10) tiles + a thumbnail: the default --batch-max.
    assert tiles_per_request(resolve_vlm("lfm2-vl-1.6b")).count == 11
    with pytest.raises(InputError, match="49 tokens, outside the processor's 64..256") as ex:
        resolve_vlm("lfm2-vl-450m", (224, 224))
    assert ex.value.hint == "nearest valid sizes: 256, 288, 320"


def test_preprocess_equals_the_lfm2_image_processor(exported, tmp_path, capsys):
    """`tokcomp preprocess` on a photo resized to the tile = Lfm2VlImageProcessor's patches, un-flattened."""
    from PIL import Image
    from transformers import Lfm2VlImageProcessor

    from tokcomp_edge.calibration.images import load_rgb

    photo = sorted((__import__("pathlib").Path(__file__).parents[1] / "calibration" / "photos").glob("*.jpg"))[0]
    img = load_rgb(photo).resize((TILE, TILE), Image.BILINEAR)
    src = tmp_path / "tile.png"
    img.save(src)
    dest = tmp_path / "px.npy"
    code, _, err = run_main(capsys, "preprocess", exported["none"].path, src, "--out", dest)
    assert code == 0, err
    ours = np.load(dest)
    proc = Lfm2VlImageProcessor(**PROCESSOR)
    enc = proc(images=img, return_tensors="pt")
    n = (TILE // 16) ** 2
    patches = enc["pixel_values"][0, :n]  # [64, 16·16·3], rows of patches, (py, px, c) inside each
    want = patches.reshape(8, 8, 16, 16, 3).permute(4, 0, 2, 1, 3).reshape(1, 3, TILE, TILE).numpy()
    assert ours.shape == want.shape
    # The photo is already at the tile, so neither side resizes: equal up to float rounding (5.9e-8 here).
    np.testing.assert_allclose(ours, want, rtol=0, atol=1e-6)


def test_chosen_tile_is_rebuilt_at_its_size(lfm2, tmp_path):
    """A bundle exported at --image-size 96 rebuilds (validate's PyTorch side) at 96, not at the default tile."""
    from tokcomp_edge.export import ExportConfig, export_bundle
    from tokcomp_edge.export.rebuild import model_from_manifest

    folder, model = lfm2
    res = export_bundle(ExportConfig(model=f"hf:{folder}", image_size=96, out=tmp_path / "b96", batch_max=1,
                                     quiet=True))
    assert res.manifest["encoder"]["image_size"] == [96, 96] and res.manifest["tokens_out"] == 9
    x = tile_pixels(1, seed=9, size=96)
    with torch.no_grad():
        got = model_from_manifest(res.manifest)(x)
    _close(got.numpy(), hf_image_features(model, x).numpy())

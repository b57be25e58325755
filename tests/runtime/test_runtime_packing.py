"""runtime/packing.py == transformers' LlavaOnevisionModel.pack_image_features (5.24), on random features for
many image sizes: unpadding either way, the bilinear downscale above anyres_max_N and the newline tokens; and
its token count == the layout's (R1's onevision_count) on the compressed grid too."""

from __future__ import annotations

import types

import numpy as np
import pytest

from tokcomp_edge.runtime.packing import bilinear, max_patches, pack_image_features

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

TILE = 128
PINS = [[TILE * a, TILE * b] for a in range(1, 5) for b in range(1, 5)]
SIZES = [(300, 200), (180, 400), (256, 256), (900, 120), (64, 96), (1000, 1000), (333, 777)]


def _torch_pack(feats, size, newline, ratio):
    from transformers.models.llava_onevision.modeling_llava_onevision import LlavaOnevisionModel

    cfg = types.SimpleNamespace(vision_config=types.SimpleNamespace(image_size=TILE, patch_size=16),
                                image_grid_pinpoints=PINS)
    out, lens = LlavaOnevisionModel.pack_image_features(types.SimpleNamespace(config=cfg), [torch.from_numpy(feats)],
                                                        torch.tensor([list(size)]), torch.from_numpy(newline), ratio)
    return out[0].numpy()


@pytest.mark.parametrize("ratio", ["anyres_max_9", "anyres_max_2", "anyres_max_1"])
@pytest.mark.parametrize("size", SIZES)
def test_pack_equals_transformers(size, ratio):
    from tokcomp_edge.runtime.tile_geometry import select_best_resolution

    rng = np.random.default_rng(hash((size, ratio)) % 2**32)
    h, w = select_best_resolution(size, PINS)
    grid = (h // TILE, w // TILE)
    feats = rng.standard_normal((1 + grid[0] * grid[1], 64, 24)).astype(np.float32)
    newline = rng.standard_normal(24).astype(np.float32)
    want = _torch_pack(feats, size, newline, ratio)
    got = pack_image_features(feats, grid, size, (8, 8), newline, ratio)
    assert got.features.shape == want.shape
    np.testing.assert_allclose(got.features, want, rtol=0, atol=1e-5)
    lines = got.features[list(got.newline_positions)]
    assert np.array_equal(lines, np.broadcast_to(newline, lines.shape))
    assert len(got.newline_positions) == got.feature_size[0]


def test_one_tile_gets_one_newline_and_bilinear_is_torchs():
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((1, 64, 8)).astype(np.float32)
    nl = np.ones(8, np.float32)
    one = pack_image_features(feats, (1, 1), (50, 70), (8, 8), nl)
    assert one.features.shape == (65, 8) and one.newline_positions == (64,)
    x = rng.standard_normal((3, 17, 29)).astype(np.float32)
    for size in [(5, 9), (16, 28), (3, 3), (17, 29), (1, 1)]:
        want = torch.nn.functional.interpolate(torch.from_numpy(x)[None], list(size), mode="bilinear")[0].numpy()
        np.testing.assert_allclose(bilinear(x, size), want, rtol=0, atol=5e-7)  # 1-2 ulps of values ~1
    # The weights themselves are PyTorch's bit for bit: interpolate the identity along one axis.
    from tokcomp_edge.runtime.packing import _linear_indices

    for n_in in (17, 29, 48):
        for n_out in range(1, n_in + 1):
            eye = torch.eye(n_in)[:, None, None, :]
            want = torch.nn.functional.interpolate(eye, [1, n_out], mode="bilinear")[:, 0, 0, :].numpy().T
            i0, i1, l0, l1 = _linear_indices(n_in, n_out)
            got = np.zeros((n_out, n_in), np.float32)
            np.add.at(got, (np.arange(n_out), i0), l0)
            np.add.at(got, (np.arange(n_out), i1), l1)
            assert np.array_equal(got, want), (n_in, n_out)
    assert max_patches("anyres_max_9") == 9


@pytest.mark.parametrize("grid_out", [(8, 8), (4, 4)])
def test_packed_count_is_the_layouts(grid_out):
    """The layout counts what packing produces: uncompressed and with a pooled (4x4) token grid."""
    from tokcomp_edge.runtime.layout import onevision_count
    from tokcomp_edge.runtime.tile_geometry import select_best_resolution
    from tokcomp_edge.runtime.tiling import TiledImage

    for size in SIZES:
        h, w = select_best_resolution(size, PINS)
        grid = (h // TILE, w // TILE)
        n = 1 + grid[0] * grid[1]
        feats = np.zeros((n, grid_out[0] * grid_out[1], 4), np.float32)
        packed = pack_image_features(feats, grid, size, grid_out, np.ones(4, np.float32), "anyres_max_2")
        tiled = TiledImage(pixels=np.zeros((n, 3, 1, 1), np.float32), uint8=np.zeros((n, 1, 1, 3), np.uint8),
                           grid=grid, thumbnail=True, size=size, resized=(h, w), family="llava_onevision")
        tokens, lines = onevision_count(tiled, grid_out, "anyres_max_2")
        assert (tokens, list(lines)) == (packed.features.shape[0], list(packed.newline_positions)), size

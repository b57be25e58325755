"""runtime.tile_image equals transformers' PIL-backend image processors, built from the checkpoint folder's own
saved settings, on real photographs of several sizes and aspect ratios (tests/calibration/photos), multi-tile
cases included. Pixels are compared after normalisation: bit-equal is expected (both sides run the same PIL
resize and the same float64 → float32 arithmetic); the bound is 1e-6."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import rt_helpers as H  # noqa: E402

from tokcomp_edge.runtime.processor import ProcessorParams  # noqa: E402
from tokcomp_edge.runtime.tiling import tile_image  # noqa: E402

pytest.importorskip("transformers")

# What each family's transformers Processor passes to its image processor on every call (processing_*.py).
FORCED = {"internvl": {"crop_to_patches": True}, "gemma3": {"do_pan_and_scan": False}}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("rt_folders")
    cache = {}

    def make(family: str, **over):
        key = (family, tuple(sorted(over.items())))
        if key not in cache:
            folder = H.make_folder(root / f"{family}_{len(cache)}", family, **over)
            cache[key] = (folder, H.manifest_vlm(folder))
        return cache[key]

    return make


def _reference(folder: Path, family: str, image, **kw):
    """transformers' own pixels for one image: [n, 3, H, W] (and the raw output)."""
    from transformers import AutoImageProcessor

    proc = AutoImageProcessor.from_pretrained(folder, backend="pil")
    assert proc.backend == "pil"
    out = proc(images=image, return_tensors="np", **{**FORCED.get(family, {}), **kw})
    px = np.asarray(out["pixel_values"])
    if px.ndim == 5:  # Idefics3/SmolVLM, OneVision: [batch, tiles, 3, H, W]
        px = px[0]
    return px, out


def _check(family, folders, photo_names, expect_multi=True, **over):
    folder, vlm = folders(family, **over)
    params = ProcessorParams.from_dict(vlm["processor"])
    multi = 0
    for path in photo_names:
        image = H.photo(path)
        ours = tile_image(image, params)
        ref, out = _reference(folder, family, image)
        assert ours.pixels.shape == ref.shape, (path.name, ours.pixels.shape, ref.shape)
        assert ours.pixels.dtype == np.float32
        diff = np.abs(ours.pixels - ref).max()
        assert diff <= 1e-6, f"{family} {path.name}: max |Δ| {diff}"
        assert ours.size == (image.height, image.width)
        assert ours.uint8.shape == (ours.tiles, *params.tile, 3)
        multi += ours.tiles > 1
    if expect_multi:
        assert multi >= 2, f"{family}: fewer than 2 photos cut into several tiles"
    return params


PHOTOS = H.PHOTOS  # 7 real photos: 300x200, 330x220, 200x300, 256x256, 96x64, 400x180, 180x180 grey


def test_photos_vary():
    from PIL import Image

    sizes = {Image.open(p).size for p in PHOTOS}
    assert len(PHOTOS) >= 6 and len({round(w / h, 2) for w, h in sizes}) >= 4


def test_internvl_crop_to_patches_with_thumbnail(folders):
    """The folder saves crop_to_patches false (as -hf checkpoints do); InternVLProcessor tiles anyway."""
    folder, vlm = folders("internvl")
    assert vlm["processor"]["saved_crop_to_patches"] is False and vlm["processor"]["crop_to_patches"] is True
    _check("internvl", folders, PHOTOS)
    params = ProcessorParams.from_dict(vlm["processor"])
    t = tile_image(H.photo(PHOTOS[0]), params)  # astronaut-256x256 → 2x2 + thumbnail
    assert (t.grid, t.thumbnail, t.tiles, t.resized) == ((2, 2), True, 5, (256, 256))
    # The thumbnail is last: the whole image at the tile.
    ref, _ = _reference(folder, "internvl", H.photo(PHOTOS[0]), max_patches=1)
    assert np.abs(t.pixels[-1] - ref[0]).max() <= 1e-6


@pytest.mark.parametrize("family", ["idefics3", "smolvlm"])
def test_idefics3_split_global_view_last(folders, family):
    params = _check(family, folders, PHOTOS)
    assert params.resample == 1  # Lanczos
    t = tile_image(H.photo(PHOTOS[3]), params)  # chelsea-cat-300x200 → 384x256 → 2 rows x 3 cols + global
    assert (t.grid, t.thumbnail, t.tiles, t.resized) == ((2, 3), True, 7, (256, 384))


def test_idefics3_without_splitting(folders):
    _check("idefics3", folders, PHOTOS[:3], expect_multi=False, do_image_splitting=False)


def test_onevision_anyres_base_first(folders):
    folder, vlm = folders("llava_onevision")
    params = _check("llava_onevision", folders, PHOTOS)
    t = tile_image(H.photo(PHOTOS[5]), params)  # hubble-400x180 → best 256x384: base + 2x3 crops
    assert (t.grid, t.thumbnail, t.tiles, t.resized) == ((2, 3), True, 7, (256, 384))
    # Several images in one sample: transformers skips anyres (one square-padded tile each).
    from transformers import AutoImageProcessor

    proc = AutoImageProcessor.from_pretrained(folder, backend="pil")
    imgs = [H.photo(PHOTOS[5]), H.photo(PHOTOS[2])]
    ref = np.asarray(proc(images=[imgs], return_tensors="np")["pixel_values"])
    for k, img in enumerate(imgs):
        ours = tile_image(img, params, multi_image=True)
        assert ours.tiles == 1 and np.abs(ours.pixels[0] - ref[k, 0]).max() <= 1e-6


@pytest.mark.parametrize("family", ["llava", "paligemma", "gemma3"])
def test_one_tile_families(folders, family):
    params = _check(family, folders, PHOTOS, expect_multi=False)
    assert params.rule == "single"


def test_gemma3_pan_and_scan_when_asked(folders):
    """Gemma3Processor turns pan-and-scan off whatever the file says (recorded off); the runtime still follows
    it when the params ask, image first then the crops, as Gemma3ImageProcessor makes them."""
    folder, vlm = folders("gemma3", do_pan_and_scan=True)
    assert vlm["processor"]["do_pan_and_scan"] is False
    d = dict(vlm["processor"], do_pan_and_scan=True, pan_and_scan_min_crop_size=64)
    params = ProcessorParams.from_dict(d)
    image = H.photo(PHOTOS[5])  # hubble-400x180: 2 crops
    ours = tile_image(image, params)
    ref, out = _reference(folder, "gemma3", image, do_pan_and_scan=True, pan_and_scan_min_crop_size=64,
                          pan_and_scan_max_num_crops=4, pan_and_scan_min_ratio_to_activate=1.2)
    assert ours.tiles == ref.shape[0] == 3 and ours.grid == (1, 2) and ours.thumbnail
    assert np.abs(ours.pixels - ref).max() <= 1e-6


def test_array_and_modes_equal_pil(folders):
    """An HWC uint8 array and the PIL image tile the same; RGBA and grey go through convert_to_rgb."""
    _, vlm = folders("internvl")
    params = ProcessorParams.from_dict(vlm["processor"])
    image = H.photo(PHOTOS[1])
    a, b = tile_image(image, params), tile_image(np.asarray(image.convert("RGB")), params)
    assert np.array_equal(a.pixels, b.pixels)
    rgba = image.convert("RGBA")
    assert np.array_equal(tile_image(rgba, params).pixels, tile_image(np.asarray(rgba), params).pixels)


@pytest.mark.parametrize("bad", [np.zeros((0, 5, 3), np.uint8), np.zeros((4, 4, 3), np.float32), "x.jpg"])
def test_bad_images(folders, bad):
    from tokcomp_edge.errors import InputError

    _, vlm = folders("llava")
    with pytest.raises(InputError):
        tile_image(bad, ProcessorParams.from_dict(vlm["processor"]))


def test_old_bundle_says_reexport():
    from tokcomp_edge.errors import BundleError

    with pytest.raises(BundleError) as exc:
        ProcessorParams.from_manifest({"name": "b", "vlm": {"family": "internvl"}})
    assert "re-export" in exc.value.one_line().lower()
    with pytest.raises(BundleError, match="bare tower"):
        ProcessorParams.from_manifest({"name": "b"})


def test_round_trip(folders):
    _, vlm = folders("llava_onevision")
    p = ProcessorParams.from_dict(vlm["processor"])
    assert ProcessorParams.from_dict(p.to_dict()) == p

"""Real-image preprocessing from the manifest (calibration/images.py)."""

import numpy as np
import pytest
from PIL import Image

from tokcomp_edge.calibration.images import (
    Preprocess,
    list_images,
    load_images,
    normalize,
    resize_center_crop,
    synthetic_images,
)
from tokcomp_edge.errors import InputError

from .conftest import write_pngs

PRE = Preprocess(image_size=(224, 224), mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 1.0))


def test_from_manifest():
    p = Preprocess.from_manifest({"encoder": {"image_size": [224, 192], "mean": [0.1, 0.2, 0.3], "std": [1, 2, 3]}})
    assert p.image_size == (224, 192) and p.std == (1.0, 2.0, 3.0)


def test_resize_center_crop_covers_and_centres():
    x = np.zeros((200, 400, 3), np.uint8)
    x[:, 150:250] = 255  # a white vertical band in the middle
    out = resize_center_crop(Image.fromarray(x), (100, 100))
    assert out.size == (100, 100)
    arr = np.asarray(out)
    # shorter side 200 → 100, width 400 → 200, crop columns 50..150 of the resized: band 75..125 → 25..75
    assert arr[:, 50].min() > 200 and arr[:, 5].max() < 30 and arr[:, 95].max() < 30


def test_normalize_values_and_layout():
    u8 = np.zeros((1, 2, 2, 3), np.uint8)
    u8[0, 0, 1] = (255, 0, 51)
    x = normalize(u8, PRE.mean, PRE.std)
    assert x.shape == (1, 3, 2, 2) and x.dtype == np.float32
    assert x[0, :, 0, 1].tolist() == pytest.approx([1.0, -1.0, 0.2])
    assert x[0, :, 0, 0].tolist() == pytest.approx([-1.0, -1.0, 0.0])


def test_load_images_both_forms(tmp_path):
    write_pngs(tmp_path)
    (tmp_path / "notes.txt").write_text("not an image")
    b = load_images(tmp_path, PRE)
    assert len(b) == 3 and [p.name for p in b.paths] == ["img0.png", "img1.png", "img2.png"]
    assert b.uint8_nhwc.shape == (3, 224, 224, 3) and b.pixel_values.shape == (3, 3, 224, 224)
    np.testing.assert_allclose(b.pixel_values, normalize(b.uint8_nhwc, PRE.mean, PRE.std))
    assert len(load_images(tmp_path, PRE, limit=2)) == 2


def test_empty_folder_and_bad_image(tmp_path):
    with pytest.raises(InputError, match="holds no"):
        list_images(tmp_path)
    with pytest.raises(InputError, match="does not exist"):
        list_images(tmp_path / "nope")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match="cannot read image .*broken.png"):
        load_images(tmp_path, PRE)


def test_synthetic_images_are_seeded():
    a, b, c = synthetic_images(2, PRE, 1), synthetic_images(2, PRE, 1), synthetic_images(2, PRE, 2)
    np.testing.assert_array_equal(a.uint8_nhwc, b.uint8_nhwc)
    assert not np.array_equal(a.uint8_nhwc, c.uint8_nhwc)
    assert a.uint8_nhwc.std() > 20  # not a flat image

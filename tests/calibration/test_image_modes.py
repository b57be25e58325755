"""Image files as they come: grayscale, palette, 16-bit and RGBA convert to RGB as transformers' processors
convert them; unreadable files are skipped with a warning naming them, and refused when nothing is left."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tokcomp_edge.calibration.images import load_images
from tokcomp_edge.image_policy import policy_for_spec
from tokcomp_edge.encoders import resolve_spec
from tokcomp_edge.errors import InputError

PHOTOS = Path(__file__).parent / "photos"


@pytest.fixture(scope="module")
def odd_modes(tmp_path_factory) -> list[Path]:
    """Real photos saved in the modes cameras and tools produce (made here, from the shipped photos)."""
    d = tmp_path_factory.mktemp("modes")
    cat = Image.open(PHOTOS / "chelsea-cat-300x200.jpg").convert("RGB")
    gray = Image.open(PHOTOS / "camera-gray-180x180.jpg")
    assert gray.mode == "L"
    files = {"gray.png": gray, "palette.png": cat.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)}
    # 16-bit grayscale PNG (mode I;16 when read back): 8-bit values spread over 0–65535
    files["gray16.png"] = Image.fromarray(np.asarray(gray, np.uint16) * 257)
    rgba = cat.convert("RGBA")
    alpha = np.tile(np.linspace(0, 255, cat.size[0], dtype=np.uint8), (cat.size[1], 1))
    rgba.putalpha(Image.fromarray(alpha))
    files["rgba.png"] = rgba
    pal_t = cat.convert("P", palette=Image.Palette.ADAPTIVE, colors=32)
    pal_t.info["transparency"] = 0  # palette entry 0 transparent: composited over white
    files["palette-transparent.png"] = pal_t
    paths = []
    for name, im in files.items():
        im.save(d / name, transparency=im.info["transparency"]) if "transparency" in im.info else im.save(d / name)
        paths.append(d / name)
    assert Image.open(d / "gray16.png").mode == "I;16"
    return paths


@pytest.mark.parametrize("preset", ["clip-b16-224", "dinov2-s14-224", "siglip-b16-224"])
def test_modes_convert_like_transformers(odd_modes, preset):
    pytest.importorskip("transformers")
    import transformers
    from transformers.models.bit.image_processing_pil_bit import BitImageProcessorPil
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    spec = resolve_spec(preset)
    kw = {"image_mean": list(spec.mean), "image_std": list(spec.std)}
    pil, tv = {"clip": (CLIPImageProcessorPil(**kw), transformers.CLIPImageProcessor(**kw)),
               "dinov2": (BitImageProcessorPil(size={"shortest_edge": 256}, **kw),
                          transformers.BitImageProcessor(size={"shortest_edge": 256}, **kw)),
               "siglip": (SiglipImageProcessorPil(**kw), transformers.SiglipImageProcessor(**kw))}[spec.family]
    batch = load_images(odd_modes, policy_for_spec(spec))
    assert [p.name for p in batch.paths] == [p.name for p in odd_modes] and not batch.skipped
    std = np.asarray(spec.std)[:, None, None]
    for i, path in enumerate(odd_modes):
        # the processors are given the file as PIL opens it: their own RGB conversion runs
        for proc, bound in ((pil, 1e-5), (tv, 6 / 255)):
            ref = proc(images=Image.open(path), return_tensors="np")["pixel_values"][0]
            assert np.abs(batch.pixel_values[i] - ref).max() * std.max() <= bound, (path.name, type(proc).__name__)


def test_sixteen_bit_images_carry_a_note(odd_modes):
    batch = load_images(odd_modes, policy_for_spec(resolve_spec("tiny-clip")))
    notes = [line for line in batch.warnings() if "gray16.png" in line]
    assert len(notes) == 1 and "I;16" in notes[0] and "clip" in notes[0]


def test_transparency_is_composited_over_white(odd_modes):
    batch = load_images([p for p in odd_modes if p.name == "rgba.png"], policy_for_spec(resolve_spec("siglip-b16-224")))
    # alpha ramps 0 → 255 left to right: the left edge is (nearly) white
    assert batch.uint8_nhwc[0, :, :3].mean() > 245


def test_unusable_files_are_skipped_and_named(tmp_path):
    good = tmp_path / "a-good.jpg"
    good.write_bytes((PHOTOS / "rocket-200x300.jpg").read_bytes())
    (tmp_path / "b-empty.jpg").write_bytes(b"")
    (tmp_path / "c-text.png").write_text("not a picture")
    data = (PHOTOS / "coffee-330x220.jpg").read_bytes()
    (tmp_path / "d-truncated.jpg").write_bytes(data[: len(data) // 3])
    (tmp_path / "notes.txt").write_text("ignored: not an image suffix")
    batch = load_images(tmp_path, policy_for_spec(resolve_spec("tiny-clip")))
    assert [p.name for p in batch.paths] == ["a-good.jpg"]
    reasons = dict((p.name, why) for p, why in batch.skipped)
    assert set(reasons) == {"b-empty.jpg", "c-text.png", "d-truncated.jpg"}
    assert "empty" in reasons["b-empty.jpg"] and "not an image" in reasons["c-text.png"]
    assert "truncated" in reasons["d-truncated.jpg"]
    lines = batch.warnings()
    assert len(lines) == 3 and all(line.startswith("skipped ") and "\n" not in line for line in lines)
    # --max-images counts usable images only
    assert len(load_images(tmp_path, policy_for_spec(resolve_spec("tiny-clip")), limit=1)) == 1


def test_nothing_usable_is_refused(tmp_path):
    (tmp_path / "x.jpg").write_bytes(b"")
    (tmp_path / "y.png").write_text("nope")
    with pytest.raises(InputError) as exc:
        load_images(tmp_path, policy_for_spec(resolve_spec("tiny-clip")))
    assert exc.value.exit_code == 2
    line = exc.value.one_line()
    assert "no usable image" in line and "x.jpg" in line and "y.png" in line and "\n" not in line
    with pytest.raises(InputError, match="does not exist"):
        load_images([tmp_path / "missing.jpg"], policy_for_spec(resolve_spec("tiny-clip")))

"""`tokcomp preprocess`: the pixels a bundle expects, as the entry point writes them; the same framing
validate --images uses, and the legacy fallback for bundles without a recorded policy."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tokcomp_edge.calibration.images import load_images
from tokcomp_edge.cli.app import main
from tokcomp_edge.image_policy import PreprocessPolicy

PHOTOS = Path(__file__).resolve().parents[1] / "calibration" / "photos"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    from tokcomp_edge.export import ExportConfig, export_bundle

    out = tmp_path_factory.mktemp("pre") / "tiny_siglip"
    export_bundle(ExportConfig(model="tiny-siglip", compress="pool:2", out=out, batch_max=4, variants=("nhwc",),
                               quiet=True))
    return out


def run(capsys, *args) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as ex:
        main([str(a) for a in args])
    cap = capsys.readouterr()
    return ex.value.code, cap.out, cap.err


def test_writes_pixel_values_and_nhwc_frames(bundle, tmp_path, capsys):
    photos = sorted(PHOTOS.glob("*.jpg"))[:3]
    code, out, err = run(capsys, "preprocess", bundle, *photos, "--out", tmp_path / "pixels.npy")
    assert code == 0, err
    assert "SiglipImageProcessor: resize to 224x224 bicubic, no crop" in " ".join(out.split())
    x = np.load(tmp_path / "pixels.npy")
    assert x.dtype == np.float32 and x.shape == (3, 3, 224, 224)
    policy = PreprocessPolicy.from_manifest(json.loads((bundle / "manifest.json").read_text()))
    np.testing.assert_array_equal(x, load_images(photos, policy).pixel_values)
    code, _, err = run(capsys, "preprocess", bundle, PHOTOS, "--nhwc", "--out", tmp_path / "frames.npy")
    assert code == 0, err
    u8 = np.load(tmp_path / "frames.npy")
    assert u8.dtype == np.uint8 and u8.shape == (len(list(PHOTOS.glob("*.jpg"))), 224, 224, 3)


def test_frames_feed_the_nhwc_variant_like_pixel_values_feed_the_fp32_model(bundle, tmp_path, capsys):
    """What the README promises: the nhwc variant on these frames = model.onnx on these pixel_values."""
    import onnxruntime as ort

    photos = sorted(PHOTOS.glob("*.jpg"))[:2]
    assert run(capsys, "preprocess", bundle, *photos, "--out", tmp_path / "p.npy")[0] == 0
    assert run(capsys, "preprocess", bundle, *photos, "--nhwc", "--out", tmp_path / "f.npy")[0] == 0
    fp32 = ort.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    nhwc = ort.InferenceSession(str(bundle / "model.nhwc.onnx"), providers=["CPUExecutionProvider"])
    a = fp32.run(None, {"pixel_values": np.load(tmp_path / "p.npy")})[0]
    b = nhwc.run(None, {"pixel_values": np.load(tmp_path / "f.npy")})[0]
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


def test_bad_files_warn_and_existing_out_needs_force(bundle, tmp_path, capsys):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not really")
    dest = tmp_path / "x.npy"
    code, out, err = run(capsys, "preprocess", bundle, PHOTOS / "rocket-200x300.jpg", bad, "--out", dest)
    assert code == 0
    warn = [ln for ln in err.splitlines() if ln.startswith("warning:")]
    assert len(warn) == 1 and "broken.jpg" in warn[0]
    assert "1 used, 1 skipped" in out
    code, _, err = run(capsys, "preprocess", bundle, PHOTOS / "rocket-200x300.jpg", "--out", dest)
    assert code == 2 and "already exists" in err
    code, _, err = run(capsys, "preprocess", bundle, bad, "--out", tmp_path / "y.npy", "--force")
    assert code == 2 and "no usable image" in err and not (tmp_path / "y.npy").exists()


def test_legacy_bundle_falls_back_and_says_so(bundle, tmp_path, capsys):
    """A bundle exported before policies: shorter side + centre crop (the old framing), with a warning."""
    old = tmp_path / "old"
    shutil.copytree(bundle, old)
    m = json.loads((old / "manifest.json").read_text())
    m["preprocess"] = {k: m["preprocess"][k] for k in ("image_size", "mean", "std", "layout", "range")}
    from tokcomp_edge.core.bundle import dump_manifest

    (old / "manifest.json").write_text(dump_manifest(m))  # re-sealed, as an older tokcomp wrote it
    code, out, err = run(capsys, "preprocess", old, PHOTOS / "hubble-400x180.jpg", "--nhwc", "--out", tmp_path / "o.npy")
    assert code == 0, err
    assert "legacy" in " ".join(err.split()) and "exported before policies" in " ".join(err.split())
    from PIL import Image

    from tokcomp_edge.calibration.images import resize_center_crop

    expect = np.asarray(resize_center_crop(Image.open(PHOTOS / "hubble-400x180.jpg").convert("RGB"), (224, 224)))
    np.testing.assert_array_equal(np.load(tmp_path / "o.npy")[0], expect)
    # validate --images says it in the report too
    from tokcomp_edge.validation import ValidateConfig, validate

    res = validate(ValidateConfig(target=old, images=PHOTOS, max_images=2, iterations=0, extra_inputs=0,
                                  torch="off", quiet=True, out_dir=tmp_path / "reports"))
    assert any("exported before policies" in w for w in res.warnings)
    assert res.report["images"]["preprocess"]["processor"] == "legacy"

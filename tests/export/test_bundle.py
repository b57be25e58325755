"""The bundle contract: manifest fields, checksums, determinism, reference keys."""

import json

import numpy as np
import pytest

from tokcomp_edge.core.bundle import Bundle
from tokcomp_edge.errors import BundleError
from tokcomp_edge.export import ExportConfig, export_bundle


def test_manifest_fields(make_bundle):
    res = make_bundle("tiny-dinov2", "pool:2", prefix="keep")
    m = json.loads((res.path / "manifest.json").read_text())
    assert m["schema"] == "tokcomp-edge/bundle" and m["schema_version"] == 1
    for key in ("tokens_in", "tokens_out", "grid_in", "grid_out", "dim_out", "versions", "files", "preprocess"):
        assert key in m
    assert m["tokens_in"] == 5 + 196 and m["tokens_out"] == 5 + 49
    assert m["encoder"]["weights"]["kind"] == "random" and m["encoder"]["weights"]["seed"] == 0
    assert m["encoder"]["mean"] and m["encoder"]["std"]
    assert m["onnx"]["inputs"][0] == {"name": "pixel_values", "shape": ["batch", 3, 224, 224], "dtype": "float32",
                                      "layout": "NCHW"}
    assert set(m["files"]) == {"model.onnx", "reference.npz"}
    assert m["parity"]["passed"] is True
    for v in ("torch", "onnx", "onnxruntime-gpu"):
        assert v in m["versions"]


def test_reference_keys(make_bundle):
    res = make_bundle("tiny-clip", "prune:32:norm")
    ref = Bundle.load(res.path).reference()
    assert set(ref) == {f"{t}.b{b}" for t in ("pixel_values", "tokens", "indices") for b in (1, 4)}


def test_changed_file_is_named(make_bundle, tmp_path):
    import shutil

    src = make_bundle("tiny-clip", "pool:2").path
    dst = tmp_path / "copy"
    shutil.copytree(src, dst)
    with open(dst / "model.onnx", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(BundleError, match="model.onnx changed since export") as exc:
        Bundle.load(dst)
    assert exc.value.exit_code == 2


def test_not_a_bundle(tmp_path):
    with pytest.raises(BundleError, match="no manifest.json"):
        Bundle.load(tmp_path)
    with pytest.raises(BundleError, match="does not exist"):
        Bundle.load(tmp_path / "nope")


def test_same_command_same_bytes(tmp_path):
    a = export_bundle(ExportConfig(model="tiny-vit", compress="prune:16:cls-attn", out=tmp_path / "a", quiet=True))
    b = export_bundle(ExportConfig(model="tiny-vit", compress="prune:16:cls-attn", out=tmp_path / "b", quiet=True))
    assert (a.path / "model.onnx").read_bytes() == (b.path / "model.onnx").read_bytes()
    assert (a.path / "reference.npz").read_bytes() == (b.path / "reference.npz").read_bytes()


def test_seed_changes_weights(tmp_path):
    a = export_bundle(ExportConfig(model="tiny-vit", out=tmp_path / "a", seed=1, quiet=True))
    b = export_bundle(ExportConfig(model="tiny-vit", out=tmp_path / "b", seed=2, quiet=True))
    ra, rb = Bundle.load(a.path).reference(), Bundle.load(b.path).reference()
    assert not np.allclose(ra["tokens.b1"], rb["tokens.b1"])


def test_static_batch_when_range_is_one_value(tmp_path):
    res = export_bundle(ExportConfig(model="tiny-siglip", compress="pool:2", out=tmp_path / "s", batch_min=2,
                                     batch_max=2, quiet=True))
    m = res.manifest
    assert m["onnx"]["inputs"][0]["shape"][0] == 2 and m["reference"]["batch_sizes"] == [2]


def test_rebuild_matches_reference(make_bundle):
    import torch

    from tokcomp_edge.export.rebuild import model_from_manifest

    b = Bundle.load(make_bundle("tiny-clip", "pool:2").path)
    ref = b.reference()
    model = model_from_manifest(b.manifest)
    with torch.no_grad():
        y = model(torch.from_numpy(ref["pixel_values.b4"]))
    np.testing.assert_array_equal(y.numpy(), ref["tokens.b4"])


def test_external_data_when_large(tmp_path, monkeypatch):
    """Past the ~2 GB protobuf limit the weights go to model.onnx.data; shown here with a lowered threshold."""
    import tokcomp_edge.export.onnx_export as onnx_export

    monkeypatch.setattr(onnx_export, "EXTERNAL_DATA_THRESHOLD", 0)
    res = export_bundle(ExportConfig(model="tiny-clip", compress="pool:2", out=tmp_path / "x", batch_max=4,
                                     quiet=True))
    b = Bundle.load(res.path)
    assert set(b.manifest["files"]) == {"model.onnx", "model.onnx.data", "reference.npz"}
    assert b.manifest["onnx"]["external_data"] is True and res.parity.passed
    assert (res.path / "model.onnx").stat().st_size < (res.path / "model.onnx.data").stat().st_size
    # onnxslim serialises one in-memory protobuf, which fails past 2 GiB (qwen2.5-vl-3b's tower): skipped, and said.
    assert b.manifest["onnx"]["cleanup"].startswith("none (weights over 2 GiB")


def test_manifest_with_other_schema_is_refused(tmp_path):
    (tmp_path / "manifest.json").write_text('{"schema": "someone-else/bundle", "schema_version": 1}')
    with pytest.raises(BundleError, match="expected 'tokcomp-edge/bundle'"):
        Bundle.load(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        Bundle.load(tmp_path)


def test_manifest_content_and_every_variant_are_covered(tmp_path, make_bundle):
    """An edited manifest, a variant whose file no checksum covers, and a manifest without its content
    digest are refused (exit 2) with a one-line reason — never a KeyError."""
    import shutil

    from tokcomp_edge.core.bundle import CONTENT_KEY, MANIFEST, Bundle, dump_manifest

    src = make_bundle("tiny-clip", "pool:2").path
    edited = tmp_path / "edited"
    shutil.copytree(src, edited)
    m = json.loads((edited / MANIFEST).read_text())
    m["tokens_out"] = 1  # a hand edit that keeps the old digest
    (edited / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(BundleError, match="was edited after it was written"):
        Bundle.load(edited)
    m = json.loads((src / MANIFEST).read_text())
    m["variants"]["fp16"] = {"file": "model.fp16.onnx", "precision": "fp16"}  # registered, not checksummed
    (edited / MANIFEST).write_text(dump_manifest(m))
    with pytest.raises(BundleError, match="variant fp16's file model.fp16.onnx is not covered"):
        Bundle.load(edited)
    m = json.loads((src / MANIFEST).read_text())
    del m[CONTENT_KEY]
    (edited / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(BundleError, match="carries no content_sha256"):
        Bundle.load(edited)
    assert Bundle.load(src).manifest[CONTENT_KEY]

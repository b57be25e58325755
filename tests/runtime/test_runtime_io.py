"""The runtime around the model: torch-free import, variants, static batches, routing, bad inputs (one line,
a typed exception, nothing written), engines that belong to another bundle."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from runtime_helpers import photos

from tokcomp_edge.errors import BundleError, InputError

pytest.importorskip("onnxruntime")
REPO = Path(__file__).resolve().parents[2]


def test_import_pulls_no_torch_or_transformers():
    code = ("import sys, tokcomp_edge.runtime, tokcomp_edge.runtime.backends, tokcomp_edge.runtime.routing, "
            "tokcomp_edge.runtime.encode_files, tokcomp_edge.cli.encode_cmds\n"
            "from tokcomp_edge.runtime import VisionRuntime\n"
            "heavy = ('torch', 'transformers', 'onnxruntime', 'tensorrt', 'timm')\n"
            "print(sorted(m for m in heavy if m in sys.modules))")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


def _open(bundle, **kw):
    from tokcomp_edge.runtime import VisionRuntime

    return VisionRuntime.open(bundle, **kw)


def test_nhwc_variant_takes_frames_and_agrees(family_bundle):
    """The uint8 NHWC variant is fed the framed pixels (its graph normalises): same embeddings as fp32."""
    _, _, bundle = family_bundle("llava")
    with _open(bundle) as a, _open(bundle, variant="nhwc") as b:
        assert b.backend.io.layout == "nhwc-uint8" and b.backend.io.dtype == np.uint8
        ea, eb = a.encode(photos()), b.encode(photos())
    for x, y in zip(ea.embeddings, eb.embeddings):
        np.testing.assert_allclose(y, x, rtol=0, atol=1e-4 * max(1.0, float(np.abs(x).max())))


def test_missing_variant_is_one_line(family_bundle):
    _, _, bundle = family_bundle("llava")
    with pytest.raises(BundleError) as ex:
        _open(bundle, variant="fp16")
    line = ex.value.one_line()
    assert "no 'fp16' variant" in line and "fp32" in line and "\n" not in line


def test_static_batch_remainder_is_refused_or_padded(family_bundle):
    """A static batch-2 model: 4 one-tile images run as 2 calls; 3 images leave a call of 1 — refused in one
    line, or padded on request with the same embeddings as the dynamic bundle's."""
    _, _, static = family_bundle("llava", batch_min=2, batch_max=2)
    _, _, dynamic = family_bundle("llava")
    with _open(static) as rt:
        assert rt.backend.io.static and rt.backend.io.batch_max == 2
        four = rt.encode(photos())
        assert four.timings.calls == 2
        with pytest.raises(InputError, match=r"static at batch 2, and the request leaves a last call of 1 tile\(s\)"):
            rt.encode(photos()[:3])
    with _open(static, pad_static=True) as rt, _open(dynamic) as ref:
        got, want = rt.encode(photos()[:3]), ref.encode(photos()[:3])
    assert got.timings.calls == 2
    for x, y in zip(got.embeddings, want.embeddings):
        np.testing.assert_allclose(x, y, rtol=0, atol=1e-5)


def test_route_picks_per_image_and_names_the_bundle(family_bundle):
    _, _, plain = family_bundle("internvl")
    _, _, pooled = family_bundle("internvl", "pool:2")
    from tokcomp_edge.runtime import VisionRuntime

    small, large = photos()[3], photos()[0]  # 96x64 and 300x200
    with _open(pooled) as rt_a, _open(plain) as rt_b:
        router = VisionRuntime.route([("max_side<=128", rt_a), ("*", rt_b)])
        out = router.encode([large, small, large])
        alone_a, alone_b = rt_a.encode([small]), rt_b.encode([large])
        streamed = list(router.encode_stream([small, large], per_request=2))
    assert [lay.bundle for lay in out.layout] == [rt_b.name, rt_a.name, rt_b.name] and rt_a.name != rt_b.name
    np.testing.assert_allclose(out.embeddings[1], alone_a.embeddings[0], rtol=0, atol=1e-5)
    np.testing.assert_allclose(out.embeddings[0], alone_b.embeddings[0], rtol=0, atol=1e-5)
    assert out.layout[1].tokens == out.embeddings[1].shape[0] < out.layout[0].tokens
    assert len(streamed) == 1 and [lay.bundle for lay in streamed[0].layout] == [rt_a.name, rt_b.name]
    with pytest.raises(InputError, match="does not parse"):
        VisionRuntime.route([("longest<=3", rt_a)])
    with pytest.raises(InputError, match="no routing rule takes a 300x200 image"):
        VisionRuntime.route([("max_side<=128", rt_a)]).encode([large])


def test_bad_images_are_typed_one_line_errors(family_bundle, tmp_path):
    from PIL import Image

    _, _, bundle = family_bundle("llava")
    not_image = tmp_path / "notes.jpg"
    not_image.write_text("not a picture")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    cases = [(not_image, "not an image"), (empty, "empty"), (tmp_path / "missing.jpg", "does not exist"),
             (np.zeros((0, 5, 3), np.uint8), "zero-size"), (Image.new("RGB", (0, 0)), "zero-size"),
             (np.zeros((4, 4), np.float32), "cannot be tiled"), ("", "does not exist")]
    with _open(bundle) as rt:
        for image, words in cases:
            with pytest.raises(InputError) as ex:
                rt.encode([photos()[0], image])
            assert words in ex.value.one_line() and "\n" not in ex.value.one_line(), (image, ex.value.one_line())
        with pytest.raises(InputError, match="no images"):
            rt.encode([])


def _fake_engine(bundle: Path, folder: Path, onnx_sha: str | None = None, variant: str = "fp32") -> Path:
    """A .plan with the engine.json `tokcomp build` writes beside it (matching is checked before TensorRT loads)."""
    from tokcomp_edge.core.bundle import Bundle

    b = Bundle.load(bundle)
    folder.mkdir(parents=True, exist_ok=True)
    plan = folder / "model.plan"
    plan.write_bytes(b"serialized engine bytes")
    side = {"schema": "tokcomp-edge/engine", "schema_version": 1, "variant": variant, "precision": "fp32",
            "engine": {"file": plan.name, "sha256": hashlib.sha256(plan.read_bytes()).hexdigest()},
            "profile": {"batch": {"min": 1, "opt": 1, "max": 1}},
            "bundle": {"name": b.name, "path": os.path.relpath(bundle, folder), "variant": variant,
                       "onnx_sha256": onnx_sha or b.manifest["files"][b.variant(variant)["file"]]["sha256"]}}
    plan.with_name("model.engine.json").write_text(json.dumps(side))
    return plan


def test_engine_of_another_bundle_is_refused(family_bundle, tmp_path):
    from tokcomp_edge.runtime.backends import match_engine
    from tokcomp_edge.core.bundle import Bundle

    _, _, llava = family_bundle("llava")
    _, _, internvl = family_bundle("internvl")
    plan = _fake_engine(internvl, tmp_path / "eng")
    with pytest.raises(BundleError, match="was not built from bundle") as ex:
        _open(llava, engine=plan)
    assert "\n" not in ex.value.one_line()
    # Its own bundle matches (the variant and the profile's batch range come from engine.json) ...
    assert match_engine(Bundle.load(internvl), plan)[:2] == ("fp32", (1, 1))
    # ... but not when the .plan was replaced, or another variant is asked for.
    with pytest.raises(InputError, match="was built from variant fp32"):
        _open(internvl, engine=plan, variant="nhwc")
    plan.write_bytes(b"another build")
    with pytest.raises(BundleError, match="not the file its sidecar describes"):
        _open(internvl, engine=plan)


def test_tensorrt_backend_without_tensorrt_is_exit_3(family_bundle, tmp_path):
    import importlib.util

    from tokcomp_edge.errors import RuntimeMissing

    if importlib.util.find_spec("tensorrt") or importlib.util.find_spec("tensorrt_bindings"):
        pytest.skip("TensorRT is installed here: the missing-runtime path cannot be shown")
    _, _, internvl = family_bundle("internvl")
    plan = _fake_engine(internvl, tmp_path / "eng")
    with pytest.raises(RuntimeMissing) as ex:
        _open(internvl, engine=plan)
    assert ex.value.exit_code == 3 and "TensorRT is not installed" in ex.value.one_line()
    with pytest.raises(InputError, match="needs an engine"):
        _open(internvl, backend="tensorrt")
    with pytest.raises(InputError, match="unknown backend"):
        _open(internvl, backend="tflite")


@pytest.mark.slow
def test_fp16_variant_is_within_its_tolerance_of_transformers(family_bundle, tmp_path):
    """The fp16 variant (ModelOpt AutoCast) on ONNX Runtime, against transformers' full path on the photos,
    judged by the fp16 tolerance (max |Δ| ≤ 2e-2 of the scale, rel. L2 ≤ 1e-2, token cosine ≥ 0.999)."""
    pytest.importorskip("modelopt")
    import shutil

    from runtime_helpers import reference

    from tokcomp_edge.core.bundle import Bundle
    from tokcomp_edge.core.tolerance import DEFAULTS
    from tokcomp_edge.export.variants import ensure_variant

    folder, model, shared = family_bundle("internvl")
    bundle = shutil.copytree(shared, tmp_path / "internvl_fp16")  # the session's bundle stays fp32-only
    ensure_variant(Bundle.load(bundle), "fp16")
    tol = DEFAULTS["fp16"]
    with _open(bundle, variant="fp16") as rt:
        out = rt.encode(photos())
    for path, emb in zip(photos(), out.embeddings):
        ref = reference("internvl", folder, model, path)
        assert emb.shape == ref.shape
        assert np.abs(emb - ref).max() <= tol.rtol * float(np.abs(ref).max())
        assert np.linalg.norm(emb - ref) / np.linalg.norm(ref) <= tol.max_rel_l2
        cos = (emb * ref).sum(-1) / (np.linalg.norm(emb, axis=-1) * np.linalg.norm(ref, axis=-1))
        assert cos.min() >= tol.min_cosine


@pytest.mark.slow  # one more export (a pruned llava)
def test_other_outputs_travel_per_image(family_bundle, tmp_path, capsys):
    """A pruned bundle's `indices` (per tile) come back per image beside the embeddings, in the library and in
    embeddings.npz (`image_<i>.indices`); the layout counts the kept tokens."""
    from vlm_helpers import run_main

    _, _, bundle = family_bundle("llava", "prune:24:norm")
    with _open(bundle) as rt:
        out = rt.encode(photos()[:3])
    for emb, lay, extra in zip(out.embeddings, out.layout, out.outputs):
        assert emb.shape == (24, 48) and lay.tokens == 24 and set(extra) == {"indices"}
        idx = extra["indices"]
        assert idx.shape == (1, 24) and len(set(idx[0].tolist())) == 24 and idx.min() >= 0 and idx.max() < 64
    code, _, err = run_main(capsys, "encode", bundle, *photos()[:2], "--out", tmp_path / "enc")
    assert code == 0, err
    with np.load(tmp_path / "enc" / "embeddings.npz") as npz:
        assert sorted(npz.files) == ["image_0", "image_0.indices", "image_1", "image_1.indices"]
        assert np.array_equal(npz["image_1.indices"], out.outputs[1]["indices"])

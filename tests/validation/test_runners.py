"""Runners and the engine target: lifecycle, batching, HWC packing, and the TensorRT-missing path."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

from tokcomp_edge.calibration.images import ImageBatch
from tokcomp_edge.core.bundle import Bundle
from tokcomp_edge.errors import BundleError, InputError, RuntimeMissing
from tokcomp_edge.validation import ValidateConfig, validate
from tokcomp_edge.validation.inputs import (
    InputSpec,
    feed_for,
    infer_batched,
    recover_uint8,
)
from tokcomp_edge.validation.runners.base import Runner
from tokcomp_edge.validation.runners.onnxrt import OnnxRuntimeRunner
from tokcomp_edge.validation.runners.tensorrt import TensorRTRunner, to_channel_minor

from .conftest import FAST


def _have_tensorrt() -> bool:
    try:
        from tokcomp_edge.engines.trt_import import import_tensorrt

        import_tensorrt()
        return True
    except RuntimeMissing:
        return False


def test_onnxrt_runner_lifecycle_and_info(bundles):
    b = Bundle.load(bundles("pool"))
    r = OnnxRuntimeRunner(b.onnx_path("fp32"), device="cpu", threads=1)
    assert not r.active and r.info == {}  # constructing does no work
    with pytest.raises(RuntimeError, match="before activate"):
        r.infer({})
    with r:
        out = r.infer({"pixel_values": b.reference()["pixel_values.b1"]})
        assert r.info["providers"] == ["CPUExecutionProvider"] and r.info["fell_back"] is False
        assert r.gpu_memory() is None
    assert not r.active
    np.testing.assert_allclose(out["tokens"], b.reference()["tokens.b1"], atol=1e-4)


def test_onnxrt_unknown_device():
    with pytest.raises(InputError, match="unknown --device 'tpu'"):
        OnnxRuntimeRunner("x.onnx", device="tpu")


class _Echo(Runner):
    """Returns its input's batch index per image; fails if a batch outside lo..hi is fed."""

    def __init__(self, lo, hi):
        super().__init__()
        self.lo, self.hi, self.seen = lo, hi, []

    def _activate(self):
        pass

    def _deactivate(self):
        pass

    def _infer(self, feed):
        x = feed["pixel_values"]
        assert self.lo <= x.shape[0] <= self.hi
        self.seen.append(x.shape[0])
        return {"tokens": x[:, 0, 0, :1].copy()}


def test_infer_batched_chunks_and_pads():
    pv = np.arange(5, dtype=np.float32)[:, None, None, None] * np.ones((1, 3, 2, 2), np.float32)
    imgs = ImageBatch(np.zeros((5, 2, 2, 3), np.uint8), pv, [])
    spec = [InputSpec("pixel_values", "float32", "NCHW")]
    with _Echo(2, 2) as r:  # a static batch-2 engine
        out = infer_batched(r, spec, imgs, 2, 2)
    assert r.seen == [2, 2, 2]  # last chunk of 1 padded to 2
    assert out["tokens"][:, 0].tolist() == [0, 1, 2, 3, 4]


def test_feed_for_layouts():
    imgs = ImageBatch(np.full((1, 2, 2, 3), 7, np.uint8), np.ones((1, 3, 2, 2), np.float32), [])
    feed = feed_for([InputSpec("a", "uint8", "NHWC"), InputSpec("b", "float16", "NCHW")], imgs)
    assert feed["a"].dtype == np.uint8 and feed["a"].shape == (1, 2, 2, 3)
    assert feed["b"].dtype == np.float16 and feed["b"].shape == (1, 3, 2, 2)


def test_recover_uint8_only_for_8bit_inputs():
    from tokcomp_edge.calibration.images import Preprocess, normalize

    pre = Preprocess((2, 2), (0.5, 0.4, 0.3), (0.2, 0.3, 0.4))
    u8 = np.random.default_rng(0).integers(0, 256, (2, 2, 2, 3), dtype=np.uint8)
    np.testing.assert_array_equal(recover_uint8(normalize(u8, pre.mean, pre.std), pre), u8)
    assert recover_uint8(np.random.default_rng(0).random((1, 3, 2, 2), dtype=np.float32), pre) is None


def test_to_channel_minor_pads_channels():
    x = np.arange(2 * 3 * 2 * 2, dtype=np.float16).reshape(2, 3, 2, 2)
    hwc = to_channel_minor(x, 1)
    assert hwc.shape == (2, 2, 2, 3) and hwc[1, 0, 1, 2] == x[1, 2, 0, 1]
    hwc8 = to_channel_minor(x, 8)
    assert hwc8.shape == (2, 2, 2, 8) and hwc8.flags.c_contiguous
    np.testing.assert_array_equal(hwc8[..., :3], hwc)
    assert not hwc8[..., 3:].any()


# -- engines: the sidecar contract and the missing-TensorRT path -------------------------------------


def _fake_engine(bundle_dir, engines_dir, sha=None, batch=(1, 4), variant="fp32", engine_sha=None):
    """A .plan file with a tokcomp engine.json sidecar (the plan bytes are not a real engine)."""
    import hashlib

    from tokcomp_edge.engines.engine_info import SCHEMA

    engines_dir.mkdir(parents=True, exist_ok=True)
    plan = engines_dir / "gpu-trt10.3-fp32.plan"
    plan.write_bytes(b"not a real engine")
    bundle = Bundle.load(bundle_dir)
    side = {"schema": SCHEMA, "schema_version": 1, "variant": variant, "precision": "fp32",
            "engine": {"file": plan.name, "bytes": plan.stat().st_size,
                       "sha256": engine_sha or hashlib.sha256(plan.read_bytes()).hexdigest()},
            "profile": {"batch": {"min": batch[0], "opt": batch[1], "max": batch[1]}},
            "bundle": {"name": bundle.name, "path": os.path.relpath(bundle_dir, engines_dir),
                       "manifest_sha256": bundle.manifest_sha256(), "variant": variant,
                       "onnx_sha256": sha or bundle.manifest["files"][bundle.variant(variant)["file"]]["sha256"]}}
    plan.with_name(plan.stem + ".engine.json").write_text(json.dumps(side))
    return plan


@pytest.mark.skipif(_have_tensorrt(), reason="TensorRT is installed here: the missing-runtime path cannot be shown")
def test_engine_without_tensorrt_exits_3(bundles, cli, tmp_path):
    plan = _fake_engine(bundles("pool"), tmp_path / "engines")
    code, out, exc = cli("validate", plan, *FAST)  # bundle found through the sidecar's relative path
    assert code == 3 and isinstance(exc, RuntimeMissing)
    assert "TensorRT is not installed" in exc.one_line() and "\n" not in exc.one_line()
    with pytest.raises(RuntimeMissing):
        TensorRTRunner(plan).activate()


@pytest.mark.skipif(_have_tensorrt(), reason="TensorRT is installed here: the missing-runtime path cannot be shown")
def test_engine_exit_3_through_main(bundles, tmp_path, monkeypatch, capsys):
    """The one-line message and exit code as the real entry point prints them."""
    import typer

    from tokcomp_edge.cli import app as app_module
    from tokcomp_edge.cli import validate_cmds

    fresh = typer.Typer()
    validate_cmds.register(fresh)
    monkeypatch.setattr(app_module, "app", fresh)
    plan = _fake_engine(bundles("pool"), tmp_path / "engines")
    with pytest.raises(SystemExit) as ex:
        app_module.main(["validate", str(plan), "--bundle", str(bundles("pool")), *FAST])
    assert ex.value.code == 3
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and "TensorRT is not installed" in err[0]


def test_engine_from_other_onnx_is_refused(bundles, cli, tmp_path):
    plan = _fake_engine(bundles("pool"), tmp_path / "engines", sha="0" * 64)
    code, _, exc = cli("validate", plan, "--bundle", bundles("pool"), *FAST)
    assert code == 2 and isinstance(exc, BundleError)
    assert "was built from a different model.onnx" in exc.message


def test_replaced_plan_or_foreign_sidecar_is_refused(bundles, cli, tmp_path):
    """The engine's own sha256 (engine.json) is checked before validate uses it (exit 2, naming the file)."""
    plan = _fake_engine(bundles("pool"), tmp_path / "engines")
    plan.write_bytes(b"another build's engine")  # replaced .plan
    code, _, exc = cli("validate", plan, *FAST)
    assert code == 2 and isinstance(exc, BundleError)
    assert f"engine {plan.name} is not the file its sidecar describes" in exc.message
    plan = _fake_engine(bundles("pool"), tmp_path / "other", engine_sha="f" * 64)  # sidecar of another build
    code, _, exc = cli("validate", plan, *FAST)
    assert code == 2 and "is not the file its sidecar describes" in exc.message
    side = plan.with_name(plan.stem + ".engine.json")
    data = json.loads(side.read_text())
    del data["engine"]
    side.write_text(json.dumps(data))
    code, _, exc = cli("validate", plan, *FAST)
    assert code == 2 and "records no sha256" in exc.message


def test_engine_without_sidecar_or_with_wrong_variant(bundles, cli, tmp_path):
    plan = tmp_path / "lonely.plan"
    plan.write_bytes(b"x")
    code, _, exc = cli("validate", plan, "--bundle", bundles("pool"), *FAST)
    assert code == 2 and "lonely.engine.json does not exist" in exc.message
    plan = _fake_engine(bundles("pool"), tmp_path / "engines")
    code, _, exc = cli("validate", plan, "--variant", "fp16", *FAST)
    assert code == 2 and "does not match engine" in exc.message


def test_engine_batch_outside_profile(bundles, tmp_path):
    plan = _fake_engine(bundles("pool"), tmp_path / "engines", batch=(1, 2))
    with pytest.raises(InputError, match=r"--batch 4 is outside the engine's optimization profile .* range 1\.\.2"):
        validate(ValidateConfig(target=plan, batches=(4,), quiet=True))


@pytest.mark.tensorrt
@pytest.mark.skipif(not _have_tensorrt(), reason="needs TensorRT and an NVIDIA GPU")
def test_engine_validates_on_gpu(bundles, tmp_path):
    """Where TensorRT is: build an fp32 engine of the tiny bundle and validate it end to end."""
    from tokcomp_edge.engines.build import BuildConfig, build_engine

    result = build_engine(BuildConfig(bundle=bundles("pool"), profile="fp32", engines_dir=tmp_path / "engines",
                                      quiet=True))
    res = validate(ValidateConfig(target=result.plan.engine_path, iterations=5, quiet=True, out_dir=tmp_path))
    assert res, res.failures
    assert res.report["target"]["runtime"]["runtime"] == "tensorrt"
    assert res.report["memory"]["gpu_target"]["context_device_memory_bytes"] is not None


@pytest.mark.skipif(_have_tensorrt(), reason="TensorRT is installed here: the missing-runtime path cannot be shown")
def test_engine_stays_valid_after_bundle_gains_a_variant(bundles, cli, tmp_path):
    """Adding a variant rewrites manifest.json; an engine built before must still match its bundle
    (regression: the sidecar was matched on the manifest's sha256, which then changed)."""
    import shutil

    bundle_dir = tmp_path / "bundle"
    shutil.copytree(bundles("pool"), bundle_dir)
    plan = _fake_engine(bundle_dir, tmp_path / "engines")
    b = Bundle.load(bundle_dir)
    before = b.manifest_sha256()
    b.manifest.setdefault("variants", {})["fp32"]["note"] = "manifest rewritten, as add_variant does"
    b.save_manifest()
    assert Bundle.load(bundle_dir).manifest_sha256() != before
    code, _, exc = cli("validate", plan, "--bundle", bundle_dir, *FAST)
    assert code == 3 and isinstance(exc, RuntimeMissing)  # got past the identity check to the runtime


def test_tensorrt_feed_dtype_must_match_the_engine():
    """No silent cast: a float32 feed for an engine whose input is uint8 (nhwc) or float16 is refused."""
    r = TensorRTRunner(Path("x.plan"))
    r.context, r._stream = object(), object()
    r.inputs, r.outputs = ["pixel_values"], []
    r.dtypes, r.formats = {"pixel_values": np.dtype(np.uint8)}, {"pixel_values": "LINEAR"}
    with pytest.raises(InputError, match="engine input pixel_values takes uint8, the feed is float32"):
        r._infer({"pixel_values": np.zeros((1, 8, 8, 3), np.float32)})


def test_tensorrt_without_cuda_runtime_is_exit_3(monkeypatch):
    """A Jetson image without libcudart: one line, exit 3 — not a ctypes traceback."""
    import types

    from polygraphy import cuda

    import tokcomp_edge.engines.trt_import as ti
    import tokcomp_edge.validation.runners.tensorrt as rt

    monkeypatch.setattr(rt, "load_tensorrt", lambda: types.SimpleNamespace())
    monkeypatch.setattr(ti, "require_gpu", lambda: types.SimpleNamespace(name="Orin"))

    def no_cudart(*a, **k):
        raise OSError("libcudart.so: cannot open shared object file: No such file or directory")

    monkeypatch.setattr(cuda, "Stream", no_cudart)
    with pytest.raises(RuntimeMissing) as exc:
        TensorRTRunner(Path("x.plan")).activate()
    assert exc.value.exit_code == 3 and "libcudart" in exc.value.one_line() and "\n" not in exc.value.one_line()

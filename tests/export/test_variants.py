"""fp16 / nhwc / fp16-nhwc variants of real tiny bundles: made, checked on ONNX Runtime, registered,
cached; failures register nothing."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest

from tokcomp_edge.core.bundle import Bundle
from tokcomp_edge.core.lint import lint_model
from tokcomp_edge.core.ort_session import ort_session
from tokcomp_edge.core.tolerance import DEFAULTS, Tolerance
from tokcomp_edge.errors import InputError, ParityError
from tokcomp_edge.export.fp16 import Fp16Options
from tokcomp_edge.export.variant_check import nchw_from_uint8, uint8_images
from tokcomp_edge.export.variants import (
    VARIANT_KEYS,
    VariantOptions,
    create_variants,
    ensure_variant,
    parse_variant_key,
    variant_key,
)

QUIET = VariantOptions(quiet=True)


@pytest.fixture
def bundle_copy(make_bundle, tmp_path):
    """A private copy of a session-cached tiny bundle (variants write into the folder)."""

    def copy(model="tiny-clip", spec="pool:2", **kw) -> Bundle:
        src = make_bundle(model, spec, **kw).path
        dst = tmp_path / src.name
        shutil.copytree(src, dst)
        return Bundle.load(dst)

    return copy


def leftovers(bundle: Bundle) -> list[str]:
    return sorted(p.name for p in bundle.path.iterdir() if p.name.startswith("."))


# --- keys -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("precision,layout,key", [
    ("fp32", "nchw-float", "fp32"), ("fp16", "nchw-float", "fp16"), ("int8", "nchw-float", "int8"),
    ("fp32", "nhwc-uint8", "nhwc"), ("fp16", "nhwc-uint8", "fp16-nhwc"), ("int8", "nhwc-uint8", "int8-nhwc")])
def test_variant_key_and_its_inverse(precision, layout, key):
    assert variant_key(precision, layout) == key
    assert parse_variant_key(key) == (precision, layout)
    assert key in VARIANT_KEYS


def test_unknown_keys_are_input_errors():
    with pytest.raises(InputError, match="precision 'bf16'"):
        variant_key("bf16", "nchw-float")
    with pytest.raises(InputError, match="input layout 'nhwc'"):
        variant_key("fp16", "nhwc")
    with pytest.raises(InputError, match="unknown variant 'fp8'") as exc:
        parse_variant_key("fp8")
    assert exc.value.exit_code == 2


# --- fp16 -----------------------------------------------------------------------------------------


def test_fp16_variant_is_made_checked_and_registered(bundle_copy):
    bundle = bundle_copy()
    fp32 = onnx.load(str(bundle.onnx_path("fp32")))
    path = ensure_variant(bundle, "fp16", options=QUIET)
    assert path == bundle.path / "model.fp16.onnx" and path.is_file()
    entry = bundle.variants()["fp16"]
    assert entry["precision"] == "fp16" and entry["input_layout"] == "nchw-float"
    assert entry["source"].startswith("modelopt-autocast 0.")
    assert entry["inputs"][0] == {"name": "pixel_values", "shape": ["batch", 3, 224, 224], "dtype": "float32",
                                  "layout": "NCHW"}
    assert entry["outputs"] == bundle.variants()["fp32"]["outputs"]
    check = entry["check"]
    tokens = check["outputs"]["tokens"]
    assert check["passed"] and tokens["cosine_min"] >= 0.999 and tokens["rel_l2_err"] <= 0.01
    assert 0 < tokens["max_abs_err"] and check["batches"] == bundle.reference_batches()
    assert check["onnxruntime_native"]["passed"] and check["tolerance"] == DEFAULTS["fp16"].to_dict()
    assert entry["lint"] == {"errors": 0, "warnings": 0}
    assert entry["base"]["sha256"] == bundle.manifest["files"]["model.onnx"]["sha256"]
    # Really fp16 inside, LayerNorm still the native op, weights half the size.
    model = onnx.load(str(path))
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)
    ln = sum(n.op_type == "LayerNormalization" for n in fp32.graph.node)
    assert ln > 0 and entry["conversion"]["layernorm_nodes"] == ln
    assert path.stat().st_size < 0.6 * bundle.onnx_path("fp32").stat().st_size
    # Registered with its checksum: a fresh verified load accepts it; nothing temporary left behind.
    assert "fp16" in Bundle.load(bundle.path, verify=True).variants()
    assert leftovers(bundle) == []


def test_cached_variant_is_reused_and_force_remakes_it(bundle_copy, monkeypatch):
    bundle = bundle_copy()
    path = ensure_variant(bundle, "fp16", options=QUIET)
    from tokcomp_edge.export import variants as variants_module

    def boom(*a, **k):
        raise AssertionError("AutoCast must not run for a cached variant")

    monkeypatch.setattr(variants_module, "convert_fp16", boom)
    assert ensure_variant(bundle, "fp16", options=QUIET) == path
    with pytest.raises(AssertionError, match="must not run"):
        ensure_variant(bundle, "fp16", force=True, options=QUIET)


def test_failing_fp16_check_registers_nothing(bundle_copy):
    bundle = bundle_copy()
    manifest_before = (bundle.path / "manifest.json").read_bytes()
    impossible = VariantOptions(quiet=True, fp16_tolerance=Tolerance(atol=0.0, min_cosine=1.0))
    with pytest.raises(ParityError, match="fp16 variant fails its check") as exc:
        ensure_variant(bundle, "fp16", options=impossible)
    assert exc.value.exit_code == 1 and "outside atol 0 + rtol 0·scale" in exc.value.message
    assert "fp16 emulation, golden (batch 1) · tokens" in exc.value.message
    assert not (bundle.path / "model.fp16.onnx").exists() and leftovers(bundle) == []
    assert (bundle.path / "manifest.json").read_bytes() == manifest_before
    assert "fp16" not in Bundle.load(bundle.path).variants()


def test_fp16_with_fp16_io(bundle_copy):
    bundle = bundle_copy()
    opts = VariantOptions(quiet=True, fp16=Fp16Options(keep_io_types=False))
    ensure_variant(bundle, "fp16", options=opts)
    entry = bundle.variants()["fp16"]
    assert entry["inputs"][0]["dtype"] == "float16" and entry["outputs"][0]["dtype"] == "float16"
    assert entry["check"]["passed"] and entry["options"]["keep_io_types"] is False
    # The nhwc wrapper normalises in fp32 and casts to what the fp16 model takes.
    path = ensure_variant(bundle, "fp16-nhwc", options=opts)
    assert any(n.name == "tokcomp_nhwc/CastFp16" for n in onnx.load(str(path)).graph.node)
    assert bundle.variants()["fp16-nhwc"]["check"]["passed"]


def test_pruned_bundle_fp16_check_compares_index_sets(bundle_copy):
    bundle = bundle_copy("tiny-clip", "prune:16:cls-attn")
    ensure_variant(bundle, "fp16", options=QUIET)
    check = bundle.variants()["fp16"]["check"]
    idx = check["outputs"]["indices"]
    assert check["passed"] and idx["unexplained_swaps"] == 0
    assert 0.6 <= idx["jaccard_min"] <= 1.0 and idx["score_error"] > 0


# --- nhwc -------------------------------------------------------------------------------------------


def test_nhwc_variant_takes_uint8_frames_and_matches_the_float_path(bundle_copy):
    bundle = bundle_copy()
    path = ensure_variant(bundle, "nhwc", options=QUIET)
    entry = bundle.variants()["nhwc"]
    assert entry["precision"] == "fp32" and entry["input_layout"] == "nhwc-uint8"
    assert entry["inputs"] == [{"name": "pixel_values", "shape": ["batch", 224, 224, 3], "dtype": "uint8",
                                "layout": "NHWC"}]
    assert entry["check"]["passed"] and entry["check"]["outputs"]["tokens"]["max_abs_err"] <= 1e-5 * 50
    assert entry["base"]["variant"] == "fp32" and entry["preprocess"]["mean"] == bundle.encoder["mean"]
    # Independently of the recorded check: batch 3 (not a reference batch) through both paths.
    frames = uint8_images(3, (224, 224), seed=7)
    got = ort_session(path).run(["tokens"], {"pixel_values": frames})[0]
    want = ort_session(bundle.onnx_path("fp32")).run(
        ["tokens"], {"pixel_values": nchw_from_uint8(frames, bundle.encoder["mean"], bundle.encoder["std"])})[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert lint_model(path).issues == []


def test_nhwc_check_catches_a_wrong_normalisation(bundle_copy, monkeypatch):
    """Wrap with swapped mean/std: the outputs move, the check fails, nothing is registered."""
    bundle = bundle_copy()
    from tokcomp_edge.export import variants as variants_module

    real = variants_module.wrap_nhwc
    monkeypatch.setattr(variants_module, "wrap_nhwc", lambda m, mean, std: real(m, mean=std, std=mean))
    with pytest.raises(ParityError, match="nhwc variant differs from the fp32 variant"):
        ensure_variant(bundle, "nhwc", options=QUIET)
    assert "nhwc" not in bundle.variants() and not (bundle.path / "model.nhwc.onnx").exists()
    assert leftovers(bundle) == []


def test_fp16_nhwc_makes_its_base_and_follows_it(bundle_copy, monkeypatch):
    bundle = bundle_copy()
    path = ensure_variant(bundle, "fp16-nhwc", options=QUIET)
    assert set(bundle.variants()) == {"fp32", "fp16", "fp16-nhwc"}
    entry = bundle.variants()["fp16-nhwc"]
    assert entry["precision"] == "fp16" and entry["base"]["variant"] == "fp16"
    assert entry["base"]["sha256"] == bundle.manifest["files"]["model.fp16.onnx"]["sha256"]
    first = path.read_bytes()
    # Remaking fp16 (AutoCast is deterministic, so change its options) re-derives the wrapper in the same
    # step: one manifest write registers both (issue 16 §4), so no moment holds a stale fp16-nhwc.
    saves = []
    real_save = Bundle.save_manifest
    monkeypatch.setattr(Bundle, "save_manifest", lambda self: (saves.append(1), real_save(self))[1])
    ensure_variant(bundle, "fp16", force=True,
                   options=VariantOptions(quiet=True, fp16=Fp16Options(fp32_op_types=("Softmax",))))
    assert len(saves) == 1
    nhwc = bundle.variants()["fp16-nhwc"]
    assert (bundle.path / nhwc["file"]).read_bytes() != first
    assert nhwc["base"]["file"] == bundle.variants()["fp16"]["file"]
    assert ensure_variant(bundle, "fp16-nhwc", options=QUIET) == bundle.path / nhwc["file"]  # current: reused
    # The remade fp16 sits under a new name (the old file is removed only once the manifest points past it).
    fp16_file = bundle.variants()["fp16"]["file"]
    assert fp16_file != "model.fp16.onnx" and not (bundle.path / "model.fp16.onnx").exists()
    assert bundle.variants()["fp16-nhwc"]["base"]["sha256"] == bundle.manifest["files"][fp16_file]["sha256"]


def test_fp16_refresh_whose_nhwc_fails_changes_nothing(bundle_copy, monkeypatch):
    """fp16 and the fp16-nhwc wrapping it are one unit: when the re-derived wrapper fails its check, the new
    fp16 is not registered either; the bundle verifies as before and no temp file is left."""
    import tokcomp_edge.export.variants as V
    from tokcomp_edge.core.comparison import CheckResult

    bundle = bundle_copy()
    ensure_variant(bundle, "fp16-nhwc", options=QUIET)
    before = json.loads((bundle.path / "manifest.json").read_text())
    monkeypatch.setattr(V, "check_nhwc", lambda *a, **k: CheckResult(False, {}, ["planted nhwc failure"]))
    with pytest.raises(ParityError, match="planted nhwc failure"):
        ensure_variant(bundle, "fp16", force=True,
                       options=VariantOptions(quiet=True, fp16=Fp16Options(fp32_op_types=("Softmax",))))
    assert json.loads((bundle.path / "manifest.json").read_text()) == before
    Bundle.load(bundle.path)  # verifies
    assert leftovers(bundle) == []


# --- create_variants and int8 ------------------------------------------------------------------------


def test_create_variants_makes_bases_first_and_returns_paths(bundle_copy):
    bundle = bundle_copy()
    paths = create_variants(bundle, ["fp16-nhwc", "nhwc", "fp16", "nhwc"], options=QUIET)
    assert list(paths) == ["fp16", "fp16-nhwc", "nhwc"]  # deduplicated, NCHW bases first
    assert all(p.is_file() and p.parent == bundle.path for p in paths.values())
    reloaded = Bundle.load(bundle.path, verify=True)
    assert all(reloaded.variants()[k]["check"]["passed"] for k in paths)


def test_int8_without_calibration_is_a_clear_input_error(bundle_copy):
    bundle = bundle_copy()
    with pytest.raises(InputError, match="no int8 variant; calibrate first") as exc:
        ensure_variant(bundle, "int8", options=QUIET)
    assert exc.value.exit_code == 2 and "calibrate" in exc.value.hint
    with pytest.raises(InputError, match="calibrate first"):
        ensure_variant(bundle, "int8-nhwc", options=QUIET)
    # create_variants validates every key before doing any work: no fp16 made on the way.
    with pytest.raises(InputError, match="calibrate first"):
        create_variants(bundle, ["fp16", "int8"], options=QUIET)
    with pytest.raises(InputError, match="unknown variant"):
        create_variants(bundle, ["fp16", "bf16"], options=QUIET)
    assert set(bundle.variants()) == {"fp32"}


def test_int8_nhwc_wraps_a_registered_int8_variant(bundle_copy):
    """Once calibration has registered `int8`, int8-nhwc is the same wrapper around it."""
    bundle = bundle_copy()
    src = bundle.path / ".int8.tmp"
    shutil.copyfile(bundle.onnx_path("fp32"), src)  # stands in for the calibrated Q/DQ graph
    bundle.add_variant("int8", src, {"precision": "int8", "input_layout": "nchw-float"})
    assert ensure_variant(bundle, "int8", options=QUIET) == bundle.path / "model.int8.onnx"
    path = ensure_variant(bundle, "int8-nhwc", options=QUIET)
    entry = bundle.variants()["int8-nhwc"]
    assert path.is_file() and entry["precision"] == "int8" and entry["base"]["variant"] == "int8"
    assert entry["check"]["passed"]


def test_fp32_key_is_the_bundle_model(bundle_copy):
    bundle = bundle_copy()
    assert ensure_variant(bundle, "fp32", options=QUIET) == bundle.path / "model.onnx"
    assert create_variants(bundle, ["fp32"], options=QUIET) == {"fp32": bundle.path / "model.onnx"}


def test_replacing_a_variant_leaves_a_verifiable_bundle_at_every_step(bundle_copy, monkeypatch):
    """Issue 9: adding a variant is atomic — new file under a new name, manifest written, old file removed.
    An interrupt after any of those steps leaves a bundle that verifies."""
    from pathlib import Path

    from tokcomp_edge.core.bundle import Bundle

    bundle = bundle_copy()
    first = bundle.path / ".a.tmp"
    shutil.copyfile(bundle.onnx_path("fp32"), first)
    bundle.add_variant("int8", first, {"precision": "int8", "input_layout": "nchw-float"})
    assert bundle.variants()["int8"]["file"] == "model.int8.onnx"

    class Interrupt(Exception):
        pass

    steps = {"unlink": Path.unlink, "save": Bundle.save_manifest}
    for where in ("save", "unlink"):
        again = bundle.path / f".{where}.tmp"
        shutil.copyfile(bundle.onnx_path("fp32"), again)
        with open(again, "ab") as fh:
            fh.write(b"\0")  # different bytes, so a different file name

        def boom(*a, _where=where, **k):
            raise Interrupt(_where)

        target = Path if where == "unlink" else Bundle
        monkeypatch.setattr(target, "unlink" if where == "unlink" else "save_manifest", boom)
        with pytest.raises(Interrupt):
            Bundle.load(bundle.path, verify=False).add_variant("int8", again, {"precision": "int8",
                                                                               "input_layout": "nchw-float"})
        monkeypatch.setattr(target, "unlink" if where == "unlink" else "save_manifest", steps[where])
        Bundle.load(bundle.path)  # verifies: every recorded file is there with its sha256
    final = Bundle.load(bundle.path)
    assert final.variants()["int8"]["file"].startswith("model.int8.")
    recorded = set(final.manifest["files"])
    assert not [n for n in recorded if n.startswith("model.int8") and n != final.variants()["int8"]["file"]]

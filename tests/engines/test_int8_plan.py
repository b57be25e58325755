"""The int8 build profiles on a really calibrated bundle (tiny-clip, exported and calibrated once per module).

The other engine tests use hand-made bundles whose "int8 variant" is a copy of the fp32 graph; this one
proves that what `tokcomp calibrate` registers is what the int8 plan picks up, and that int8-nhwc
(the uint8 wrapper around it) plans too.
"""

from __future__ import annotations

import pytest

from tokcomp_edge.engines import gpu, trt_import
from tokcomp_edge.engines.build import BuildConfig, build_engine
from tokcomp_edge.errors import RuntimeMissing


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    from tokcomp_edge.calibration.int8 import CalibrateConfig, calibrate
    from tokcomp_edge.export import ExportConfig, export_bundle

    out = tmp_path_factory.mktemp("int8") / "tiny_pool2"
    export_bundle(ExportConfig(model="tiny-clip", compress="pool:2", out=out, batch_max=4, quiet=True))
    calibrate(CalibrateConfig(bundle=out, synthetic=True, max_images=4, method="max", quiet=True))
    return out


@pytest.fixture
def bare_machine(monkeypatch):
    """No TensorRT and no GPU, whatever this machine has."""
    monkeypatch.setattr(trt_import, "_MODULES", ("tensorrt_absent_in_this_test",))
    monkeypatch.setattr(gpu, "_DRIVER_LIBS", ("libcuda-not-here.so.1",))


def test_int8_profile_plans_the_calibrated_variant(calibrated, tmp_path, bare_machine):
    engines = tmp_path / "engines"
    result = build_engine(BuildConfig(bundle=calibrated, profile="int8", engines_dir=engines, dry_run=True,
                                      quiet=True))
    plan = result.plan
    assert result.dry_run and plan.variant == "int8" and plan.variant_ready
    assert plan.onnx_path == calibrated / "model.int8.onnx"
    inp = plan.inputs[0]
    assert (inp.name, inp.layout, inp.dtype) == ("pixel_values", "NCHW", "float32")
    assert (inp.shape_min, inp.shape_max) == ((1, 3, 224, 224), (4, 3, 224, 224))
    assert not any("calibrate" in n for n in plan.notes)
    assert all("model.int8.onnx" in cmd for cmd in result.trtexec.values())
    assert not engines.exists()
    # past the dry run, the int8 gate (exit 2) is passed: it stops only at the missing TensorRT (exit 3)
    with pytest.raises(RuntimeMissing):
        build_engine(BuildConfig(bundle=calibrated, profile="int8", engines_dir=engines, quiet=True))
    assert not engines.exists()


def test_int8_nhwc_profile_plans_the_wrapper_around_the_calibrated_variant(calibrated, tmp_path, bare_machine):
    from tokcomp_edge.core.bundle import Bundle
    from tokcomp_edge.export.variants import VariantOptions, ensure_variant

    profile = tmp_path / "int8-nhwc.toml"
    profile.write_text('precision = "int8"\ninput = "nhwc-uint8"\n')
    cfg = BuildConfig(bundle=calibrated, profile=profile, engines_dir=tmp_path / "engines", dry_run=True, quiet=True)
    before = build_engine(cfg).plan
    assert before.variant == "int8-nhwc" and not before.variant_ready
    assert any("creates it" in n for n in before.notes)  # build makes it from the int8 variant, no calibrate hint
    ensure_variant(Bundle.load(calibrated), "int8-nhwc", options=VariantOptions(quiet=True))
    after = build_engine(cfg).plan
    inp = after.inputs[0]
    assert after.variant_ready and after.onnx_path == calibrated / "model.int8-nhwc.onnx"
    assert (inp.layout, inp.dtype, inp.shape_opt) == ("NHWC", "uint8", (1, 224, 224, 3))

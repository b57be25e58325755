"""Real engine builds of every preset for a tiny encoder, validated against the bundle's golden reference.

Needs TensorRT and an NVIDIA GPU (skipped with the reason elsewhere); run with `pytest -m tensorrt`.
"""

from __future__ import annotations

import json

import pytest

from tokcomp_edge.engines.build import BuildConfig, build_engine
from tokcomp_edge.engines.trt_import import probe_target
from tokcomp_edge.errors import InputError, ProfileError, RuntimeMissing

pytestmark = pytest.mark.tensorrt


@pytest.fixture(scope="module")
def target():
    t = probe_target()
    if t.gpu is None or t.trt_version is None:
        pytest.skip("needs TensorRT and an NVIDIA GPU: " + "; ".join(t.missing))
    return t


@pytest.fixture(scope="module")
def bundle(target, tmp_path_factory):
    from tokcomp_edge.export import ExportConfig, export_bundle

    out = tmp_path_factory.mktemp("bundles") / "tiny-clip_pool2"
    export_bundle(ExportConfig(model="tiny-clip", compress="pool:2", out=out, batch_max=4, quiet=True))
    return out


def _validate(engine, bundle, tmp_path):
    from tokcomp_edge.validation import ValidateConfig, validate

    result = validate(ValidateConfig(target=engine, bundle=bundle, iterations=2, warmup=1, extra_inputs=0,
                                     torch="off", quiet=True, out_dir=tmp_path / "reports"))
    assert result.passed, result.failures
    return result


@pytest.mark.parametrize("preset, fp16_layers", [("fp32", False), ("fp16", True), ("fp16-nhwc", True),
                                                 ("orin-fp16", True)])
def test_build_and_validate_preset(target, bundle, tmp_path, preset, fp16_layers):
    engines = tmp_path / "engines"
    result = build_engine(BuildConfig(bundle=bundle, profile=preset, engines_dir=engines, quiet=True))
    plan, record = result.plan, result.record
    assert plan.engine_path.is_file() and plan.sidecar_path.is_file() and plan.layers_path.is_file()
    assert not plan.has_placeholders and target.gpu.slug in plan.engine_path.name
    on_disk = json.loads(plan.sidecar_path.read_text())
    assert on_disk == record
    assert record["tensorrt"]["version"] == target.trt_version and record["gpu"]["name"] == target.gpu.name
    assert record["engine"]["bytes"] == plan.engine_path.stat().st_size
    assert record["variant"] == plan.variant and record["bundle"]["onnx"] == plan.onnx_path.name
    layers = record["layers"]
    assert layers["total"] > 0 and layers["placement"]["dla"] == 0
    if fp16_layers:
        assert layers["precision"]["fp16"] > 0, layers
    else:
        assert layers["precision"]["fp16"] == 0 and layers["precision"]["int8"] == 0, layers
    assert json.loads(plan.layers_path.read_text())["Layers"]
    _validate(plan.engine_path, bundle, tmp_path)


def test_hwc_input_format(target, bundle, tmp_path):
    prof = tmp_path / "hwc.toml"
    prof.write_text('precision = "fp32"\nengine_input_format = "hwc"\ntiming_cache = "off"\n')
    result = build_engine(BuildConfig(bundle=bundle, profile=prof, engines_dir=tmp_path / "e", quiet=True))
    io = {t["name"]: t for t in result.record["io"]}
    assert io["pixel_values"]["format"] == "HWC"
    assert result.record["build"]["timing_cache"]["path"] is None
    _validate(result.plan.engine_path, bundle, tmp_path)


def test_timing_cache_is_reused_and_force_rebuilds(target, bundle, tmp_path):
    engines = tmp_path / "engines"
    first = build_engine(BuildConfig(bundle=bundle, profile="fp32", engines_dir=engines, quiet=True))
    cache = first.plan.timing_cache_path
    assert cache.is_file() and first.record["build"]["timing_cache"]["saved"] is True
    second = build_engine(BuildConfig(bundle=bundle, profile="fp32", engines_dir=engines, force=True, quiet=True))
    assert second.record["build"]["timing_cache"]["loaded"] is True


def test_portability_flags_build(target, bundle, tmp_path):
    if target.gpu.compute_capability < (8, 0):
        pytest.skip("hardware compatibility needs an Ampere or newer GPU")
    prof = tmp_path / "portable.toml"
    prof.write_text('precision = "fp16"\nhardware_compatibility = "ampere+"\nversion_compatible = true\n'
                    'builder_optimization_level = 1\nworkspace = "512MiB"\n')
    result = build_engine(BuildConfig(bundle=bundle, profile=prof, engines_dir=tmp_path / "e", quiet=True))
    p = result.record["profile"]
    assert (p["hardware_compatibility"], p["version_compatible"], p["workspace"]) == ("ampere+", True, "512MiB")


def test_orin_dla(target, bundle, tmp_path):
    from tokcomp_edge.engines.dla import STRONGLY_TYPED_DLA_FROM, version_tuple
    from tokcomp_edge.engines.trt_import import import_tensorrt, trt_version

    trt = import_tensorrt()
    engines = tmp_path / "engines"
    cfg = BuildConfig(bundle=bundle, profile="orin-dla", engines_dir=engines, quiet=True)
    if version_tuple(trt_version(trt)) < STRONGLY_TYPED_DLA_FROM:  # 10.x, 11.0–11.4.0: refused in the plan
        with pytest.raises(ProfileError, match="orin-fp16"):
            build_engine(cfg)
        assert not engines.exists() or not any(p.suffix == ".plan" for p in engines.rglob("*"))
        return
    cores = trt.Builder(trt.Logger(trt.Logger.WARNING)).num_DLA_cores
    if cores == 0:
        with pytest.raises(RuntimeMissing, match="DLA core"):
            build_engine(cfg)
        assert not any(p.suffix == ".plan" for p in engines.rglob("*"))
        return
    result = build_engine(cfg)
    place = result.record["layers"]["placement"]
    assert place["dla"] + place["gpu"] > 0 and place["dla"] > 0
    measured = result.record["layers"]["placement_measured"]
    assert measured["kind"] == "measured" and measured["dla"] > 0, measured


def test_int8_needs_calibration(target, bundle, tmp_path):
    with pytest.raises(InputError, match="calibrat"):
        build_engine(BuildConfig(bundle=bundle, profile="int8", engines_dir=tmp_path / "e", quiet=True))

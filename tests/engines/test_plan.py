"""BuildPlan: bundle + profile + target → variant, shapes, dtypes, names; every preset; every rejection."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tokcomp_edge.core.bundle import Bundle
from tokcomp_edge.engines.gpu import GpuInfo, gpu_slug
from tokcomp_edge.engines.plan import make_plan, resolve_batch
from tokcomp_edge.engines.profile import load_profile, profile_from_dict
from tokcomp_edge.engines.trt_import import BuildTarget
from tokcomp_edge.errors import ProfileError

UNKNOWN = BuildTarget(gpu=None, trt_version=None, missing=("no NVIDIA driver", "TensorRT is not installed"))
ORIN = BuildTarget(gpu=GpuInfo("Orin", (8, 7)), trt_version="10.3.0.30")
H100 = BuildTarget(gpu=GpuInfo("NVIDIA H100 80GB HBM3", (9, 0)), trt_version="11.4.0.106")
# DLA builds are strongly typed only from TensorRT 11.4.1 (JetPack 7.2.2+ on Orin): engines/dla.py
ORIN_JP7 = BuildTarget(gpu=GpuInfo("Orin", (8, 7)), trt_version="11.4.1.1")

# preset → (variant, input shape without batch, dtype of a fresh bundle, batch min/opt/max for bundle 1–8)
EXPECTED = {
    "fp32": ("fp32", (3, 8, 8), "float32", (1, 1, 8)),
    "fp16": ("fp16", (3, 8, 8), "float32", (1, 1, 8)),  # AutoCast keeps float32 I/O by default
    "fp16-nhwc": ("fp16-nhwc", (8, 8, 3), "uint8", (1, 1, 8)),
    "int8": ("int8", (3, 8, 8), None, (1, 1, 8)),
    "orin-fp16": ("fp16", (3, 8, 8), "float32", (1, 1, 1)),
    "orin-dla": ("fp16", (3, 8, 8), "float32", (1, 1, 1)),
}


@pytest.mark.parametrize("preset", sorted(EXPECTED))
def test_plan_of_every_preset(make_bundle, tmp_path, preset):
    bundle = Bundle.load(make_bundle(name="tiny_pool2"))
    target = ORIN_JP7 if preset == "orin-dla" else ORIN
    trt = target.trt_short
    plan = make_plan(bundle, load_profile(preset), target, tmp_path / "engines")
    variant, shape, dtype, (lo, opt, hi) = EXPECTED[preset]
    inp = plan.inputs[0]
    assert plan.variant == variant
    assert (inp.name, inp.dtype, inp.engine_format) == ("pixel_values", dtype, "linear")
    assert (inp.shape_min, inp.shape_opt, inp.shape_max) == ((lo, *shape), (opt, *shape), (hi, *shape))
    assert inp.layout == ("NHWC" if "nhwc" in preset else "NCHW")
    assert plan.variant_ready is (variant == "fp32")
    assert plan.onnx_path == bundle.path / ("model.onnx" if variant == "fp32" else f"model.{variant}.onnx")
    folder = tmp_path / "engines" / "tiny_pool2"
    assert plan.engine_path == folder / f"orin-sm87-trt{trt}-{preset}.plan"
    assert plan.sidecar_path == folder / f"orin-sm87-trt{trt}-{preset}.engine.json"
    assert plan.layers_path == folder / f"orin-sm87-trt{trt}-{preset}.layers.json"
    assert plan.timing_cache_path == tmp_path / "engines" / "timing" / f"orin-sm87-trt{trt}.cache"
    assert plan.output_names == ("tokens",)
    assert plan.manifest_sha256 == bundle.manifest_sha256()
    assert not plan.has_placeholders
    json.dumps(plan.to_dict())
    if variant == "int8":
        assert any("calibrate" in n for n in plan.notes)
    elif variant != "fp32":
        assert any("creates it" in n for n in plan.notes)
    if preset == "orin-dla":
        assert any("DLA falls back" in n for n in plan.notes)


def test_existing_variant_is_used_with_its_manifest_dtype(make_bundle, tmp_path):
    folder = make_bundle(extra_variants={"fp16": {"dtype": "float16"}, "int8": {"dtype": "float32"}})
    bundle = Bundle.load(folder)
    plan = make_plan(bundle, load_profile("fp16"), ORIN, tmp_path)
    assert plan.variant_ready and plan.onnx_path == folder / "model.fp16.onnx"
    assert plan.inputs[0].dtype == "float16" and not plan.notes
    int8 = make_plan(bundle, load_profile("int8"), ORIN, tmp_path)
    assert int8.variant_ready and int8.inputs[0].dtype == "float32"


def test_unknown_target_keeps_marked_placeholders(make_bundle, tmp_path):
    bundle = Bundle.load(make_bundle())
    plan = make_plan(bundle, load_profile("fp16"), UNKNOWN, tmp_path)
    assert plan.engine_path.name == "{gpu}-trt{trt}-fp16.plan"
    assert plan.timing_cache_path.name == "{gpu}-trt{trt}.cache"
    assert plan.has_placeholders
    note = next(n for n in plan.notes if "placeholders" in n)
    assert "no NVIDIA driver" in note and "TensorRT is not installed" in note
    half = BuildTarget(gpu=GpuInfo("Orin", (8, 7)), trt_version=None, missing=("TensorRT is not installed",))
    assert make_plan(bundle, load_profile("fp16"), half, tmp_path).engine_path.name == "orin-sm87-trt{trt}-fp16.plan"


def test_timing_cache_off_and_custom_path(make_bundle, tmp_path):
    bundle = Bundle.load(make_bundle())
    off = profile_from_dict({"precision": "fp32", "timing_cache": "off"}, name="nocache")
    assert make_plan(bundle, off, ORIN, tmp_path).timing_cache_path is None
    custom = profile_from_dict({"precision": "fp32", "timing_cache": str(tmp_path / "c" / "{gpu}_{trt}.tc")},
                               name="c")
    expected = tmp_path / "c" / "h100-80gb-hbm3-sm90_11.4.0.tc"
    assert make_plan(bundle, custom, H100, tmp_path).timing_cache_path == expected


def test_batch_defaults_and_bundle_range(make_bundle, tmp_path):
    bundle = Bundle.load(make_bundle(batch=(2, 6)))
    plan = make_plan(bundle, load_profile("fp32"), ORIN, tmp_path)
    assert [s[0] for s in (plan.inputs[0].shape_min, plan.inputs[0].shape_opt, plan.inputs[0].shape_max)] == [2, 2, 6]
    dla = profile_from_dict({"precision": "fp16", "dla_core": 0}, name="dla")
    assert resolve_batch(dla, (2, 6), "b") == (2, 2, 2)  # static at the bundle's smallest batch
    assert resolve_batch(profile_from_dict({"precision": "fp16", "batch": {"opt": 4}}, name="x"), (1, 8), "b") == \
        (1, 4, 8)


@pytest.mark.parametrize("batch, needle", [({"max": 16}, "batch.max = 16"), ({"min": 2, "max": 9}, "batch.max = 9"),
                                           ({"opt": 1}, "batch.opt = 1")])
def test_batch_outside_bundle_range_is_rejected(make_bundle, tmp_path, batch, needle):
    bundle = Bundle.load(make_bundle(batch=(2, 8)))
    prof = profile_from_dict({"precision": "fp32", "batch": batch}, name="big")
    with pytest.raises(ProfileError) as exc:
        make_plan(bundle, prof, ORIN, tmp_path)
    assert needle in exc.value.message and "2–8" in exc.value.message and "--batch-max" in exc.value.hint


def test_orin_presets_need_batch_one_in_range(make_bundle, tmp_path):
    bundle = Bundle.load(make_bundle(batch=(2, 8)))
    with pytest.raises(ProfileError, match="batch.min = 1"):
        make_plan(bundle, load_profile("orin-fp16"), ORIN, tmp_path)


def test_engine_input_format_checked_against_the_variant_dtype(make_bundle, tmp_path):
    plain = Bundle.load(make_bundle())
    hwc = profile_from_dict({"precision": "fp32", "engine_input_format": "hwc"}, name="hwc")
    assert make_plan(plain, hwc, ORIN, tmp_path).inputs[0].engine_format == "hwc"
    hwc8 = profile_from_dict({"precision": "fp16", "engine_input_format": "hwc8"}, name="hwc8")
    # a fresh bundle's fp16 variant would keep float32 I/O: HWC8 (fp16 only) is refused up front
    with pytest.raises(ProfileError) as exc:
        make_plan(plain, hwc8, ORIN, tmp_path)
    assert "engine_input_format = 'hwc8'" in exc.value.message and "float32" in exc.value.message
    half_io = Bundle.load(make_bundle(extra_variants={"fp16": {"dtype": "float16"}}))
    assert make_plan(half_io, hwc8, ORIN, tmp_path).inputs[0].engine_format == "hwc8"
    hwc_on_half = profile_from_dict({"precision": "fp16", "engine_input_format": "hwc"}, name="hwc")
    with pytest.raises(ProfileError, match="needs a float32 or uint8 input"):
        make_plan(half_io, hwc_on_half, ORIN, tmp_path)
    # int8's input dtype is unknown until calibration: accepted here, checked by the adapter after parsing
    int8 = profile_from_dict({"precision": "int8", "engine_input_format": "hwc"}, name="i8")
    assert make_plan(plain, int8, ORIN, tmp_path).inputs[0].dtype is None


@pytest.mark.parametrize(("version", "says"), [
    ("10.3.0.30", "TensorRT 10.3.0 builds DLA engines only weakly typed"),  # JetPack 6
    ("10.16.0.72", "TensorRT 10.16.0 builds DLA engines only weakly typed"),  # has ADJUST_FOR_DLA, still weak DLA
    ("11.0.0.10", "TensorRT 11.0.0 has no DLA on Jetson (11.0–11.4.0)"),
    ("11.4.0.106", "TensorRT 11.4.0 has no DLA on Jetson (11.0–11.4.0)"),
])
def test_dla_refused_where_tensorrt_cannot_build_it_strongly_typed(make_bundle, tmp_path, version, says):
    """A DLA profile on TensorRT 10.x or 11.0–11.4.0 stops in the plan (exit 2), in one line naming the
    version and the alternative — before any variant is made or TensorRT is asked."""
    bundle = Bundle.load(make_bundle())
    target = BuildTarget(gpu=GpuInfo("Orin", (8, 7)), trt_version=version)
    with pytest.raises(ProfileError) as err:
        make_plan(bundle, load_profile("orin-dla"), target, tmp_path)
    line = err.value.one_line()
    assert says in line and "orin-fp16" in line and "11.4.1+ on JetPack 7.2.2+" in line and "\n" not in line
    assert err.value.exit_code == 2
    # the same profile without dla_core plans fine on that version
    assert make_plan(bundle, load_profile("orin-fp16"), target, tmp_path).profile.dla_core is None


def test_dla_plan_notes(make_bundle, tmp_path):
    bundle = Bundle.load(make_bundle())
    plan = make_plan(bundle, load_profile("orin-dla"), ORIN_JP7, tmp_path)
    assert any("ADJUST_FOR_DLA" in n for n in plan.notes)
    assert any("AutoCast here has no DLA target option" in n for n in plan.notes)  # nvidia-modelopt 0.47.0
    # without TensorRT (a laptop's dry run) the plan says which versions will refuse
    unknown = make_plan(bundle, load_profile("orin-dla"), UNKNOWN, tmp_path)
    assert any("11.4.1+ on JetPack 7.2.2+" in n and "10.x" in n for n in unknown.notes)


def test_hwc16_trtexec_note_on_old_10x(make_bundle, tmp_path):
    bundle = Bundle.load(make_bundle(extra_variants={"fp16": {"dtype": "float16"}}))
    prof = profile_from_dict({"precision": "fp16", "engine_input_format": "hwc16"}, name="h16")
    assert any("10.10" in n for n in make_plan(bundle, prof, ORIN, tmp_path).notes)
    newer = BuildTarget(gpu=GpuInfo("Orin", (8, 7)), trt_version="10.13.3.9")
    assert not any("10.10" in n for n in make_plan(bundle, prof, newer, tmp_path).notes)


@pytest.mark.parametrize("name, cc, slug", [("Orin", (8, 7), "orin-sm87"),
                                            ("NVIDIA GeForce RTX 4090", (8, 9), "geforce-rtx-4090-sm89"),
                                            ("NVIDIA H100 80GB HBM3", (9, 0), "h100-80gb-hbm3-sm90"),
                                            ("NVIDIA", (7, 2), "gpu-sm72")])
def test_gpu_slug(name, cc, slug):
    assert gpu_slug(name, cc) == slug
    assert GpuInfo(name, cc).to_dict()["compute_capability"] == f"{cc[0]}.{cc[1]}"


def test_plan_paths_are_relative_to_the_given_engines_dir(make_bundle):
    bundle = Bundle.load(make_bundle(name="b"))
    plan = make_plan(bundle, load_profile("fp32"), ORIN)
    assert plan.engine_path == Path("engines") / "b" / "orin-sm87-trt10.3.0-fp32.plan"

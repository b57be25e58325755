"""The trtexec command of every preset, flag by flag, in TensorRT 10.x and 11.x spelling."""

from __future__ import annotations

import shlex

import pytest

from tokcomp_edge.core.bundle import Bundle
from tokcomp_edge.engines.gpu import GpuInfo
from tokcomp_edge.engines.plan import make_plan
from tokcomp_edge.engines.profile import load_profile, profile_from_dict
from tokcomp_edge.engines.trt_import import BuildTarget
from tokcomp_edge.engines.trtexec import trtexec_args, trtexec_commands

ORIN = BuildTarget(gpu=GpuInfo("Orin", (8, 7)), trt_version="10.3.0.30")
ORIN_JP7 = BuildTarget(gpu=GpuInfo("Orin", (8, 7)), trt_version="11.4.1.1")
UNKNOWN = BuildTarget(gpu=None, trt_version=None, missing=("no driver",))


def _plan(make_bundle, tmp_path, profile, target=ORIN, **bundle_kw):
    bundle = Bundle.load(make_bundle(name="b", **bundle_kw))
    return make_plan(bundle, profile, target, tmp_path / "engines")


def _common(plan, tail_min, tail_opt, tail_max):
    e = plan.engine_path
    return [
        "trtexec", f"--onnx={plan.onnx_path}", f"--saveEngine={e}",
        f"--minShapes=pixel_values:{tail_min}", f"--optShapes=pixel_values:{tail_opt}",
        f"--maxShapes=pixel_values:{tail_max}",
    ]


def _tail(plan):
    return ["--profilingVerbosity=detailed", f"--exportLayerInfo={plan.layers_path}", "--skipInference"]


@pytest.mark.parametrize("preset, shapes, fmt10, mem", [
    ("fp32", ("1x3x8x8", "1x3x8x8", "8x3x8x8"), "fp32:chw", "2G"),
    ("fp16", ("1x3x8x8", "1x3x8x8", "8x3x8x8"), "fp32:chw", "2G"),
    ("fp16-nhwc", ("1x8x8x3", "1x8x8x3", "8x8x8x3"), "uint8:chw", "2G"),
    ("orin-fp16", ("1x3x8x8", "1x3x8x8", "1x3x8x8"), "fp32:chw", "1G"),
])
def test_gpu_presets(make_bundle, tmp_path, preset, shapes, fmt10, mem):
    plan = _plan(make_bundle, tmp_path, load_profile(preset))
    cache = f"--timingCacheFile={tmp_path / 'engines' / 'timing' / 'orin-sm87-trt10.3.0.cache'}"
    middle = [cache, f"--memPoolSize=workspace:{mem}", "--builderOptimizationLevel=3"]
    assert trtexec_args(plan, 10) == [*_common(plan, *shapes), "--stronglyTyped", f"--inputIOFormats={fmt10}",
                                      *middle, *_tail(plan)]
    assert trtexec_args(plan, 11) == [*_common(plan, *shapes), "--inputIOFormats=chw", *middle, *_tail(plan)]


def test_int8_preset_without_known_dtype_leaves_io_formats_to_the_network(make_bundle, tmp_path):
    plan = _plan(make_bundle, tmp_path, load_profile("int8"))
    args10 = trtexec_args(plan, 10)
    assert not any(a.startswith("--inputIOFormats") for a in args10)
    assert "--stronglyTyped" in args10 and f"--onnx={plan.onnx_path}" in args10
    assert plan.onnx_path.name == "model.int8.onnx"
    assert "--inputIOFormats=chw" in trtexec_args(plan, 11)


def test_orin_dla_preset(make_bundle, tmp_path):
    """DLA is strongly typed only on 11.x (11.4.1+): no 10.x command (its trtexec adds the FP16 builder flag to
    every DLA build), and --adjustForDLA for the parser's ADJUST_FOR_DLA."""
    plan = _plan(make_bundle, tmp_path, load_profile("orin-dla"), ORIN_JP7)
    cache = f"--timingCacheFile={tmp_path / 'engines' / 'timing' / 'orin-sm87-trt11.4.1.cache'}"
    assert trtexec_args(plan, 11) == [
        *_common(plan, "1x3x8x8", "1x3x8x8", "1x3x8x8"), "--inputIOFormats=chw", cache,
        "--memPoolSize=workspace:1G", "--builderOptimizationLevel=3", "--useDLACore=0", "--adjustForDLA",
        "--allowGPUFallback", *_tail(plan)]
    with pytest.raises(ValueError, match="only a TensorRT 11.x"):
        trtexec_args(plan, 10)
    assert list(trtexec_commands(plan)) == [11]
    dry = _plan(make_bundle, tmp_path / "dry", load_profile("orin-dla"), UNKNOWN)  # laptop: version unknown
    assert list(trtexec_commands(dry)) == [11]


def test_every_option_of_a_user_profile(make_bundle, tmp_path):
    prof = profile_from_dict({"precision": "fp16", "engine_input_format": "hwc8", "workspace": "1536MiB",
                              "builder_optimization_level": 5, "timing_cache": "off",
                              "hardware_compatibility": "ampere+", "version_compatible": True,
                              "batch": {"min": 2, "opt": 4, "max": 6}}, name="all")
    plan = _plan(make_bundle, tmp_path, prof, extra_variants={"fp16": {"dtype": "float16"}})
    expected_tail = ["--memPoolSize=workspace:1536M", "--builderOptimizationLevel=5",
                     "--hardwareCompatibilityLevel=ampere+", "--versionCompatible", *_tail(plan)]
    assert trtexec_args(plan, 10) == [*_common(plan, "2x3x8x8", "4x3x8x8", "6x3x8x8"), "--stronglyTyped",
                                      "--inputIOFormats=fp16:hwc8", *expected_tail]
    assert trtexec_args(plan, 11) == [*_common(plan, "2x3x8x8", "4x3x8x8", "6x3x8x8"), "--inputIOFormats=hwc8",
                                      *expected_tail]


def test_hwc_and_hwc16_spellings_and_odd_workspace(make_bundle, tmp_path):
    hwc = profile_from_dict({"precision": "fp32", "engine_input_format": "hwc", "workspace": 1000,
                             "timing_cache": "off"}, name="hwc")
    plan = _plan(make_bundle, tmp_path, hwc)
    args = trtexec_args(plan, 10)
    assert "--inputIOFormats=fp32:hwc" in args and "--memPoolSize=workspace:1000B" in args
    h16 = profile_from_dict({"precision": "fp16", "engine_input_format": "hwc16", "timing_cache": "off"}, name="h16")
    plan16 = _plan(make_bundle, tmp_path / "x", h16, extra_variants={"fp16": {"dtype": "float16"}})
    assert "--inputIOFormats=fp16:hwc16" in trtexec_args(plan16, 10)
    assert "--inputIOFormats=hwc16" in trtexec_args(plan16, 11)
    assert not any(a.startswith("--memPoolSize") for a in trtexec_args(plan16, 10))  # no workspace: TRT default


def test_commands_for_unknown_and_known_majors(make_bundle, tmp_path):
    bundle = Bundle.load(make_bundle(name="b"))
    unknown = make_plan(bundle, load_profile("fp16"), BuildTarget(None, None, ("x",)), tmp_path)
    cmds = trtexec_commands(unknown)
    assert sorted(cmds) == [10, 11]
    assert "'--saveEngine=" in cmds[10] and "{gpu}-trt{trt}-fp16.plan" in cmds[10]  # quoted for the shell
    assert shlex.split(cmds[10]) == trtexec_args(unknown, 10)
    known = make_plan(bundle, load_profile("fp16"), ORIN, tmp_path)
    assert list(trtexec_commands(known)) == [10]
    with pytest.raises(ValueError):
        trtexec_args(known, 9)

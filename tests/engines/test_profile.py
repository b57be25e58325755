"""Build profiles: presets, user TOML files, and every way a profile is rejected (exit 2, field named)."""

from __future__ import annotations

import pytest

from tokcomp_edge.engines.profile import (
    BatchRange,
    format_size,
    list_presets,
    load_profile,
    parse_profile_text,
    parse_size,
    preset_names,
    profile_from_dict,
)
from tokcomp_edge.errors import ProfileError

PRESETS = ["fp16", "fp16-nhwc", "fp32", "int8", "orin-dla", "orin-fp16"]


def test_presets_are_the_six_documented_ones_and_all_parse():
    assert preset_names() == PRESETS
    profiles = {p.name: p for p in list_presets()}
    assert set(profiles) == set(PRESETS)
    assert all(p.description for p in profiles.values())
    assert profiles["fp32"].precision == "fp32" and profiles["fp16"].precision == "fp16"
    assert profiles["fp16-nhwc"].input == "nhwc-uint8"
    assert profiles["int8"].precision == "int8"
    assert profiles["orin-fp16"].batch == BatchRange(1, 1, 1) and profiles["orin-fp16"].dla_core is None
    dla = profiles["orin-dla"]
    assert (dla.dla_core, dla.gpu_fallback, dla.batch.is_static(), dla.precision) == (0, True, True, "fp16")
    assert profiles["orin-fp16"].workspace == 1 << 30 and profiles["fp16"].workspace == 2 << 30


def test_user_file_takes_its_stem_as_name(tmp_path):
    f = tmp_path / "my_orin.toml"
    f.write_text('precision = "fp16"\nworkspace = "512MiB"\nbuilder_optimization_level = 5\n'
                 'hardware_compatibility = "ampere+"\nversion_compatible = true\n'
                 'engine_input_format = "hwc"\ntiming_cache = "caches/{gpu}-{trt}.bin"\n'
                 '[batch]\nmin = 2\nopt = 4\nmax = 6\n')
    p = load_profile(f)
    assert p.name == "my_orin" and p.source == str(f)
    assert (p.workspace, p.builder_optimization_level, p.hardware_compatibility, p.version_compatible) == \
        (512 << 20, 5, "ampere+", True)
    assert p.batch == BatchRange(2, 4, 6) and p.engine_input_format == "hwc"
    assert p.timing_cache == "caches/{gpu}-{trt}.bin"
    assert load_profile(str(f)).name == "my_orin"  # str path works too


def test_name_field_overrides_the_stem(tmp_path):
    f = tmp_path / "x.toml"
    f.write_text('name = "cam-fp16"\nprecision = "fp16"\n')
    assert load_profile(f).name == "cam-fp16"


def test_defaults():
    p = profile_from_dict({"precision": "fp32"}, name="d")
    assert (p.input, p.engine_input_format, p.workspace, p.builder_optimization_level, p.timing_cache,
            p.hardware_compatibility, p.version_compatible, p.dla_core, p.gpu_fallback) == \
        ("nchw-float", "linear", None, 3, "auto", "none", False, None, False)
    assert p.batch == BatchRange()
    dla = profile_from_dict({"precision": "int8", "dla_core": 1}, name="d")
    assert dla.gpu_fallback is True  # on by default for DLA: unsupported layers would fail the build
    assert profile_from_dict({"precision": "fp16", "dla_core": 0, "gpu_fallback": False}, name="d").gpu_fallback \
        is False


@pytest.mark.parametrize("value, expected", [("2GiB", 2 << 30), ("512MiB", 512 << 20), ("1.5G", 3 << 29),
                                             ("64KiB", 64 << 10), (4096, 4096), ("100", 100), ("3 MiB", 3 << 20)])
def test_parse_size(value, expected):
    assert parse_size(value) == expected


@pytest.mark.parametrize("value", ["2GB", "lots", "", "-1GiB", 0, True, "1TiB", "1.5"])
def test_parse_size_rejects(value):
    with pytest.raises(ProfileError) as exc:
        parse_size(value)
    assert "workspace" in exc.value.message and exc.value.exit_code == 2


def test_format_size():
    assert [format_size(n) for n in (2 << 30, 1536 << 20, 3 << 10, 1000)] == ["2GiB", "1536MiB", "3KiB", "1000B"]


# Every rejection: (document, text that must appear in the message — the field's name).
BAD = [
    ({"precision": "fp16", "precison": "fp32"}, "'precison'"),
    ({"precision": "fp16", "batch": {"min": 1, "mx": 4}}, "'batch.mx'"),
    ({}, "precision"),
    ({"precision": "fp64"}, "precision = 'fp64'"),
    ({"precision": "fp16", "input": "nhwc"}, "input = 'nhwc'"),
    ({"precision": "fp16", "engine_input_format": "chw4"}, "engine_input_format = 'chw4'"),
    ({"precision": "fp16", "batch": {"min": 0}}, "batch.min"),
    ({"precision": "fp16", "batch": {"max": "8"}}, "batch.max"),
    ({"precision": "fp16", "batch": {"opt": True}}, "batch.opt"),
    ({"precision": "fp16", "batch": {"min": 4, "max": 2}}, "batch.min = 4"),
    ({"precision": "fp16", "batch": {"min": 2, "opt": 1, "max": 4}}, "batch.opt = 1"),
    ({"precision": "fp16", "batch": 4}, "batch = 4"),
    ({"precision": "fp16", "workspace": "2 gigs"}, "workspace"),
    ({"precision": "fp16", "builder_optimization_level": 6}, "builder_optimization_level = 6"),
    ({"precision": "fp16", "builder_optimization_level": "3"}, "builder_optimization_level"),
    ({"precision": "fp16", "timing_cache": ""}, "timing_cache"),
    ({"precision": "fp16", "timing_cache": 1}, "timing_cache"),
    ({"precision": "fp16", "hardware_compatibility": "same-compute-capability"}, "hardware_compatibility"),
    ({"precision": "fp16", "version_compatible": "yes"}, "version_compatible"),
    ({"precision": "fp16", "dla_core": -1}, "dla_core = -1"),
    ({"precision": "fp16", "dla_core": "0"}, "dla_core"),
    ({"precision": "fp16", "gpu_fallback": True}, "gpu_fallback"),
    ({"precision": "fp16", "dla_core": 0, "gpu_fallback": 1}, "gpu_fallback"),
    ({"precision": "fp16", "description": 3}, "description"),
    ({"precision": "fp16", "name": "my orin/profile"}, "name = 'my orin/profile'"),
    # impossible combinations
    ({"precision": "fp16", "input": "nhwc-uint8", "engine_input_format": "hwc"}, "engine_input_format = 'hwc'"),
    ({"precision": "fp32", "engine_input_format": "hwc8"}, "engine_input_format = 'hwc8'"),
    ({"precision": "fp32", "engine_input_format": "hwc16"}, "engine_input_format = 'hwc16'"),
    ({"precision": "fp32", "dla_core": 0}, "dla_core"),
    ({"precision": "fp16", "dla_core": 0, "batch": {"min": 1, "opt": 1, "max": 4}}, "batch = 1/1/4"),
    ({"precision": "fp16", "dla_core": 0, "batch": {"max": 1}}, "batch = None/None/1"),
    ({"precision": "int8", "dla_core": 0, "hardware_compatibility": "ampere+"}, "hardware_compatibility"),
]


@pytest.mark.parametrize("data, needle", BAD, ids=[n for _, n in BAD])
def test_rejections_name_the_field(data, needle):
    with pytest.raises(ProfileError) as exc:
        profile_from_dict(data, name="bad", source="bad.toml")
    assert needle in exc.value.message
    assert exc.value.hint and exc.value.exit_code == 2


def test_unknown_field_lists_known_ones_and_source():
    with pytest.raises(ProfileError) as exc:
        profile_from_dict({"precision": "fp16", "fp16": True}, name="x", source="cam.toml")
    assert "'fp16' in cam.toml" in exc.value.message and "precision" in exc.value.hint


def test_toml_syntax_error():
    with pytest.raises(ProfileError) as exc:
        parse_profile_text('precision = "fp16\n', name="x", source="broken.toml")
    assert "broken.toml is not valid TOML" in exc.value.message


def test_unknown_preset_lists_the_presets():
    with pytest.raises(ProfileError) as exc:
        load_profile("fp8")
    assert "unknown profile 'fp8'" in exc.value.message
    assert all(p in exc.value.hint for p in PRESETS)


def test_missing_profile_file(tmp_path):
    with pytest.raises(ProfileError) as exc:
        load_profile(tmp_path / "nope.toml")
    assert "nope.toml does not exist" in exc.value.message


def test_profile_to_dict_is_json_ready():
    import json

    d = load_profile("orin-dla").to_dict()
    json.dumps(d)
    assert d["workspace"] == "1GiB" and d["workspace_bytes"] == 1 << 30
    assert d["batch"] == {"min": 1, "opt": 1, "max": 1} and d["dla_core"] == 0

"""DLA rules per TensorRT version, the AutoCast finding, and the measured placement after the build."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from tokcomp_edge.engines.dla import (
    autocast_has_dla_target,
    check_dla_build,
    dla_parser_flags,
    is_placement_message,
    parse_placement_report,
    version_tuple,
)
from tokcomp_edge.engines.engine_info import (
    is_data_movement,
    layer_stats,
    measured_placement,
    parse_inspector,
)
from tokcomp_edge.errors import ProfileError

INPUTS = Path(__file__).parent / "inputs"
SAMPLE_CUDLA = INPUTS / "dla_report_trt10.16_sampleCudla.log"
TUTORIAL = INPUTS / "dla_report_trt8.4_orin_tutorial.log"
TUTORIAL_DLA = ["{ForeignNode[Conv_0]}", "{ForeignNode[Relu_10...Conv_11]}", "{ForeignNode[Relu_21...Conv_22]}",
                "{ForeignNode[Relu_32...Conv_33]}", "{ForeignNode[Relu_43]}"]


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_version_tuple():
    assert version_tuple("10.3.0.30") == (10, 3, 0)
    assert version_tuple("11.4.1") == (11, 4, 1) and version_tuple("11") == (11, 0, 0)
    assert version_tuple("10.16.0.72") > (10, 3, 0)  # numeric, not string order


@pytest.mark.parametrize("version", ["10.3.0.30", "10.7.0", "10.16.1", "11.0.0", "11.3.0", "11.4.0.106"])
def test_dla_refused_before_strongly_typed_dla(version):
    with pytest.raises(ProfileError) as err:
        check_dla_build("orin-dla", version)
    line = err.value.one_line()
    assert "\n" not in line and f"TensorRT {'.'.join(map(str, version_tuple(version)))}" in line
    assert "orin-fp16" in line and "11.4.1+ on JetPack 7.2.2+" in line


@pytest.mark.parametrize("version", ["11.4.1.1", "11.5.0", "12.0.0"])
def test_dla_allowed_from_11_4_1(version):
    check_dla_build("orin-dla", version)


@pytest.mark.parametrize(("version", "flags"), [
    ("10.3.0.30", ()),            # JetPack 6: the bindings have only NATIVE_INSTANCENORM
    ("10.15.1", ()),              # 10.15 added REPORT_CAPABILITY_DLA, not ADJUST_FOR_DLA
    ("10.16.0", ("ADJUST_FOR_DLA",)),
    ("11.4.1.1", ("ADJUST_FOR_DLA",)),
])
def test_parser_flags_only_where_they_exist(version, flags):
    assert dla_parser_flags(version) == flags


def test_installed_autocast_has_no_dla_target():
    """The finding the plan notes rely on: nvidia-modelopt's AutoCast (0.47.0 here, the newest release) takes
    no DLA target; `target_dla` is an option of the INT8 quantizer only."""
    pytest.importorskip("modelopt.onnx.autocast")
    import inspect

    from modelopt.onnx.quantization import quantize

    assert autocast_has_dla_target() is False
    assert "target_dla" in inspect.signature(quantize).parameters


def test_autocast_dla_target_detected_when_a_release_adds_it(monkeypatch):
    def convert_to_mixed_precision(onnx_path, low_precision_type="fp16", target_dla=False):  # a future AutoCast
        return None

    fake = types.ModuleType("modelopt.onnx.autocast")
    fake.convert_to_mixed_precision = convert_to_mixed_precision
    monkeypatch.setitem(sys.modules, "modelopt.onnx.autocast", fake)
    assert autocast_has_dla_target() is True


def test_report_of_tensorrt_10_16_sample():
    report = parse_placement_report(_lines(SAMPLE_CUDLA))
    assert report.seen and report.dla == ["{ForeignNode[(Unnamed Layer* 0) [ElementWise]]}"] and report.gpu == []


def test_report_of_tensorrt_8_4_on_orin():
    report = parse_placement_report(_lines(TUTORIAL))
    assert report.seen and report.dla == TUTORIAL_DLA
    assert report.gpu[0] == ("SHUFFLE", "Reshape_2 + (Unnamed Layer* 7) [Shuffle]")
    assert [t for t, _ in report.gpu] == ["SHUFFLE", "PLUGIN_V2", "SHUFFLE", "SCALE", "SCALE", "SHUFFLE"]


def test_logger_keeps_only_report_messages_at_info():
    kept = [m for m in _lines(TUTORIAL) + ["Total Activation Memory: 32686080", "[MemUsageChange] Init CUDA"]
            if is_placement_message(m)]
    assert len(kept) == 13  # both headings and one line per layer; unrelated INFO chatter is dropped


def _tutorial_inspector() -> dict:
    # LAYER_NAMES_ONLY layout; names: the report's, plus the GPU<->DLA transfers a DLA engine adds.
    report = parse_placement_report(_lines(TUTORIAL))
    names = ["input to nvm", *TUTORIAL_DLA, *(n for _, n in report.gpu), "output from nvm", "output copy finish"]
    return parse_inspector('{"Layers": ' + str(names).replace("'", '"') + ', "Bindings": ["input", "output"]}')


def test_measured_placement_of_a_dla_build():
    inspector = _tutorial_inspector()
    measured = measured_placement(inspector, parse_placement_report(_lines(TUTORIAL)), uses_dla=True)
    assert measured["kind"] == "measured"
    assert (measured["dla"], measured["gpu"]) == (5, 6) and measured["dla_layers"] == TUTORIAL_DLA
    assert layer_stats(inspector)["compute"] == 11  # the three nvm transfers are data movement


def test_transfer_layers_are_data_movement():
    for name in ("images to nvm", "head_3 from nvm", "images copy finish"):  # NVIDIA/TensorRT issue #3143
        assert is_data_movement({"Name": name, "LayerType": "?"})
    assert not is_data_movement({"Name": "{ForeignNode[Conv_0...Concat_198]}", "LayerType": "?"})


def test_placement_unknown_rather_than_guessed():
    inspector = _tutorial_inspector()
    assert measured_placement(inspector, None, uses_dla=True)["kind"] == "unknown"
    silent = parse_placement_report(["[I] [TRT] Detected 1 inputs and 1 output network tensors."])
    assert measured_placement(inspector, silent, uses_dla=True)["kind"] == "unknown"
    other = parse_placement_report(_lines(SAMPLE_CUDLA))  # a DLA subgraph this engine does not have
    result = measured_placement(inspector, other, uses_dla=True)
    assert result["kind"] == "unknown" and "ElementWise" in result["reason"]


def test_gpu_build_is_measured_all_gpu():
    fixture = parse_inspector((INPUTS / "vit_fp16.layers.json").read_text())
    measured = measured_placement(fixture, None, uses_dla=False)
    assert measured == {"kind": "measured", "dla": 0, "gpu": layer_stats(fixture)["compute"], "dla_layers": [],
                        "basis": measured["basis"]}

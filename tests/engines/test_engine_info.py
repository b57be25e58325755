"""engine.json: layer precision counting from inspector JSON, the record's fields, reading it back."""

from __future__ import annotations

import json

import pytest

from tokcomp_edge.core.bundle import Bundle
from tokcomp_edge.engines.engine_info import (
    SCHEMA,
    engine_record,
    layer_precision,
    layer_stats,
    measured_placement,
    parse_inspector,
    read_engine_info,
    tensor_dtype,
)
from tokcomp_edge.engines.gpu import GpuInfo
from tokcomp_edge.engines.plan import make_plan
from tokcomp_edge.engines.profile import load_profile
from tokcomp_edge.engines.trt_import import BuildTarget
from tokcomp_edge.errors import BundleError


@pytest.mark.parametrize("desc, dtype", [
    ("Row major linear FP32", "fp32"),
    ("Row major linear FP16 format", "fp16"),
    ("Channel major FP16 format where channel % 8 == 0", "fp16"),
    ("Half", "fp16"), ("Float", "fp32"),
    ("Row major Int8 format", "int8"),
    ("Thirty-two wide channel vectorized row major Int8 format", "int8"),
    ("Channel major INT8 format where channel % 16 == 0", "int8"),
    ("Row major linear UInt8 format", "uint8"),
    ("Row major linear BFloat16 format", "bf16"),
    ("Row major linear Int32", "int32"), ("Row major linear Int64 format", "int64"),
    ("Row major linear BOOL", "bool"), ("Unknown format", None), ("", None),
])
def test_tensor_dtype(desc, dtype):
    assert tensor_dtype(desc) == dtype


def _layer(name, ltype, ins, outs):
    return {"Name": name, "LayerType": ltype,
            "Inputs": [{"Name": f"{name}_in{i}", "Format/Datatype": d} for i, d in enumerate(ins)],
            "Outputs": [{"Name": f"{name}_out{i}", "Format/Datatype": d} for i, d in enumerate(outs)]}


INSPECTOR = {"Layers": [
    _layer("Reformatting CopyNode for Input Tensor 0", "Reformat", ["Row major linear FP32"],
           ["Row major linear FP16 format"]),
    _layer("{ForeignNode[/blocks.0/attn/MatMul.../blocks.1/mlp/Add]}", "Myelin", ["Row major linear FP16 format"],
           ["Row major linear FP16 format"]),
    _layer("/pool/AveragePool", "CaskPooling", ["Channel major FP16 format where channel % 8 == 0"],
           ["Channel major FP16 format where channel % 8 == 0"]),
    _layer("/blocks.2/fc1/MatMul", "CaskGemm", ["Row major Int8 format"], ["Row major linear FP16 format"]),
    _layer("/norm/LayerNorm", "Myelin", ["Row major linear FP32"], ["Row major linear FP32"]),
    _layer("shape_calc", "ShapeHostToDevice", ["Row major linear Int64 format"], ["Row major linear Int32"]),
    "bare_name_layer",
], "Bindings": ["pixel_values", "tokens"]}


def test_layer_precision_takes_the_lowest_float_precision():
    layers = INSPECTOR["Layers"]
    assert [layer_precision(lay) for lay in layers[:6]] == ["fp16", "fp16", "fp16", "int8", "fp32", "other"]


def test_layer_stats():
    stats = layer_stats(INSPECTOR)
    assert stats["total"] == 7 and stats["compute"] == 5
    assert stats["excluded"] == {"Reformat": 1, "ShapeHostToDevice": 1}
    assert stats["precision"] == {"fp32": 1, "fp16": 2, "int8": 1, "other": 1}
    assert stats["types"]["Myelin"] == 2 and stats["types"]["?"] == 1


def test_layer_stats_on_the_inspector_layout_excludes_data_movement():
    """A fixture in TensorRT's own inspector JSON layout (tests/engines/inputs/README.md): reformat copy
    nodes (Reformat, NoOp), casts and I/O reformats do not count as fp32 compute in an fp16 engine."""
    from pathlib import Path

    text = (Path(__file__).parent / "inputs" / "vit_fp16.layers.json").read_text()
    stats = layer_stats(parse_inspector(text))
    assert stats["total"] == 8 and stats["compute"] == 4
    assert stats["excluded"] == {"Reformat": 2, "NoOp": 1, "Cast": 1}
    # conv, the fused blocks and the pool in fp16; the LayerNorm TensorRT kept in fp32
    assert stats["precision"] == {"fp32": 1, "fp16": 3, "int8": 0}


def test_layer_stats_keeps_zero_counts():
    assert layer_stats({"Layers": []})["precision"] == {"fp32": 0, "fp16": 0, "int8": 0}


def test_parse_inspector_accepts_both_shapes():
    assert parse_inspector(json.dumps(INSPECTOR))["Bindings"] == ["pixel_values", "tokens"]
    assert parse_inspector(json.dumps(["a", "b"]))["Layers"] == ["a", "b"]
    assert parse_inspector("{}")["Layers"] == []


def _record(make_bundle, tmp_path):
    bundle = Bundle.load(make_bundle(name="tiny"))
    target = BuildTarget(gpu=GpuInfo("Orin", (8, 7)), trt_version="10.3.0.30")
    plan = make_plan(bundle, load_profile("orin-fp16"), target, tmp_path / "engines")
    io = [{"name": "pixel_values", "mode": "input", "dtype": "float32", "shape": [-1, 3, 8, 8], "format": "LINEAR",
           "format_desc": "Row major linear FP32 format"},
          {"name": "tokens", "mode": "output", "dtype": "float32", "shape": [-1, 64, 3], "format": "LINEAR",
           "format_desc": "Row major linear FP32 format"}]
    record = engine_record(plan=plan, trt_version="10.3.0.30", gpu=target.gpu.to_dict(), engine_bytes=1234,
                           engine_sha256="ab" * 32, onnx_sha256="cd" * 32, io=io, layers=layer_stats(INSPECTOR),
                           placement={"dla": 0, "gpu": 5, "basis": "x", "kind": "prediction"},
                           build_seconds=12.3456,
                           timing_cache={"path": "c", "loaded": False, "saved": True}, warnings=["w"],
                           measured=measured_placement(INSPECTOR, None, uses_dla=False))
    return bundle, plan, record


def test_engine_record_fields(make_bundle, tmp_path):
    bundle, plan, record = _record(make_bundle, tmp_path)
    json.dumps(record)
    assert record["schema"] == SCHEMA and record["schema_version"] == 1
    assert record["tensorrt"] == {"version": "10.3.0.30", "major": 10}
    assert record["gpu"] == {"name": "Orin", "compute_capability": "8.7", "index": 0, "slug": "orin-sm87"}
    assert record["engine"] == {"file": "orin-sm87-trt10.3.0-orin-fp16.plan", "bytes": 1234, "sha256": "ab" * 32,
                                "inspector": "orin-sm87-trt10.3.0-orin-fp16.layers.json"}
    assert (record["variant"], record["precision"]) == ("fp16", "fp16")
    b = record["bundle"]
    assert b["manifest_sha256"] == bundle.manifest_sha256() and b["variant"] == "fp16"
    assert b["onnx"] == "model.fp16.onnx" and b["onnx_sha256"] == "cd" * 32
    # relative to the engine folder: engines/tiny/ → ../../bundle1
    assert (plan.engine_path.parent / b["path"]).resolve() == bundle.path.resolve()
    prof = record["profile"]
    assert prof["name"] == "orin-fp16" and prof["workspace"] == "1GiB" and prof["builder_optimization_level"] == 3
    assert prof["batch"] == {"min": 1, "opt": 1, "max": 1}
    assert prof["shapes"] == {"pixel_values": {"min": [1, 3, 8, 8], "opt": [1, 3, 8, 8], "max": [1, 3, 8, 8]}}
    assert record["inputs"][0]["engine_format"] == "linear"
    assert record["inputs"][0]["engine_format_desc"] == "Row major linear FP32 format"
    assert record["build"]["seconds"] == 12.346 and record["build"]["warnings"] == ["w"]
    assert record["layers"]["precision"]["fp16"] == 2 and record["layers"]["placement"]["gpu"] == 5
    assert record["layers"]["placement"]["kind"] == "prediction"
    # after the build: from the engine inspector, labelled as measured (a GPU build: all compute on the GPU)
    measured = record["layers"]["placement_measured"]
    assert measured["kind"] == "measured" and (measured["dla"], measured["gpu"]) == (0, record["layers"]["compute"])


def test_engine_record_is_what_the_validator_reads(make_bundle, tmp_path):
    """The validation stage reads variant, source ONNX sha and the profile's batch range from the sidecar."""
    from tokcomp_edge.validation import target as target_mod

    _, _, record = _record(make_bundle, tmp_path)
    assert target_mod.sidecar_onnx_sha(record) == record["bundle"]["onnx_sha256"]
    assert target_mod.sidecar_batch_range(record, "pixel_values") == (1, 1)


def test_read_engine_info_from_plan_or_sidecar(make_bundle, tmp_path):
    _, plan, record = _record(make_bundle, tmp_path)
    plan.sidecar_path.parent.mkdir(parents=True)
    plan.sidecar_path.write_text(json.dumps(record))
    assert read_engine_info(plan.engine_path)["engine"]["file"] == plan.engine_path.name
    assert read_engine_info(plan.sidecar_path)["variant"] == "fp16"


def test_read_engine_info_errors(tmp_path):
    with pytest.raises(BundleError, match="does not exist"):
        read_engine_info(tmp_path / "x.plan")
    (tmp_path / "y.engine.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        read_engine_info(tmp_path / "y.plan")
    (tmp_path / "z.engine.json").write_text(json.dumps({"schema": "other"}))
    with pytest.raises(BundleError, match="schema 'other'"):
        read_engine_info(tmp_path / "z.engine.json")


def test_the_recorded_profile_rebuilds_the_same_profile(make_bundle, tmp_path):
    """`tokcomp debug ENGINE.plan` builds a twin engine from the engine.json profile. Regression: the
    record's extra keys (workspace_bytes, shapes) were refused as unknown profile fields."""
    from dataclasses import replace

    from tokcomp_edge.engines.profile import profile_from_record

    _, plan, record = _record(make_bundle, tmp_path)
    again = profile_from_record(json.loads(json.dumps(record["profile"])))
    built = plan.profile
    # the batch sizes are the ones built (the preset may leave them to the bundle); everything else equal
    assert (again.batch.min, again.batch.opt, again.batch.max) == (1, 1, 1)
    assert replace(again, batch=built.batch, source=built.source) == built

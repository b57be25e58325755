"""The variant checks' building blocks, the nhwc wrapper's contract, and AutoCast's overflow guard on a
hand-made bundle whose activations exceed fp16's range."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from tokcomp_edge.core.bundle import (
    MANIFEST,
    SCHEMA,
    SCHEMA_VERSION,
    Bundle,
    dump_manifest,
    file_entry,
    save_reference,
)
from tokcomp_edge.core.ort_session import ort_session
from tokcomp_edge.core.scores import score_topk_nodes
from tokcomp_edge.errors import ExportFailed, ParityError
from tokcomp_edge.export.fp16 import Fp16Options
from tokcomp_edge.export.fp16_emulation import emulate_fp16
from tokcomp_edge.export.nhwc import wrap_nhwc
from tokcomp_edge.export.variant_check import nchw_from_uint8, uint8_images
from tokcomp_edge.export.variants import VariantOptions, ensure_variant

MEAN, STD = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]


# The index and token comparison (explained swaps, the guards against passing by accident) is tested
# where it now lives: tests/core/test_comparison.py.


def test_nchw_from_uint8_matches_the_manifest_formula():
    frames = uint8_images(2, (4, 5), seed=3)
    assert frames.dtype == np.uint8 and frames.shape == (2, 4, 5, 3)
    x = nchw_from_uint8(frames, MEAN, STD)
    assert x.shape == (2, 3, 4, 5) and x.dtype == np.float32
    want = (frames[1, 2, 3, 0] / 255.0 - MEAN[0]) / STD[0]
    assert x[1, 0, 2, 3] == pytest.approx(want, rel=1e-6)
    np.testing.assert_array_equal(uint8_images(2, (4, 5), seed=3), frames)  # seeded


# --- the nhwc wrapper ------------------------------------------------------------------------------


def tiny_model(dtype=T.FLOAT):
    """pixel_values [batch,3,4,4] → tokens [batch,16,3] (reshape + transpose)."""
    shape = nh.from_array(np.array([0, 3, 16], np.int64), "shape")
    nodes = [h.make_node("Reshape", ["pixel_values", "shape"], ["flat"], name="flat"),
             h.make_node("Transpose", ["flat"], ["tokens"], name="tr", perm=[0, 2, 1])]
    g = h.make_graph(nodes, "tiny", [h.make_tensor_value_info("pixel_values", dtype, ["batch", 3, 4, 4])],
                     [h.make_tensor_value_info("tokens", dtype, ["batch", 16, 3])], [shape])
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 20)])
    m.ir_version = 10
    return m


def test_wrapper_input_is_uint8_nhwc_with_the_batch_dim_kept_and_names_fixed():
    wrapped = wrap_nhwc(tiny_model(), mean=MEAN, std=STD)
    inp = wrapped.graph.input[0]
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert inp.name == "pixel_values" and inp.type.tensor_type.elem_type == T.UINT8 and dims == ["batch", 4, 4, 3]
    assert [n.op_type for n in wrapped.graph.node[:5]] == ["Cast", "Transpose", "Div", "Sub", "Div"]
    again = wrap_nhwc(tiny_model(), mean=MEAN, std=STD)
    assert wrapped.SerializeToString(deterministic=True) == again.SerializeToString(deterministic=True)
    frames = uint8_images(2, (4, 4), seed=0)
    got = ort_session(wrapped.SerializeToString()).run(None, {"pixel_values": frames})[0]
    want = nchw_from_uint8(frames, MEAN, STD).reshape(2, 3, 16).transpose(0, 2, 1)
    np.testing.assert_array_equal(got, want)  # same ops, same order: bit-identical


def test_wrapper_feeds_an_fp16_model_through_a_cast():
    wrapped = wrap_nhwc(tiny_model(T.FLOAT16), mean=MEAN, std=STD)
    assert wrapped.graph.node[5].name == "tokcomp_nhwc/CastFp16"
    out = ort_session(wrapped.SerializeToString()).run(None, {"pixel_values": uint8_images(1, (4, 4), 0)})[0]
    assert out.dtype == np.float16


def test_wrapper_rejects_what_it_cannot_wrap():
    with pytest.raises(ExportFailed, match="no input 'images'"):
        wrap_nhwc(tiny_model(), mean=MEAN, std=STD, input_name="images")
    with pytest.raises(ExportFailed, match=r"not float \[B, 3, H, W\] \(uint8, rank 4\)"):
        wrap_nhwc(wrap_nhwc(tiny_model(), mean=MEAN, std=STD), mean=MEAN, std=STD)
    taken = tiny_model()
    taken.graph.node[0].output[0] = taken.graph.node[1].input[0] = "pixel_values_nchw"
    with pytest.raises(ExportFailed, match="already uses the name 'pixel_values_nchw'"):
        wrap_nhwc(taken, mean=MEAN, std=STD)
    flat = tiny_model()
    flat.graph.input[0].type.tensor_type.shape.dim[1].dim_value = 1
    with pytest.raises(ExportFailed, match="not float"):
        wrap_nhwc(flat, mean=MEAN, std=STD)


def test_score_topk_nodes_skips_the_index_sort():
    nodes = [h.make_node("TopK", ["s", "k"], ["v", "i"], name="rank"),
             h.make_node("TopK", ["i", "k"], ["sorted", "j"], name="sort", largest=0)]
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info("s", T.FLOAT, [1, 8])],
                     [h.make_tensor_value_info("sorted", T.INT64, None)], [nh.from_array(np.array([2]), "k")])
    assert score_topk_nodes(h.make_model(g)) == ["rank"]


# --- AutoCast's overflow guard on a hand-made bundle ---------------------------------------------------


def overflow_bundle(folder):
    """A bundle whose projection outputs reach ~5e5 (fp16 overflows past 65504), scaled back after.

    pixel_values [batch,3,4,4] → tokens [batch,16,8]; its golden reference is ONNX Runtime fp32.
    """
    folder.mkdir()
    rng = np.random.default_rng(0)
    w = nh.from_array(rng.uniform(-30000, 30000, (3, 8)).astype(np.float32), "w")  # < fp16 max
    inits = [nh.from_array(np.array([0, 3, 16], np.int64), "shape"), w,
             nh.from_array(np.array(1e5, np.float32), "scale")]
    nodes = [h.make_node("Reshape", ["pixel_values", "shape"], ["flat"], name="flat"),
             h.make_node("Transpose", ["flat"], ["t"], name="tr", perm=[0, 2, 1]),
             h.make_node("MatMul", ["t", "w"], ["huge"], name="project"),
             h.make_node("Div", ["huge", "scale"], ["tokens"], name="rescale")]
    g = h.make_graph(nodes, "overflow", [h.make_tensor_value_info("pixel_values", T.FLOAT, ["batch", 3, 4, 4])],
                     [h.make_tensor_value_info("tokens", T.FLOAT, ["batch", 16, 8])], inits)
    model = h.make_model(g, opset_imports=[h.make_opsetid("", 20)])
    model.ir_version = 10
    onnx.save(model, str(folder / "model.onnx"))
    sess = ort_session(folder / "model.onnx")
    arrays = {}
    for b in (1, 2):
        x = nchw_from_uint8(uint8_images(b, (4, 4), seed=11), MEAN, STD)
        arrays[f"pixel_values.b{b}"] = x
        arrays[f"tokens.b{b}"] = sess.run(None, {"pixel_values": x})[0]
    save_reference(folder / "reference.npz", arrays)
    io_in = [{"name": "pixel_values", "shape": ["batch", 3, 4, 4], "dtype": "float32", "layout": "NCHW"}]
    io_out = [{"name": "tokens", "shape": ["batch", 16, 8], "dtype": "float32"}]
    manifest = {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "name": "overflow",
                # A "tower" of 1-pixel patches projected to 8 channels, no compression: tokens [B, 16, 8]
                # (every key the manifest schema requires, core/manifest_schema.py).
                "encoder": {"name": "overflow", "family": "user", "image_size": [4, 4], "patch_size": 1,
                            "prefix_tokens": 0, "hidden_size": 8, "mean": MEAN, "std": STD, "layer": -1,
                            "weights": {"kind": "none", "seed": None, "path": None, "sha256": None}},
                "compression": {"spec": "none", "method": "none", "params": {}, "prefix": "drop", "prefix_in": 0,
                                "prefix_out": 0, "tokens_in": 16, "tokens_out": 16, "patch_tokens_in": 16,
                                "patch_tokens_out": 16, "grid_in": [4, 4], "grid_out": [4, 4], "dim_in": 8,
                                "dim_out": 8, "indexed_out": 0, "merged_out": 0, "formula": "4·4 = 16"},
                "tokens_in": 16, "tokens_out": 16, "dim_out": 8,
                "preprocess": {"image_size": [4, 4], "mean": MEAN, "std": STD},
                "onnx": {"file": "model.onnx", "opset": 20, "batch": {"min": 1, "max": 2}, "inputs": io_in,
                         "outputs": io_out, "cleanup": "none"},
                "reference": {"file": "reference.npz", "batch_sizes": [1, 2]},
                "variants": {"fp32": {"file": "model.onnx", "precision": "fp32", "input_layout": "nchw-float",
                                      "inputs": io_in, "outputs": io_out}},
                "files": {n: file_entry(folder / n) for n in ("model.onnx", "reference.npz")}}
    (folder / MANIFEST).write_text(dump_manifest(manifest))
    return Bundle.load(folder)


def test_autocast_keeps_overflowing_nodes_fp32_and_the_check_catches_it_when_told_not_to(tmp_path):
    guarded = overflow_bundle(tmp_path / "guarded")
    ensure_variant(guarded, "fp16", options=VariantOptions(quiet=True))
    entry = guarded.variants()["fp16"]
    assert entry["check"]["passed"] and entry["conversion"]["compute_nodes_fp32"] >= 1

    unguarded = overflow_bundle(tmp_path / "unguarded")
    no_guard = VariantOptions(quiet=True, fp16=Fp16Options(data_max=float("inf")))
    with pytest.raises(ParityError, match="fp16 variant fails its check"):
        ensure_variant(unguarded, "fp16", options=no_guard)
    assert "fp16" not in unguarded.variants() and not (unguarded.path / "model.fp16.onnx").exists()


# --- fp16 emulation -------------------------------------------------------------------------------


def fp16_matmul_model(graph_output_fp16: bool):
    """x fp16 [1,3] → MatMul (weights 30000) → fp16 result 9e4 (> fp16 max) → optionally Cast fp32."""
    w = nh.from_array(np.full((3, 2), 30000, np.float16), "w")
    nodes = [h.make_node("MatMul", ["x", "w"], ["m"], name="mm")]
    out_type = T.FLOAT16
    if not graph_output_fp16:
        nodes.append(h.make_node("Cast", ["m"], ["y"], name="to32", to=T.FLOAT))
        out_type = T.FLOAT
    out = "m" if graph_output_fp16 else "y"
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", T.FLOAT16, [1, 3])],
                     [h.make_tensor_value_info(out, out_type, [1, 2])], [w])
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 20)])
    m.ir_version = 10
    return m


def test_emulation_overflows_where_onnxruntime_cpu_silently_does_not():
    x = {"x": np.ones((1, 3), np.float16)}
    model = fp16_matmul_model(graph_output_fp16=False)
    # ONNX Runtime CPU computes the fp16 MatMul in fp32 and drops the round trip: no overflow.
    assert np.isfinite(ort_session(model.SerializeToString()).run(None, x)[0]).all()
    emulated = emulate_fp16(model)
    onnx.checker.check_model(emulated)
    assert np.isinf(ort_session(emulated.SerializeToString()).run(None, x)[0]).all()
    # I/O names and dtypes unchanged; a fp16 graph output stays fp16.
    fp16_out = emulate_fp16(fp16_matmul_model(graph_output_fp16=True))
    assert fp16_out.graph.output[0].name == "m" and fp16_out.graph.output[0].type.tensor_type.elem_type == T.FLOAT16
    assert fp16_out.graph.input[0].type.tensor_type.elem_type == T.FLOAT16
    assert np.isinf(ort_session(fp16_out.SerializeToString()).run(None, x)[0]).all()


def test_emulation_rounds_intermediates_and_leaves_fp32_graphs_alone():
    # 1 + 2^-12 is not representable in fp16: rounded after the Add, the Sub gives 0, not 2^-12.
    nodes = [h.make_node("Add", ["x", "one"], ["s"], name="add"), h.make_node("Sub", ["s", "one"], ["y"], name="sub")]
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", T.FLOAT16, [1])],
                     [h.make_tensor_value_info("y", T.FLOAT16, [1])], [nh.from_array(np.ones(1, np.float16), "one")])
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 20)])
    m.ir_version = 10
    x = {"x": np.array([2.0 ** -12], np.float16)}
    assert ort_session(emulate_fp16(m).SerializeToString()).run(None, x)[0][0] == 0.0
    fp32 = tiny_model()
    same = emulate_fp16(fp32)
    assert [n.op_type for n in same.graph.node] == [n.op_type for n in fp32.graph.node]

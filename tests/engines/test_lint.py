"""The TensorRT lint on small hand-made graphs: each problem is flagged, naming the node."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from tokcomp_edge.core.lint import LintReport, lint_model
from tokcomp_edge.core.lint_ops import SUPPORTED_OPS, UNSUPPORTED_OPS
from tokcomp_edge.errors import LintError


def model(nodes, inputs, outputs, inits=(), opset=20, functions=()):
    g = h.make_graph(nodes, "g", inputs, outputs, list(inits))
    m = h.make_model(g, opset_imports=[h.make_opsetid("", opset)], functions=list(functions))
    m.ir_version = 10
    return m


def vi(name, dtype=T.FLOAT, shape=("batch", 16)):
    return h.make_tensor_value_info(name, dtype, list(shape) if shape is not None else None)


def const(name, value, dtype=np.int64):
    return nh.from_array(np.asarray(value, dtype=dtype), name)


def issues_of(report: LintReport, node: str):
    return [i for i in report.issues if i.node == node]


def only_issue(report: LintReport, node: str, severity: str):
    found = issues_of(report, node)
    assert len(found) == 1, report.format()
    assert found[0].severity == severity, report.format()
    return found[0]


def topk_model(k=4, sorted_=1, k_input=None, extra_inputs=(), extra_nodes=(), inits=None):
    nodes = list(extra_nodes) + [h.make_node("TopK", ["x", k_input or "k"], ["v", "i"], name="topk", axis=1,
                                             sorted=sorted_)]
    return model(nodes, [vi("x"), *extra_inputs], [vi("v", shape=None), vi("i", T.INT64, None)],
                 inits if inits is not None else [const("k", [k])])


# --- clean graphs ---------------------------------------------------------------------------------


def test_clean_vit_like_graph_has_no_issue():
    w = nh.from_array(np.ones((16, 16), np.float32), "w")
    scale = nh.from_array(np.ones(16, np.float32), "s")
    nodes = [h.make_node("MatMul", ["x", "w"], ["y"], name="mm"),
             h.make_node("LayerNormalization", ["y", "s"], ["z"], name="ln", axis=-1),
             h.make_node("Softmax", ["z"], ["p"], name="sm", axis=-1)]
    report = lint_model(model(nodes, [vi("x")], [vi("p")], [w, scale]))
    assert report and report.issues == [], report.format()
    assert report.nodes == 3 and report.opset == 20
    assert "0 error(s), 0 warning(s)" in report.format()[-1]
    report.raise_for_errors()  # no error: returns


def test_topk_with_static_k_sorted_is_clean():
    assert lint_model(topk_model(k=8)).issues == []


# --- operator table -------------------------------------------------------------------------------


def test_tables_are_disjoint_and_hold_the_ops_a_vit_needs():
    assert not SUPPORTED_OPS & UNSUPPORTED_OPS
    for op in ("Conv", "MatMul", "Gemm", "LayerNormalization", "Softmax", "Gelu", "TopK", "GatherElements",
               "AveragePool", "MaxPool", "Resize", "Transpose", "Reshape", "Erf"):
        assert op in SUPPORTED_OPS


def test_unsupported_op_is_an_error_naming_the_node():
    nodes = [h.make_node("Unique", ["x"], ["u"], name="dedup")]
    report = lint_model(model(nodes, [vi("x")], [vi("u", shape=None)]))
    issue = only_issue(report, "dedup", "error")
    assert issue.op_type == "Unique" and "not supported" in issue.message and "depends on the data" in issue.message
    assert not report


def test_op_missing_from_the_table_is_an_error():
    nodes = [h.make_node("FancyNewOp", ["x"], ["y"], name="fancy")]
    issue = only_issue(lint_model(model(nodes, [vi("x")], [vi("y")])), "fancy", "error")
    assert "not in the onnx-tensorrt operator table" in issue.message


def test_unnamed_nodes_are_named_by_index_and_op():
    nodes = [h.make_node("Relu", ["x"], ["r"]), h.make_node("Det", ["r"], ["y"])]
    report = lint_model(model(nodes, [vi("x")], [vi("y", shape=None)]))
    assert [i.node for i in report.errors] == ["#1 Det"]


def test_custom_domain_op_is_an_error_but_a_local_function_is_linted_inside():
    custom = h.make_node("FusedMatMul", ["x", "x"], ["y"], name="fused", domain="com.microsoft")
    report = lint_model(model([custom], [vi("x")], [vi("y")]))
    assert "plugin" in only_issue(report, "fused", "error").message

    fn = h.make_function("local", "Dedup", ["a"], ["b"], [h.make_node("Unique", ["a"], ["b"], name="inner")],
                         opset_imports=[h.make_opsetid("", 20)])
    call = h.make_node("Dedup", ["x"], ["y"], name="call", domain="local")
    m = model([call], [vi("x")], [vi("y", shape=None)], functions=[fn])
    m.opset_import.append(h.make_opsetid("local", 1))
    report = lint_model(m)
    assert issues_of(report, "call") == []
    assert only_issue(report, "call/inner", "error").op_type == "Unique"


def test_ops_newer_than_jetpack6_are_warnings():
    nodes = [h.make_node("RMSNormalization", ["x", "s"], ["y"], name="rms")]
    scale = nh.from_array(np.ones(16, np.float32), "s")
    issue = only_issue(lint_model(model(nodes, [vi("x")], [vi("y")], [scale], opset=20)), "rms", "warning")
    assert "10.15" in issue.message and "10.3" in issue.message


# --- TopK ---------------------------------------------------------------------------------------


def test_topk_k_at_or_above_3840_is_an_error():
    issue = only_issue(lint_model(topk_model(k=3840)), "topk", "error")
    assert "3840" in issue.message and "K = 3840" in issue.message
    assert lint_model(topk_model(k=3839))


def test_topk_unsorted_is_an_error():
    assert "sorted=1" in only_issue(lint_model(topk_model(sorted_=0)), "topk", "error").message


def test_topk_k_from_a_graph_input_is_an_error():
    m = topk_model(k_input="k_in", extra_inputs=[vi("k_in", T.INT64, (1,))], inits=[])
    assert "computed at run time" in only_issue(lint_model(m), "topk", "error").message


def test_topk_k_folded_from_a_static_shape_is_constant():
    # K = x.shape[1] // 2, exported as Shape → Gather → Div: constant once the static dim is known,
    # even though the batch dim is symbolic.
    nodes = [h.make_node("Shape", ["x"], ["shp"], name="shape"),
             h.make_node("Gather", ["shp", "one"], ["n"], name="pick", axis=0),
             h.make_node("Div", ["n", "two"], ["half"], name="half"),
             h.make_node("Unsqueeze", ["half", "zero"], ["k_dyn"], name="unsq")]
    inits = [const("one", 1), const("two", 2), const("zero", [0])]
    assert lint_model(topk_model(k_input="k_dyn", extra_nodes=nodes, inits=inits)).issues == []
    # Picking the symbolic batch dim instead makes K data-dependent.
    inits_batch = [const("one", 0), const("two", 2), const("zero", [0])]
    report = lint_model(topk_model(k_input="k_dyn", extra_nodes=nodes, inits=inits_batch))
    assert only_issue(report, "topk", "error")


# --- Resize, Scatter, pooling, norms ----------------------------------------------------------------


def resize_model(**attrs):
    node = h.make_node("Resize", ["x", "", "scales"], ["y"], name="resize", mode="linear", **attrs)
    scales = nh.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    return model([node], [vi("x", shape=("batch", 3, 8, 8))], [vi("y", shape=None)], [scales], opset=19)


def test_resize_antialias_is_an_error():
    assert "antialias" in only_issue(lint_model(resize_model(antialias=1)), "resize", "error").message
    assert lint_model(resize_model(antialias=0)).issues == []


def test_resize_unsupported_coordinate_mode_is_an_error():
    report = lint_model(resize_model(coordinate_transformation_mode="half_pixel_symmetric"))
    assert "half_pixel_symmetric" in only_issue(report, "resize", "error").message


def scatter_model(op, **attrs):
    if op == "ScatterND":
        node = h.make_node(op, ["x", "idx", "upd"], ["y"], name="scatter", **attrs)
        inits = [const("idx", [[0]]), nh.from_array(np.ones((1, 16), np.float32), "upd")]
        shape = (4, 16)
    else:
        node = h.make_node(op, ["x", "idx", "upd"], ["y"], name="scatter", axis=1, **attrs)
        inits = [const("idx", [[0, 1]]), nh.from_array(np.ones((1, 2), np.float32), "upd")]
        shape = (1, 16)
    return model([node], [vi("x", shape=shape)], [vi("y", shape=shape)], inits, opset=18)


def test_scatter_elements_reduction_is_an_error_and_plain_scatter_is_clean():
    issue = only_issue(lint_model(scatter_model("ScatterElements", reduction="add")), "scatter", "error")
    assert "plugin" in issue.message and "one-hot MatMul" in issue.message
    assert lint_model(scatter_model("ScatterElements")).issues == []


def test_scatter_nd_reduction_is_an_error_and_explicit_none_a_warning():
    assert "no reduction" in only_issue(lint_model(scatter_model("ScatterND", reduction="mul")), "scatter",
                                        "error").message
    assert "10.9" in only_issue(lint_model(scatter_model("ScatterND", reduction="none")), "scatter",
                                "warning").message


def test_pooling_restrictions():
    def pool(**attrs):
        node = h.make_node("MaxPool", ["x"], attrs.pop("outputs", ["y"]), name="pool", **attrs)
        outs = [vi(o, T.INT64 if o == "ind" else T.FLOAT, None) for o in node.output]
        return model([node], [vi("x", shape=("batch", 3, 8, 8))], outs)

    assert lint_model(pool(kernel_shape=[2, 2], strides=[2, 2])).issues == []
    assert "dilations" in only_issue(lint_model(pool(kernel_shape=[2, 2], dilations=[2, 2])), "pool", "error").message
    assert "2-D or 3-D" in only_issue(lint_model(pool(kernel_shape=[2])), "pool", "error").message
    assert "Indices" in only_issue(lint_model(pool(kernel_shape=[2, 2], outputs=["y", "ind"])), "pool",
                                   "error").message


def test_layernorm_extra_outputs_are_an_error():
    scale = nh.from_array(np.ones(16, np.float32), "s")
    node = h.make_node("LayerNormalization", ["x", "s"], ["y", "mean"], name="ln")
    report = lint_model(model([node], [vi("x")], [vi("y"), vi("mean", shape=None)], [scale]))
    assert "first output" in only_issue(report, "ln", "error").message


def test_reduce_axes_computed_at_run_time_are_an_error():
    node = h.make_node("ReduceMean", ["x", "axes"], ["y"], name="mean")
    m = model([node], [vi("x"), vi("axes", T.INT64, (1,))], [vi("y", shape=None)], opset=18)
    assert "build-time constant" in only_issue(lint_model(m), "mean", "error").message
    m = model([node], [vi("x")], [vi("y", shape=None)], [const("axes", [1])], opset=18)
    assert lint_model(m).issues == []


def test_quantize_with_nonzero_zero_point_is_an_error():
    def q(zp):
        node = h.make_node("QuantizeLinear", ["x", "scale", "zp"], ["y"], name="q")
        inits = [nh.from_array(np.array(0.1, np.float32), "scale"), nh.from_array(np.array(zp, np.int8), "zp")]
        return model([node], [vi("x")], [vi("y", T.INT8)], inits)

    assert "symmetric" in only_issue(lint_model(q(3)), "q", "error").message
    assert lint_model(q(0)).issues == []


# --- data-dependent shapes and control flow ----------------------------------------------------------


def test_nonzero_and_nms_are_data_dependent_warnings_compress_an_error():
    report = lint_model(model([h.make_node("NonZero", ["x"], ["y"], name="nz")], [vi("x")],
                              [vi("y", T.INT64, None)]))
    assert "data-dependent" in only_issue(report, "nz", "warning").message and report
    node = h.make_node("Compress", ["x", "mask"], ["y"], name="squeeze_out", axis=1)
    report = lint_model(model([node], [vi("x"), vi("mask", T.BOOL, (16,))], [vi("y", shape=None)]))
    assert only_issue(report, "squeeze_out", "error")


def test_if_is_a_warning_and_its_branches_are_linted():
    then_g = h.make_graph([h.make_node("Unique", ["x"], ["t"], name="bad")], "then", [], [vi("t", shape=None)])
    else_g = h.make_graph([h.make_node("Relu", ["x"], ["e"], name="ok")], "else", [], [vi("e", shape=None)])
    node = h.make_node("If", ["c"], ["y"], name="branch", then_branch=then_g, else_branch=else_g)
    report = lint_model(model([node], [vi("x"), vi("c", T.BOOL, ())], [vi("y", shape=None)]))
    assert "loop/conditional" in only_issue(report, "branch", "warning").message
    assert only_issue(report, "branch/then_branch/bad", "error").op_type == "Unique"


# --- opset, dtypes, external data ---------------------------------------------------------------------


@pytest.mark.parametrize("opset,severity", [(8, "error"), (25, "error"), (22, "warning")])
def test_opset_outside_the_range_or_newer_than_jetpack6(opset, severity):
    report = lint_model(model([h.make_node("Relu", ["x"], ["y"], name="r")], [vi("x")], [vi("y")], opset=opset))
    issue = only_issue(report, "<model>", severity)
    assert str(opset) in issue.message


def test_custom_opset_range_is_honoured():
    m = model([h.make_node("Relu", ["x"], ["y"], name="r")], [vi("x")], [vi("y")], opset=20)
    assert "outside the accepted 9–18" in only_issue(lint_model(m, opset_range=(9, 18)), "<model>", "error").message


def test_float64_io_is_an_error_float64_weights_and_casts_warnings():
    m = model([h.make_node("Relu", ["x"], ["y"], name="r")], [vi("x", T.DOUBLE)], [vi("y", T.DOUBLE)])
    report = lint_model(m)
    assert {i.node for i in report.errors} == {"x", "y"} and "float64" in report.errors[0].message

    w = nh.from_array(np.ones((16,), np.float64), "w64")
    nodes = [h.make_node("Cast", ["w64"], ["w32"], name="down", to=T.FLOAT),
             h.make_node("Add", ["x", "w32"], ["s"], name="add"),
             h.make_node("Cast", ["s"], ["d"], name="up", to=T.DOUBLE),
             h.make_node("Cast", ["d"], ["y"], name="back", to=T.FLOAT)]
    report = lint_model(model(nodes, [vi("x")], [vi("y")], [w]))
    assert report  # warnings only
    assert only_issue(report, "w64", "warning").op_type == "initializer"
    assert "float32" in only_issue(report, "up", "warning").message


def test_cast_to_an_unsupported_dtype_is_an_error():
    m = model([h.make_node("Cast", ["x"], ["y"], name="c", to=T.INT16)], [vi("x")], [vi("y", T.INT16)])
    report = lint_model(m)
    assert "int16" in only_issue(report, "c", "error").message
    assert {i.node for i in report.errors} == {"c", "y"}


def test_external_data_model_loads_without_data_and_missing_file_is_an_error(tmp_path):
    w = nh.from_array(np.ones((16, 16), np.float32), "w")
    m = model([h.make_node("MatMul", ["x", "w"], ["y"], name="mm")], [vi("x")], [vi("y")], [w])
    path = tmp_path / "ext.onnx"
    onnx.save_model(m, str(path), save_as_external_data=True, location="ext.onnx.data", size_threshold=0)
    assert lint_model(path).issues == []
    (tmp_path / "ext.onnx.data").unlink()
    issue = only_issue(lint_model(path), "w", "error")
    assert "ext.onnx.data" in issue.message


# --- report -------------------------------------------------------------------------------------------


def test_report_dict_format_and_raise():
    nodes = [h.make_node("NonZero", ["x"], ["nz"], name="nz"), h.make_node("Unique", ["x"], ["u"], name="uq")]
    report = lint_model(model(nodes, [vi("x")], [vi("nz", T.INT64, None), vi("u", shape=None)]))
    d = report.to_dict()
    assert d["passed"] is False and d["errors"] == 1 and d["warnings"] == 1
    assert {i["node"] for i in d["issues"]} == {"nz", "uq"}
    lines = report.format()
    assert lines[0].startswith("error: uq (Unique)") and lines[1].startswith("warning: nz (NonZero)")
    with pytest.raises(LintError) as exc:
        report.raise_for_errors()
    assert exc.value.exit_code == 1 and "uq (Unique)" in exc.value.message

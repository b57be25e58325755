"""tome:R end to end: export, parity, lint, forbidden ops, the bundle's outputs against the independent ToMe
implementation, --prefix drop, the fp16 variant, validate on ONNX Runtime (fp32 and fp16) and a build plan."""

import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from tokcomp_edge.core.bundle import Bundle
from tokcomp_edge.core.lint import lint_model
from tokcomp_edge.encoders import EncoderConfig, build_encoder

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "compression"))
from graph_ops import forbidden_nodes  # noqa: E402
from tome_reference import reference_for  # noqa: E402

CASES = [("tiny-clip", "tome:20", "keep"), ("tiny-siglip", "tome:30,10", None), ("tiny-dinov2", "tome:25", "keep"),
         ("tiny-vit", "tome:13", "drop"), ("timm:test_vit", "tome:8", "keep")]


@pytest.mark.parametrize("model,spec,prefix", CASES)
def test_export_parity_lint_and_equals_reference(make_bundle, model, spec, prefix):
    res = make_bundle(model, spec, prefix=prefix)
    assert res.parity.passed and res.lint_warnings == []
    b = Bundle.load(res.path)
    comp = b.manifest["compression"]
    enc = build_encoder(EncoderConfig(model=model, seed=0))
    p, n = enc.spec.prefix_tokens, enc.spec.grid[0] * enc.spec.grid[1]
    sched = comp["schedule"]
    assert len(sched) == enc.tower.num_used and comp["block_tokens"][-1] == p + n - sum(sched)
    p_out = comp["prefix_out"]
    assert comp["tokens_out"] == p_out + n - sum(sched)
    shapes = {o["name"]: o["shape"] for o in b.manifest["onnx"]["outputs"]}
    assert shapes == {"tokens": ["batch", comp["tokens_out"], 64], "sizes": ["batch", comp["tokens_out"]],
                      "merge_map": ["batch", n]}
    graph = onnx.load(str(b.path / "model.onnx"))
    assert forbidden_nodes(graph) == [] and lint_model(b.path / "model.onnx").errors == []
    # The merge's rows are copied by Gather (axis 0, whole rows): no GatherND, and GatherElements only on
    # the small int64 index tensors (the destination of each merged token, the merge map) — two per
    # merging block, none over [B, n, C] activations (ONNX Runtime CPU's slowest op in the old merge).
    ops = [n.op_type for n in graph.graph.node]
    merging = sum(1 for r in sched if r)
    assert "GatherND" not in ops and ops.count("GatherElements") <= 2 * merging
    ref = b.reference()
    for batch in b.reference_batches():
        x = torch.from_numpy(ref[f"pixel_values.b{batch}"])
        want, sizes, mmap = (t.numpy() for t in reference_for(enc, x, tuple(sched)))
        if not p_out:
            want, sizes, mmap = want[:, p:], sizes[:, p:], mmap - p
        np.testing.assert_array_equal(ref[f"merge_map.b{batch}"], mmap)
        np.testing.assert_allclose(ref[f"sizes.b{batch}"], sizes)
        np.testing.assert_allclose(ref[f"tokens.b{batch}"], want, atol=1e-4, rtol=1e-4)


def test_fp16_variant_validate_and_build_plan(make_bundle, tmp_path):
    from tokcomp_edge.engines.gpu import GpuInfo
    from tokcomp_edge.engines.plan import make_plan
    from tokcomp_edge.engines.profile import load_profile
    from tokcomp_edge.engines.trt_import import BuildTarget
    from tokcomp_edge.export.variants import VariantOptions, ensure_variant
    from tokcomp_edge.validation import ValidateConfig, validate

    dst = tmp_path / "b"
    shutil.copytree(make_bundle("tiny-clip", "tome:20", prefix="keep").path, dst)
    bundle = Bundle.load(dst)
    ensure_variant(bundle, "fp16", options=VariantOptions(quiet=True))
    check = bundle.variants()["fp16"]["check"]
    assert check["passed"] and check["outputs"]["merge_map"]["jaccard_mean"] >= 0.9
    assert lint_model(dst / "model.fp16.onnx").errors == []
    for variant in (None, "fp16"):
        res = validate(ValidateConfig(target=dst, variant=variant, iterations=2, warmup=0, extra_inputs=2,
                                      quiet=True, out_dir=tmp_path / f"r{variant}", batches=(2,)))
        assert res.passed, (variant, res.failures)
        html = res.report_paths["html"].read_text()
        assert "merge map, first golden image" in html and "merged into token" in html
        kinds = {c["output"]: c["kind"] for c in res.report["accuracy"]["checks"]}
        assert kinds == {"tokens": "tokens", "sizes": "tensor", "merge_map": "indices"}
    golden = [c for c in res.report["accuracy"]["checks"] if c["source"] == "golden" and c["output"] == "merge_map"]
    assert golden and golden[0]["metrics"]["jaccard_mean"] >= 0.9
    plan = make_plan(Bundle.load(dst), load_profile("fp16"), BuildTarget(gpu=GpuInfo("Orin", (8, 7)),
                                                                         trt_version="10.3.0.30"), tmp_path / "e")
    assert plan.output_names == ("tokens", "sizes", "merge_map")


def test_autocast_placeholder_shapes_are_dropped():
    """Regression: AutoCast annotated unresolved dims as `unk`; ONNX Runtime then reused one buffer for a
    [1, 89] and a [1, 197] tensor and failed. Intermediate annotations with made-up symbols are removed."""
    from onnx import TensorProto, helper

    from tokcomp_edge.export.fp16 import _drop_placeholder_shapes

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])
    graph = helper.make_graph([helper.make_node("Concat", ["x", "x"], ["c"], axis=1),
                               helper.make_node("Identity", ["c"], ["y"])], "g", [x], [y],
                              value_info=[helper.make_tensor_value_info("c", TensorProto.FLOAT, ["batch", "unk"]),
                                          helper.make_tensor_value_info("d", TensorProto.FLOAT, ["batch", 3])])
    model = helper.make_model(graph)
    _drop_placeholder_shapes(model)
    assert [vi.name for vi in model.graph.value_info] == ["d"]

"""`tokcomp debug` on a tower with planted massive activations (issue 9, Part 3 "Done when") and a healthy one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tokcomp_edge.core.bundle import Bundle
from tokcomp_edge.debug import DebugConfig, debug
from tokcomp_edge.debug.metrics import errors_over, overflow_margin, tensor_errors
from tokcomp_edge.errors import InputError, ParityError
from tokcomp_edge.export.variants import VariantOptions, ensure_variant

PLANTED = "tower.user.blocks.1"


def test_block_metrics():
    ref = np.array([[1.0, 0.0], [0.0, 2.0]])
    e = tensor_errors(ref, ref + np.array([[0.0, 0.1], [0.0, 0.0]]))
    assert e["max_abs"] == pytest.approx(0.1) and e["rel_l2"] == pytest.approx(0.1 / np.sqrt(5))
    assert e["min_cosine"] == pytest.approx(1 / np.sqrt(1.01))
    bad = tensor_errors(ref, np.array([[np.inf, 0.0], [0.0, 2.0]]))
    assert bad == {"max_abs": float("inf"), "rel_l2": float("inf"), "min_cosine": -1.0}
    assert errors_over([(ref, ref), (ref[:1], ref[:1] * 2)])["rel_l2"] == pytest.approx(1 / np.sqrt(6))
    assert overflow_margin(65504.0) == 1.0 and overflow_margin(1e5) < 1 and overflow_margin(None) is None


def test_the_planted_tower_fails_the_shipped_fp16_check(fresh):
    """AutoCast calibrates on the largest golden batch, where the planted channel is silent; batch 1 overflows."""
    folder = fresh("massive")
    with pytest.raises(ParityError, match="fp16 variant fails its check"):
        ensure_variant(Bundle.load(folder), "fp16", options=VariantOptions(quiet=True))
    assert "fp16" not in Bundle.load(folder).variants()


def test_debug_names_the_planted_block_and_node(fresh):
    folder = fresh("massive")
    result = debug(DebugConfig(target=folder, variant="fp16", quiet=True))
    assert not result
    d = result.to_dict()
    assert [b["index"] for b in d["blocks"]] == [0, 1, 2]
    assert [b["name"] for b in d["blocks"]] == ["tower.user.blocks.0", PLANTED, "tower.user.blocks.2"]
    assert not d["blocks"][0]["breaks"] and d["blocks"][0]["rel_l2"] < 1e-2
    assert d["culprit"]["index"] == 1 and d["culprit"]["name"] == PLANTED
    planted = d["blocks"][1]
    assert planted["overflow_margin"] < 1 and planted["first_nonfinite"]["node"] == d["culprit"]["node"]
    node = next(n for n in planted["nodes"] if n["name"] == d["culprit"]["node"])
    assert node["op_type"] == "MatMul" and node["max_activation"] > 65504 and node["dtype"] == "float16"
    json.dumps(d)  # JSON-safe (inf written as a string)


def test_fix_keeps_the_culprits_in_fp32_and_registers_a_passing_variant(fresh):
    folder = fresh("massive")
    result = debug(DebugConfig(target=folder, variant="fp16", fix=True, quiet=True))
    assert result and result.culprit is None
    bundle = Bundle.load(folder)  # verifies every checksum
    entry = bundle.variants()["fp16"]
    islands = entry["fp32_islands"]
    assert result.fix["before"]["culprit"]["name"] == PLANTED
    assert result.fix["before"]["culprit"]["node"] in islands["nodes"]
    assert entry["check"]["passed"] and tuple(entry["options"]["fp32_nodes"]) == tuple(islands["nodes"])
    assert PLANTED in islands["blocks"]
    assert all(b["rel_l2"] < 1e-2 for b in result.to_dict()["blocks"])
    # The result is stored for the report, describing the registered file.
    stored = json.loads((folder / "debug" / "fp16.json").read_text())
    assert stored["variant_sha256"] == bundle.manifest["files"][entry["file"]]["sha256"]
    assert "Precision debug" in (folder / "debug" / "fp16.html").read_text()
    # The build plan reports the islands.
    from tokcomp_edge.engines.plan import make_plan
    from tokcomp_edge.engines.profile import load_preset
    from tokcomp_edge.engines.trt_import import BuildTarget

    plan = make_plan(bundle, load_preset("fp16"), BuildTarget(gpu=None, trt_version=None, missing=("test",)))
    assert plan.fp32_islands == tuple(islands["nodes"]) and plan.to_dict()["fp32_islands"]
    # The variant's ONNX really carries them: the islands produce float32 tensors.
    import onnx

    from tokcomp_edge.core.ort_session import tensor_types

    model = onnx.load(str(bundle.onnx_path("fp16")))
    types = tensor_types(model)
    outs = {n.name: n.output[0] for n in model.graph.node}
    assert all(types[outs[n]] == onnx.TensorProto.FLOAT for n in islands["nodes"])
    # Remade (`export --variants fp16 --force`, a build that remakes it), the variant keeps its islands and
    # still passes: dropping them would bring the overflow back.
    ensure_variant(bundle, "fp16", force=True, options=VariantOptions(quiet=True))
    again = Bundle.load(folder).variants()["fp16"]
    assert again["fp32_islands"] == islands and again["check"]["passed"]


def test_healthy_tower_has_no_culprit_and_fix_changes_nothing(fresh):
    folder = fresh("healthy")
    ensure_variant(Bundle.load(folder), "fp16", options=VariantOptions(quiet=True))
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    result = debug(DebugConfig(target=folder, variant="fp16", quiet=True))
    assert result and result.culprit is None
    assert all(not b.breaks and b.overflow_margin > 1 for b in result.blocks)
    fixed = debug(DebugConfig(target=folder, variant="fp16", fix=True, quiet=True))
    assert fixed and fixed.fix is None
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == before


def test_bad_input_is_an_input_error(fresh):
    folder = fresh("healthy")
    with pytest.raises(InputError, match="cannot be debugged"):
        debug(DebugConfig(target=folder, variant="fp32", quiet=True))
    with pytest.raises(InputError, match="--fix regenerates fp16"):
        debug(DebugConfig(target=folder, variant="int8", fix=True, quiet=True))
    with pytest.raises(InputError, match="no 'int8' variant"):
        debug(DebugConfig(target=folder, variant="int8", quiet=True))


def test_int8_variant_is_debugged_on_real_photos(fresh):
    """`tokcomp debug BUNDLE --variant int8 --images photos/`: the calibrated variant, per block, on the
    test photos framed by the bundle's policy, judged by the int8 thresholds."""
    from tokcomp_edge.calibration.int8 import CalibrateConfig, calibrate

    photos = Path(__file__).resolve().parents[1] / "calibration" / "photos"
    folder = fresh("healthy")
    calibrate(CalibrateConfig(bundle=folder, images=photos, batch=4, quiet=True, method="max"))
    result = debug(DebugConfig(target=folder, variant="int8", images=photos, max_images=4, quiet=True))
    d = result.to_dict()
    assert "photo" in d["inputs"] or "image" in d["inputs"]
    assert [b["index"] for b in d["blocks"]] == [0, 1, 2]
    assert d["tolerance"]["max_rel_l2"] == 0.1 and d["tolerance"]["min_cosine"] == 0.95
    # Quantisation moves every block a little, and none past the int8 bounds on this healthy tower.
    assert all(0 < b["rel_l2"] < 0.1 for b in d["blocks"]) and d["culprit"] is None and result

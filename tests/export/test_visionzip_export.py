"""visionzip:D:C end to end on the tiny presets and a timm ViT: export, parity, lint, forbidden ops, the
bundle's outputs against an independent computation on HF's eager attention, the fp16 variant, validate
on ONNX Runtime, and a TensorRT build plan."""

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from tokcomp_edge.core.bundle import Bundle
from tokcomp_edge.core.lint import lint_model
from tokcomp_edge.encoders import EncoderConfig, build_encoder
from tokcomp_edge.encoders.hf_towers import build_hf_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "compression"))
from graph_ops import forbidden_nodes  # noqa: E402
from visionzip_reference import visionzip_reference  # noqa: E402

# (model, layer, prefix) → patch tokens 196 (14×14); D = 40, C = 10
CASES = [("tiny-clip", -2, "keep"), ("tiny-siglip", None, None), ("tiny-dinov2", None, "keep"),
         ("tiny-vit", None, "drop")]
PREFIX_IN = {"tiny-clip": 1, "tiny-siglip": 0, "tiny-dinov2": 5, "tiny-vit": 1}
SPEC = "visionzip:40:10"


@pytest.mark.parametrize("model,layer,prefix", CASES)
def test_exports_parity_lint_and_no_forbidden_ops(make_bundle, model, layer, prefix):
    res = make_bundle(model, SPEC, prefix=prefix, **({"layer": layer} if layer is not None else {}))
    assert res.parity.passed and res.lint_warnings == []
    b = Bundle.load(res.path)
    comp = b.manifest["compression"]
    p_out = PREFIX_IN[model] if prefix == "keep" else 0
    assert (comp["tokens_out"], comp["indexed_out"], comp["merged_out"], comp["prefix_out"]) == (p_out + 50, 40, 10, p_out)
    shapes = {o["name"]: (o["shape"], o["dtype"]) for o in b.manifest["onnx"]["outputs"]}
    assert shapes == {"tokens": (["batch", p_out + 50, 64], "float32"), "indices": (["batch", 40], "int64"),
                      "merge_map": (["batch", 196], "int64")}
    graph = onnx.load(str(b.path / "model.onnx"))
    assert forbidden_nodes(graph) == []
    assert lint_model(b.path / "model.onnx").errors == []


def eager_layer(model, layer, x):
    """(layer output tokens, attention probabilities, the block's k_proj output) from HF's eager model."""
    enc = build_encoder(EncoderConfig(model=model, seed=0, layer=-1 if layer is None else layer))
    spec = enc.spec
    hf = build_hf_model(spec.config["model_type"], spec.config["hf"], "eager")
    hf.load_state_dict(enc.tower.hf.state_dict())
    hf.eval()
    idx = enc.tower.num_used - 1
    blk = type(enc.tower)(spec, hf).blocks[idx]  # only to find the ModuleList in this model
    attn = getattr(blk, "self_attn", None) or blk.attention
    seen = []
    hook = attn.k_proj.register_forward_hook(lambda m, a, out: seen.append(out))
    with torch.no_grad():
        out = hf(pixel_values=torch.from_numpy(x), output_attentions=True, output_hidden_states=True)
    hook.remove()
    tokens = out.last_hidden_state if enc.tower.num_used == spec.num_layers else out.hidden_states[enc.tower.num_used]
    return tokens.numpy(), out.attentions[idx].numpy(), seen[0].numpy(), spec.num_heads


@pytest.mark.parametrize("model,layer,prefix", CASES)
def test_outputs_equal_independent_visionzip_on_hf_eager(make_bundle, model, layer, prefix):
    res = make_bundle(model, SPEC, prefix=prefix, **({"layer": layer} if layer is not None else {}))
    b = Bundle.load(res.path)
    ref = b.reference()
    p = PREFIX_IN[model]
    for batch in b.reference_batches():
        x = ref[f"pixel_values.b{batch}"]
        tokens, probs, k, heads = eager_layer(model, layer, x)
        bsz, t, c = k.shape
        keys = k.reshape(bsz, t, heads, c // heads).mean(axis=2)
        # With CLS: the CLS query's row summed over heads (VisionZip's score); without: attention received.
        importance = probs[:, :, 0, :].sum(axis=1) if p else probs.mean(axis=(1, 2))
        p_out = p if prefix == "keep" else 0
        want, idx, mmap = visionzip_reference(tokens[:, p:], importance[:, p:], keys[:, p:], 40, 10, offset=p_out)
        if p_out:
            want = np.concatenate([tokens[:, :p], want], axis=1)
        np.testing.assert_array_equal(ref[f"indices.b{batch}"], idx)
        np.testing.assert_array_equal(ref[f"merge_map.b{batch}"], mmap)
        np.testing.assert_allclose(ref[f"tokens.b{batch}"], want, atol=3e-5, rtol=1e-5)


def test_timm_vit_exports_and_equals_the_definition(make_bundle):
    res = make_bundle("timm:test_vit", "visionzip:30:8", prefix="keep")
    assert res.parity.passed and res.lint_warnings == []
    b = Bundle.load(res.path)
    assert forbidden_nodes(onnx.load(str(b.path / "model.onnx"))) == []
    enc = build_encoder(EncoderConfig(model="timm:test_vit", seed=0))
    ref = b.reference()
    for batch in b.reference_batches():
        x = torch.from_numpy(ref[f"pixel_values.b{batch}"])
        with torch.no_grad():
            y, (imp, keys) = enc.tower(x, with_probe=True)
        p = enc.spec.prefix_tokens
        want, idx, mmap = visionzip_reference(y[:, p:].numpy(), imp[:, p:].numpy(), keys[:, p:].numpy(), 30, 8,
                                              offset=p)
        np.testing.assert_array_equal(ref[f"indices.b{batch}"], idx)
        np.testing.assert_array_equal(ref[f"merge_map.b{batch}"], mmap)
        np.testing.assert_allclose(ref[f"tokens.b{batch}"], np.concatenate([y[:, :p].numpy(), want], 1), atol=3e-5)


def test_fp16_variant_judged_by_index_agreement(make_bundle, tmp_path):
    import shutil

    from tokcomp_edge.export.variants import VariantOptions, ensure_variant

    src = make_bundle("tiny-clip", SPEC, prefix="keep", layer=-2).path
    dst = tmp_path / "b"
    shutil.copytree(src, dst)
    bundle = Bundle.load(dst)
    ensure_variant(bundle, "fp16", options=VariantOptions(quiet=True))
    check = bundle.variants()["fp16"]["check"]
    outs = check["outputs"]
    assert check["passed"] and outs["indices"]["unexplained_swaps"] == 0
    assert outs["indices"]["jaccard_mean"] >= 0.9 and outs["indices"]["score_error"] is not None
    assert outs["merge_map"]["jaccard_mean"] >= 0.9
    assert check["onnxruntime_native"]["outputs"]["merge_map"]["jaccard_mean"] >= 0.9
    assert lint_model(dst / "model.fp16.onnx").errors == []
    # validate on ONNX Runtime judges the fp16 variant by agreement of indices and merge map + token error
    from tokcomp_edge.validation import ValidateConfig, validate

    res = validate(ValidateConfig(target=dst, variant="fp16", iterations=2, warmup=0, extra_inputs=2, quiet=True,
                                  out_dir=None, batches=(2,)))
    assert res.passed, res.failures
    kinds = {c["output"]: c["kind"] for c in res.report["accuracy"]["checks"]}
    assert kinds == {"tokens": "tokens", "indices": "indices", "merge_map": "indices"}


def test_validate_on_onnx_runtime_and_build_plan(make_bundle, tmp_path):
    import shutil

    from tokcomp_edge.engines.gpu import GpuInfo
    from tokcomp_edge.engines.plan import make_plan
    from tokcomp_edge.engines.profile import load_profile
    from tokcomp_edge.engines.trt_import import BuildTarget
    from tokcomp_edge.validation import ValidateConfig, validate

    src = make_bundle("tiny-clip", SPEC, prefix="keep", layer=-2).path
    dst = tmp_path / "b"
    shutil.copytree(src, dst)
    res = validate(ValidateConfig(target=dst, iterations=2, warmup=0, extra_inputs=2, quiet=True,
                                  out_dir=tmp_path / "r", batches=(2,)))
    assert res.passed, res.failures
    acc = res.report["accuracy"]
    assert acc["prune"]["kept"] == 40 and acc["prune"]["merged"] == 10
    mm_grid = np.asarray(acc["prune"]["merge_map_golden"])
    golden = Bundle.load(dst).reference()
    b_max = max(Bundle.load(dst).reference_batches())
    np.testing.assert_array_equal(mm_grid.reshape(-1), golden[f"merge_map.b{b_max}"][0])
    html = res.report_paths["html"].read_text()
    assert "merge map, first golden image" in html and "merged into token" in html
    tok = [c for c in acc["checks"] if c["output"] == "tokens" and c["source"] == "golden"][0]
    assert tok["metrics"]["matched_tokens"] == tok["batch"] * (1 + 40 + 10)  # prefix + kept + merged, per image
    mm = [c for c in acc["checks"] if c["output"] == "merge_map" and c["source"] == "golden"][0]
    assert mm["kind"] == "indices" and mm["passed"] and mm["metrics"]["jaccard_mean"] == 1.0
    plan = make_plan(Bundle.load(dst), load_profile("fp16"), BuildTarget(gpu=GpuInfo("Orin", (8, 7)),
                                                                         trt_version="10.3.0.30"), tmp_path / "e")
    assert plan.output_names == ("tokens", "indices", "merge_map")


def test_fp16_failure_message_names_the_native_run():
    """Regression: when only ONNX Runtime's native fp16 run failed (the emulation passed), the ParityError
    said nothing after the colon. Every failure sentence now names its run, batch and output."""
    from tokcomp_edge.core.comparison import CheckResult

    result = CheckResult(False, {}, ["ONNX Runtime native, golden (batch 1) · tokens: min per-token cosine "
                                     "0.998830 < 0.999 (image 0, token 3)"])
    msg = result.failure_text()
    assert msg.startswith("ONNX Runtime native, golden (batch 1) · tokens: min per-token cosine 0.99883")

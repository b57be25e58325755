"""A VLM bundle goes through the rest of the pipeline unchanged: validate (golden + a fresh PyTorch run of
the rebuilt transformers modules), fp16 / nhwc variants, lint, build --dry-run and int8 calibration."""

from __future__ import annotations

import json

import pytest

from vlm_helpers import run_main


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, vlm_folder):
    from tokcomp_edge.export import ExportConfig, export_bundle

    folder, _ = vlm_folder("internvl")
    out = tmp_path_factory.mktemp("vlm_pipe") / "internvl_pool2"
    export_bundle(ExportConfig(model=f"hf:{folder}", compress="bilinear:4x4", out=out, batch_max=4,
                               variants=("fp16", "nhwc"), quiet=True))
    return out


def test_validate_against_golden_and_fresh_pytorch(bundle):
    from tokcomp_edge.validation import ValidateConfig, validate

    res = validate(ValidateConfig(target=bundle, iterations=2, warmup=1, extra_inputs=2, quiet=True))
    assert res.passed, res.failures
    sources = {c["source"] for c in res.report["accuracy"]["checks"]}
    assert {"golden", "pytorch-seeded", "pytorch-rebuild"} <= sources
    assert res.report["reference"]["pytorch"]["used"] is True
    econ = res.report["economics"]
    # The VLM's own LLM by default; its native 16 tokens per tile against our 4.
    assert [x["llm"]["name"] for x in econ["llms"]] == ["internvl LLM (qwen2)"]
    assert (econ["tokens_in"], econ["tokens_out"]) == (16, 4)
    assert res.report["accuracy"]["layout"]["grid_out"] == [2, 2]
    # the report's summary names the VLM chain (JSON, Markdown, HTML)
    chain = "65 → drop CLS → 64 → bilinear:4x4 → 16 → pixel shuffle 2×2 → 4 → mlp1 → 4 × 48"
    assert res.report["bundle"]["vlm"]["arithmetic"] == chain
    assert chain in res.report_paths["md"].read_text() and chain in res.report_paths["html"].read_text()


@pytest.mark.parametrize("variant", ["fp16", "nhwc"])
def test_variants_validate_on_the_golden_reference(bundle, variant):
    from tokcomp_edge.validation import ValidateConfig, validate

    res = validate(ValidateConfig(target=bundle, variant=variant, iterations=0, extra_inputs=0, torch="off",
                                  quiet=True))
    assert res.passed, res.failures


def test_lint_and_build_dry_run(capsys, bundle):
    code, out, err = run_main(capsys, "lint", bundle)
    assert code == 0, err
    code, out, err = run_main(capsys, "build", bundle, "--profile", "fp16", "--dry-run")
    assert code == 0, err
    assert "trtexec" in out and "model.fp16.onnx" in out


def test_calibrate_int8(capsys, bundle, tmp_path):
    import shutil

    copy = tmp_path / "b"
    shutil.copytree(bundle, copy)
    code, out, err = run_main(capsys, "calibrate", copy, "--synthetic", "--max-images", "8", "--quiet")
    assert code == 0, err
    assert "int8" in json.loads((copy / "manifest.json").read_text())["variants"]

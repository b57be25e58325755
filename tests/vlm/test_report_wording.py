"""The report says what the LLM gets (issue 16 §3): the compression row gives the `tokens` output as tokens ×
dim per tile for a VLM path (was "257 → 64 tokens (dim 128 → 128)" for a 64 × 256 output); token
economics are per tile; ToMe's merge map has its own legend (it reused VisionZip's "green = kept")."""

import html

import pytest

from tokcomp_edge.validation import ValidateConfig, validate
from tokcomp_edge.validation.plots import MERGE_LEGENDS


def _report(res, tmp_path):
    out = validate(ValidateConfig(target=res.path, iterations=2, warmup=0, extra_inputs=0, torch="off",
                                  quiet=True, out_dir=tmp_path))
    assert out.passed, out.failures
    return out


def test_vlm_compression_row_and_economics_are_per_tile(vlm_bundle, tmp_path):
    res = vlm_bundle("internvl")
    (tokens,) = [o for o in res.manifest["onnx"]["outputs"] if o["name"] == "tokens"]
    n, d = tokens["shape"][1:]
    comp = res.manifest["compression"]
    assert (n, d) != (comp["tokens_out"], comp["dim_out"])  # the pixel shuffle + projector change both
    out = _report(res, tmp_path)
    md = out.report_paths["md"].read_text()
    assert f"→ {n} tokens × {d} per tile (what the LLM gets)" in md
    assert "visual tokens per tile" in md and "per image" not in md
    assert "saved per tile" in md or not out.report["economics"]["llms"]


@pytest.mark.parametrize("spec,method", [("tome:8", "tome"), ("visionzip:20:6", "visionzip")])
def test_merge_map_legend_is_the_method_s(vlm_bundle, tmp_path, spec, method):
    page = html.unescape(_report(vlm_bundle("llava", spec), tmp_path).report_paths["html"].read_text())
    other = "visionzip" if method == "tome" else "tome"
    assert all(line in page for line in MERGE_LEGENDS[method])
    assert not any(line in page for line in MERGE_LEGENDS[other])

"""Report files: re-rendering from JSON, the `report` command, schema checks, self-contained HTML."""

import json
import re

import pytest

from tokcomp_edge.errors import InputError
from tokcomp_edge.validation import ValidateConfig, load_report, render_report, validate
from tokcomp_edge.validation.report_html import render_html
from tokcomp_edge.validation.report_md import render_markdown

from .conftest import write_pngs


@pytest.fixture(scope="module")
def prune_report(bundles, tmp_path_factory):
    """One validation of the prune bundle with images: every plot kind is in its HTML."""
    tmp = tmp_path_factory.mktemp("prune-report")
    write_pngs(tmp / "imgs")
    res = validate(ValidateConfig(target=bundles("prune"), images=tmp / "imgs", batches=(1, 2), iterations=4,
                                  warmup=0, extra_inputs=2, quiet=True, out_dir=tmp / "reports"))
    assert res, res.failures
    return res


def test_rerender_is_identical(prune_report, tmp_path):
    paths = prune_report.report_paths
    again = render_report(paths["json"], tmp_path)
    assert again["md"].read_text() == paths["md"].read_text()
    assert again["html"].read_text() == paths["html"].read_text()


def test_report_command(prune_report, cli, tmp_path):
    code, out, exc = cli("report", prune_report.report_paths["json"], "--out", tmp_path)
    assert code == 0, (out, exc)
    assert (tmp_path / prune_report.report_paths["html"].name).is_file()
    assert "report html:" in out


def test_load_report_rejects_other_files(tmp_path, cli):
    p = tmp_path / "x.json"
    p.write_text("{")
    with pytest.raises(InputError, match="not valid JSON"):
        load_report(p)
    p.write_text(json.dumps({"schema": "tokcomp-edge/bundle"}))
    with pytest.raises(InputError, match="expected 'tokcomp-edge/validation-report'"):
        load_report(p)
    p.write_text(json.dumps({"schema": "tokcomp-edge/validation-report", "schema_version": 99}))
    with pytest.raises(InputError, match="schema_version 99"):
        load_report(p)
    code, _, exc = cli("report", tmp_path / "missing.json")
    assert code == 2 and "does not exist" in exc.message


def test_html_is_self_contained(prune_report):
    html = prune_report.report_paths["html"].read_text()
    refs = re.findall(r"""(?:src|href)\s*=\s*['"]([^'"]*)['"]""", html, flags=re.I)
    assert refs, "expected the embedded image"
    assert all(r.startswith("data:image/png;base64,") for r in refs), refs[:3]
    assert "http://" not in html and "https://" not in html and "<script" not in html and "<link" not in html


def test_html_has_every_plot(prune_report):
    html = prune_report.report_paths["html"].read_text()
    assert html.count("<svg class='plot latency'") == 2  # batch 1 and 2
    assert html.count("<svg class='plot heatmap'") == 1
    assert html.count("<svg class='plot mask'") == 1
    assert html.count("<svg class='plot mask-image'") == 3  # one per image
    assert "PASSED" in html


def test_failed_report_renders_failures_first():
    """Rendering needs only the JSON: a hand-made failing report shows its failures and warnings."""
    rep = _minimal_report(passed=False)
    md, html = render_markdown(rep), render_html(rep)
    assert md.startswith("# tokcomp validation — b · onnx-fp32-cpu: **FAILED**")
    assert md.index("## Failures") < md.index("## Accuracy")
    assert "- golden (batch 1) · tokens: rel L2 error 0.5 > 0.001" in md
    assert "> **Warning:** fell back" in md
    assert "class='badge fail'" in html and "fell back" in html


def _minimal_report(passed: bool) -> dict:
    return {
        "schema": "tokcomp-edge/validation-report", "schema_version": 1, "created_utc": "2026-01-01T00:00:00+00:00",
        "tokcomp_version": "0", "passed": passed, "host": "h", "duration_s": 1.0,
        "failures": [] if passed else ["golden (batch 1) · tokens: rel L2 error 0.5 > 0.001"],
        "warnings": ["fell back"], "notes": [],
        "target": {"kind": "onnx", "path": "m.onnx", "variant": "fp32", "precision": "fp32", "label": "onnx-fp32-cpu",
                   "runtime": {"runtime": "onnxruntime", "version": "1", "providers": ["CPUExecutionProvider"]}},
        "bundle": {"name": "b", "path": "b", "manifest_sha256": "0" * 64, "encoder": {}, "compression": {},
                   "files_verified": []},
        "reference": {"pytorch": {"used": False, "reason": "off", "runtime": None}},
        "tolerances": {"tokens": {"atol": None, "rtol": 0.0, "max_rel_l2": 1e-3, "min_cosine": None,
                                  "min_jaccard": None}},
        "accuracy": {"summary": {"tokens": {"kind": "tokens", "checks": 1, "passed": passed, "rel_l2_err": 0.5}},
                     "checks": [], "cosine_grid": {"tokens": None}, "layout": {}, "prune": None},
        "latency": {"warmup": 0, "iterations": 0, "batches": [], "timing": "", "runs": [], "speedup_vs_pytorch": {}},
        "memory": {}, "economics": {"tokens_in": 4, "tokens_out": 1, "ratio": 0.25, "text_tokens": 0, "formula": "F",
                                    "llms": []},
        "images": None, "environment": {"packages": {}},
    }


def test_sanitize_makes_strict_json():
    import numpy as np

    from tokcomp_edge.validation.report_json import dumps, sanitize

    clean = sanitize({"a": float("nan"), "b": np.float32(1.5), "c": np.arange(2), "d": [np.inf, np.int64(3)]})
    assert clean == {"a": None, "b": 1.5, "c": [0, 1], "d": [None, 3]}
    assert json.loads(dumps({"x": float("-inf")})) == {"x": None}


def test_latency_box_of_a_steady_fast_runner_stays_visible():
    """Regression: a target timed at 1.05–1.25 ms beside PyTorch at 2–8 ms drew a 2-px box hidden behind its
    own dots; the browser test found no box. Boxes are now at least 12 px wide around the median."""
    import re

    from tokcomp_edge.validation.plots import latency_strip

    runs = [{"runner": "target", "samples_ms": [1.25, 1.21, 1.2, 1.18, 1.05, 1.12]},
            {"runner": "pytorch", "samples_ms": [7.73, 6.18, 5.97, 1.86, 4.78, 5.78]}]
    svg = latency_strip(runs, "latency, batch 1")
    widths = [float(w) for w in re.findall(r"<rect x='[\d.]+' y='[\d.]+' width='([\d.]+)' height='28'", svg)]
    assert len(widths) == 2 and min(widths) >= 12.0

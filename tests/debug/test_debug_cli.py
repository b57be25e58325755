"""The CLI: exit codes, --json, the report section."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _cli(*args: str):
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), "debug", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)


def test_exit_codes_and_json(fresh):
    folder = fresh("massive")
    r = _cli(str(folder), "--variant", "fp16", "--json")
    assert r.returncode == 1, r.stderr
    d = json.loads(r.stdout)
    assert d["culprit"]["index"] == 1 and d["culprit"]["name"] == "tower.user.blocks.1" and d["culprit"]["node"]
    assert [b["index"] for b in d["blocks"]] == [0, 1, 2]
    r = _cli(str(folder), "--variant", "fp16", "--fix", "-q")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "fixed:" in r.stdout and "no block breaks" in r.stdout
    r = _cli(str(folder), "--variant", "fp16", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["culprit"] is None
    r = _cli(str(folder / "nope"), "--variant", "fp16")
    assert r.returncode == 2 and r.stderr.count("\n") <= 2


def test_validate_report_holds_the_debug_section(fresh, tmp_path):
    """The stored debug result reaches validate's HTML report while it describes the variant on disk."""
    from tokcomp_edge.core.bundle import Bundle
    from tokcomp_edge.validation import ValidateConfig, validate
    from tokcomp_edge.validation.report_html import debug_section
    from tokcomp_edge.validation.target import stored_debug

    folder = fresh("massive")
    assert _cli(str(folder), "--fix", "-q").returncode == 0
    d = stored_debug(Bundle.load(folder), "fp16")
    assert d is not None and d["fix"]["islands"]["nodes"]
    assert stored_debug(Bundle.load(folder), "int8") is None
    html = debug_section(d)
    assert "<svg" in html and "overflow margin" in html and "rel L2" in html
    res = validate(ValidateConfig(target=folder, variant="fp16", iterations=2, warmup=0, extra_inputs=0,
                                  quiet=True, out_dir=tmp_path / "r", batches=(1,)))
    assert res.report["debug"]["variant"] == "fp16"
    page = res.report_paths["html"].read_text()
    assert "Precision debug" in page and "overflow margin" in page

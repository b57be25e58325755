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


def test_report_section_renders_from_the_bundle(fresh):
    from tokcomp_edge.validation.report_html import bundle_debug, debug_section

    folder = fresh("massive")
    assert _cli(str(folder), "--fix", "-q").returncode == 0
    report = {"bundle": {"path": str(folder)}, "target": {"variant": "fp16"}}
    d = bundle_debug(report)
    assert d is not None and d["fix"]["islands"]["nodes"]
    html = debug_section(d)
    assert "<svg" in html and "overflow margin" in html and "rel L2" in html
    assert bundle_debug({"bundle": {"path": str(folder)}, "target": {"variant": "int8"}}) is None

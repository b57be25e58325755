"""`tokcomp debug` on the bench bundle's fp16 variant, timed against one `tokcomp validate` of the same bundle
(issue 9: debug ≤ 3× validate). Both run in child processes (the CLI as a user runs it), alternately."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET = 3.0


def _timed(args: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], cwd=ROOT, check=False, capture_output=True,
                   timeout=3600)
    return time.perf_counter() - t0


def bench_debug(bundle: Path, console, pairs: int = 2) -> dict:
    """Median of per-pair ratios debug / validate (validate: the fp16 variant, the report's default settings)."""
    console.print("timing `tokcomp debug --variant fp16` against `tokcomp validate --variant fp16` …")
    debug_s, validate_s = [], []
    for _ in range(pairs):
        validate_s.append(_timed(["validate", str(bundle), "--variant", "fp16", "--quiet",
                                  "--out", str(bundle / "bench-reports")]))
        debug_s.append(_timed(["debug", str(bundle), "--variant", "fp16", "--quiet"]))
    ratios = sorted(d / v for d, v in zip(debug_s, validate_s))
    median = ratios[len(ratios) // 2] if len(ratios) % 2 else sum(ratios[len(ratios) // 2 - 1:][:2]) / 2
    return {"debug_s": [round(x, 2) for x in debug_s], "validate_s": [round(x, 2) for x in validate_s],
            "ratio_median": round(median, 3), "target": TARGET, "met": median <= TARGET}

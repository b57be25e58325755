"""Fuzz tests (Hypothesis): profiles, the tiny bundles they mutate (built once), the case counter.

Profiles: `ci` (the default, `make test`): derandomized, so CI runs the same cases every time, sized so
the folder runs ≥ 200 cases in about two minutes on 2 cores; `fuzz` (`make fuzz`): random, 25× the cases.
Every test body counts its cases; the suite prints "fuzz: N cases in S s" at the end.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# The suite runs with --import-mode=importlib (no test dir on sys.path): make the helper importable.
sys.path.insert(0, str(Path(__file__).resolve().parent))

_COMMON = dict(deadline=None, database=None, print_blob=True,
               # capsys / fixtures are shared across a test's examples on purpose (each case reads its own
               # output and works in its own temporary folder).
               suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                      HealthCheck.data_too_large, HealthCheck.filter_too_much])
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
settings.register_profile("ci", derandomize=True, max_examples=80, **_COMMON)
settings.register_profile("fuzz", derandomize=False, max_examples=2000, **_COMMON)
settings.load_profile(PROFILE)


class _Cases:
    def __init__(self):
        self.n = 0
        self.seconds = 0.0  # setup + call + teardown of every tests/fuzz test, fixtures included
        self.build_seconds = 0.0

    def count(self) -> None:
        self.n += 1


_CASES = _Cases()


@pytest.fixture(scope="session")
def fuzz_cases():
    """Call `.count()` once per fuzzed case."""
    return _CASES


def pytest_runtest_logreport(report):
    if "tests/fuzz/" in report.nodeid.replace("\\", "/") or report.nodeid.startswith("fuzz/"):
        _CASES.seconds += report.duration


def pytest_terminal_summary(terminalreporter):
    if _CASES.n:
        terminalreporter.write_line(f"fuzz: {_CASES.n} cases in {_CASES.seconds:.1f} s (Hypothesis profile "
                                    f"{PROFILE}, {_CASES.build_seconds:.1f} s of it exporting the tiny bundles)")


@pytest.fixture(scope="session")
def fuzz_bundles(tmp_path_factory):
    """{kind: bundle folder}, exported once per session (batch 1–2, so the references stay small):
    `prune` tiny-clip prune:16 with fp16 and nhwc variants (int64 indices, float16 / uint8 inputs), `tome`
    tiny-siglip tome:4 (sizes, merge map; no CLS), `vlm` tiny-llava (the manifest's vlm section)."""
    from tokcomp_edge.export import ExportConfig, export_bundle

    root = tmp_path_factory.mktemp("fuzz_bundles")
    kinds = {"prune": dict(model="tiny-clip", compress="prune:16", variants=("fp16", "nhwc")),
             "tome": dict(model="tiny-siglip", compress="tome:4"),
             "vlm": dict(model="tiny-llava", compress="none")}
    made = {}
    t0 = time.perf_counter()
    for kind, kw in kinds.items():
        made[kind] = export_bundle(ExportConfig(out=root / kind, batch_max=2, quiet=True, **kw)).path
    _CASES.build_seconds = time.perf_counter() - t0
    return made

"""The one comparator: one runtime's outputs against expected ones, judged against core.tolerance.

Export parity, the fp16/nhwc/int8 variant checks, `validate` and `debug` all compare through
`compare_outputs`. Every comparison produces one Check per output, with its metrics, the tolerance it was judged by, and
one sentence per violated threshold (the report and the exit message quote them).

Prune outputs (`tokens` + `indices`): the kept grid-index sets are compared with the Jaccard index,
and `tokens` only where both runtimes kept the same grid cell (paired by grid index, so a different
order of equal sets is no error). A swap — a cell kept by one runtime and not the other — happens when
two scores tie within rounding; the `min_jaccard` threshold bounds how much of that is accepted
(fp32 accepts none).

Why not Polygraphy's Comparator: `Comparator.run` feeds inputs from its own DataLoader, while ours come
from the bundle's golden reference, real images and a PyTorch run made earlier in the same process; and
`compare_accuracy` judges elementwise atol/rtol only — it has no per-token cosine, no relative L2, and
no notion of two index outputs that may legitimately disagree on ties.

What it is made of: comparison_types (OutputLayout, Check, CheckResult), target_checks (the target alone,
first), comparison_dense (elementwise; integers exactly), comparison_paired (prune and ToMe pairing).
"""

from __future__ import annotations

import numpy as np

from .check_summary import summarize_checks, worst_grid  # noqa: F401 - re-exported: callers import them here
from .comparison_dense import compare_dense, judge_tokens, magnitude_fails  # noqa: F401 - re-exported
from .comparison_paired import compare_merged, compare_pruned
from .comparison_types import Check, CheckResult, OutputLayout  # noqa: F401 - re-exported
from .scores import ScoreEvidence
from .target_checks import check_target
from .tolerance import Tolerance


def _with_target(checks: list[Check], verdicts: dict) -> list[Check]:
    """Each output's target-alone verdict joins its Check: failures first, figures under `target`."""
    for c in checks:
        v = verdicts.get(c.output)
        if v is None:
            continue
        c.metrics["target"] = v.metrics
        if v.failures:
            c.failures = [f"target alone: {f}" for f in v.failures] + c.failures
            c.passed = False
    return checks


def compare_outputs(actual: dict[str, np.ndarray], expected: dict[str, np.ndarray], *, source: str,
                    tols: dict[str, Tolerance], layout: OutputLayout,
                    evidence: ScoreEvidence | None = None) -> list[Check]:
    """All checks of one comparison (every output present in `expected`).

    Args:
        actual: outputs of the runtime under test.
        expected: the outputs to match (golden reference or a PyTorch run).
        source: label of `expected` (see Check.source).
        tols: per-output tolerances.
        layout: token/grid layout from the manifest.
        evidence: the prune scores of reference and target (variant checks), which explain kept-set swaps.
    Returns:
        One Check per output.
    """
    verdicts = check_target({n: np.asarray(actual[n]) for n in expected if n in actual}, layout.target, tols)
    return _with_target(_compare_paired(actual, expected, source=source, tols=tols, layout=layout,
                                        evidence=evidence), verdicts)


def _compare_paired(actual: dict[str, np.ndarray], expected: dict[str, np.ndarray], *, source: str,
                    tols: dict[str, Tolerance], layout: OutputLayout,
                    evidence: ScoreEvidence | None = None) -> list[Check]:
    checks: list[Check] = []
    for name in expected:
        if name not in actual:
            checks.append(Check(source, int(expected[name].shape[0]), name, "tensor", {},
                                tols[name].to_dict(), False, [f"output {name} is missing from the target"]))
    if layout.indices and layout.indices in expected and layout.indices in actual and layout.tokens in actual:
        return checks + compare_pruned(actual, expected, source=source, tols=tols, layout=layout, evidence=evidence)
    if layout.method == "tome" and layout.merge_map in expected and layout.merge_map in actual \
            and layout.tokens in actual:
        return checks + compare_merged(actual, expected, source=source, tols=tols, layout=layout)
    for name in expected:
        if name in actual:
            checks.append(compare_dense(np.asarray(actual[name]), np.asarray(expected[name]), source=source,
                                        output=name, tol=tols[name], layout=layout))
    return checks

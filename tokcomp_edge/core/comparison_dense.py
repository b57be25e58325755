"""Outputs compared as they are: float tensors elementwise (+ rel L2, per-token cosine), integer ones exactly.

The token judgement (judge_tokens) and the whole-tensor magnitude bound are also what the pairing
comparators (core.comparison_paired) apply to the tokens they paired.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .comparison_types import Check, OutputLayout
from .metrics import compare_tensors, cosine_grid, elementwise_violations
from .tolerance import Tolerance


def _g(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3g}"


def judge_tokens(metrics: dict[str, Any], actual: np.ndarray, expected: np.ndarray, tol: Tolerance) -> list[str]:
    """Sentences for every threshold `metrics` violates (empty list = pass)."""
    fails = []
    if not metrics.get("elements"):
        fails.append("0 elements compared: nothing was judged")
    if metrics.get("nonfinite"):
        fails.append(f"{metrics['nonfinite']} non-finite values (NaN/Inf) in the output")
    if tol.atol is not None:
        scale = metrics.get("ref_max_abs") or 0.0
        bound = tol.bound(scale)
        n_bad, worst = elementwise_violations(actual, expected, bound)
        metrics["bound"] = bound
        metrics["elementwise_violations"] = n_bad
        metrics["elementwise_worst_ratio"] = worst if np.isfinite(worst) else None
        if n_bad:
            fails.append(f"max abs error {_g(metrics['max_abs_err'])}: {n_bad} of {metrics['elements']} elements "
                         f"outside atol {tol.atol:g} + rtol {tol.rtol:g}·scale {_g(scale)} = {_g(bound)} "
                         f"(worst {_g(worst)}× the bound)")
    rel = metrics.get("rel_l2_err")
    if tol.max_rel_l2 is not None and not (rel is not None and rel <= tol.max_rel_l2):
        fails.append(f"rel L2 error {_g(rel)} > {tol.max_rel_l2:g}")
    cmin = metrics.get("cosine_min")
    if tol.min_cosine is not None and cmin is not None and not cmin >= tol.min_cosine:
        fails.append(f"min per-token cosine {cmin:.6f} < {tol.min_cosine:g} (image {metrics['worst_token'][0]}, "
                     f"token {metrics['worst_token'][1]})")
    return fails


def magnitude_fails(actual: np.ndarray, expected: np.ndarray, tol: Tolerance) -> list[str]:
    """The whole target tensor's largest magnitude against the reference's scale + the elementwise bound:
    rows a pairing leaves out (a swapped cell, a row with other patches) are not compared, but a finite
    1e30 there is no rounding either. Judged where the elementwise bound is (atol set)."""
    finite = np.abs(actual[np.isfinite(actual)].astype(np.float64))
    if tol.atol is None or not expected.size or not finite.size:
        return []
    scale = float(np.abs(expected.astype(np.float64)).max())
    top = float(finite.max())
    bound = scale + tol.bound(scale)
    if not (top <= bound):
        return [f"largest |value| of the whole target {top:.3g} > the reference's scale {scale:.3g} + bound "
                f"{tol.bound(scale):.3g} (unpaired rows included)"]
    return []


def compare_dense(actual: np.ndarray, expected: np.ndarray, *, source: str, output: str, tol: Tolerance,
                  layout: OutputLayout) -> Check:
    """Compare a grid-shaped (or any) output elementwise; an integer output (indices, a merge map) exactly."""
    if np.issubdtype(expected.dtype, np.integer) or np.issubdtype(actual.dtype, np.integer):
        return _compare_exact(actual, expected, source=source, output=output, tol=tol)
    try:
        m, cos = compare_tensors(actual, expected)
    except ValueError as exc:
        return Check(source, int(expected.shape[0]) if expected.ndim else 0, output, "tensor", {},
                     tol.to_dict(), False, [f"shape mismatch: {exc}"])
    md = m.to_dict()
    fails = judge_tokens(md, actual, expected, tol)
    grid = None
    if cos is not None and layout.grid_out and cos.shape[1] == layout.prefix_out + layout.grid_out[0] * layout.grid_out[1]:
        grid = cosine_grid(cos, layout.grid_out, layout.prefix_out)
    kind = "tokens" if cos is not None else "tensor"
    return Check(source, int(actual.shape[0]), output, kind, md, tol.to_dict(), not fails, fails, grid)


def _compare_exact(actual: np.ndarray, expected: np.ndarray, *, source: str, output: str, tol: Tolerance) -> Check:
    """Integer outputs are positions, not measurements: an index one off is another token, however large the
    grid, so they are never judged by atol + rtol·scale."""
    batch = int(expected.shape[0]) if expected.ndim else 0
    if actual.shape != expected.shape:
        return Check(source, batch, output, "indices", {}, tol.to_dict(), False,
                     [f"shape mismatch: {tuple(actual.shape)} vs {tuple(expected.shape)}"])
    differ = int((actual != expected).sum())
    m = {"elements": int(expected.size), "mismatches": differ, "compared": "exactly (integer output)",
         "max_abs_err": float(np.abs(actual.astype(np.float64) - expected.astype(np.float64)).max(initial=0.0))}
    fails = []
    if not expected.size:
        fails.append("0 elements compared: nothing was judged")
    if differ:
        pos = [int(i) for i in np.argwhere(actual != expected)[0]]
        fails.append(f"{differ} of {expected.size} integer values differ (first at {pos}: "
                     f"{actual[tuple(pos)]} vs {expected[tuple(pos)]}); integer outputs must match exactly")
    return Check(source, batch, output, "indices", m, tol.to_dict(), not fails, fails)

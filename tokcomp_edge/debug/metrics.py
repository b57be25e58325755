"""Per-tensor error figures of a variant's activation against the fp32 one, from the shared metrics
(core/metrics.py: the same max abs / rel L2 / cosine definitions every stage reports)."""

from __future__ import annotations

import numpy as np

from ..core.metrics import compare_tensors, min_row_cosine

FP16_MAX = 65504.0


def tensor_errors(ref: np.ndarray, got: np.ndarray) -> dict[str, float]:
    """max |got − ref|, ‖got − ref‖ / ‖ref‖ and the smallest cosine of rows along the last axis.

    A non-finite value in `got` gives max_abs = rel_l2 = inf and min_cosine = −1 (as broken as it gets),
    unless fp32 holds the very same value there (ToMe's −inf protection mask): those positions are the
    graph's own and are left out (set to 0 in both). Shapes must match; a scalar or 1-D tensor is one row.
    """
    r = np.asarray(ref, dtype=np.float64)
    g = np.asarray(got, dtype=np.float64)
    if r.shape != g.shape:
        raise ValueError(f"shapes differ: {r.shape} vs {g.shape}")
    same = ~np.isfinite(r) & ((g == r) | (np.isnan(g) & np.isnan(r)))
    if same.any():
        r, g = np.where(same, 0.0, r), np.where(same, 0.0, g)
    if not np.isfinite(g).all() or not np.isfinite(r).all():
        return {"max_abs": float("inf"), "rel_l2": float("inf"), "min_cosine": -1.0}
    m, _ = compare_tensors(g.reshape(1, 1, -1), r.reshape(1, 1, -1))
    rel = m.rel_l2_err if m.rel_l2_err is not None else float("inf")
    return {"max_abs": float(m.max_abs_err or 0.0), "rel_l2": float(rel), "min_cosine": min_row_cosine(g, r)}


def overflow_margin(max_abs_activation: float | None) -> float | None:
    """fp16's largest finite value over the largest |activation|: below 1 the value overflows fp16."""
    if max_abs_activation is None:
        return None
    if not np.isfinite(max_abs_activation):
        return 0.0
    return float("inf") if max_abs_activation == 0 else FP16_MAX / float(max_abs_activation)


def errors_over(pairs: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    """tensor_errors over several runs (batches) of the same tensor, whose shapes may differ by batch:
    the largest max_abs, the relative L2 of all runs together, the smallest cosine."""
    diff2 = ref2 = 0.0
    max_abs, min_cos = 0.0, 1.0
    for ref, got in pairs:
        e = tensor_errors(ref, got)
        if not np.isfinite(e["max_abs"]):
            return {"max_abs": float("inf"), "rel_l2": float("inf"), "min_cosine": -1.0}
        r = np.asarray(ref, dtype=np.float64)
        n = float(np.linalg.norm(r))
        diff2 += (e["rel_l2"] * n) ** 2 if n else 0.0
        ref2 += n * n
        max_abs, min_cos = max(max_abs, e["max_abs"]), min(min_cos, e["min_cosine"])
    rel = float(np.sqrt(diff2 / ref2)) if ref2 else 0.0
    return {"max_abs": max_abs, "rel_l2": rel, "min_cosine": min_cos}

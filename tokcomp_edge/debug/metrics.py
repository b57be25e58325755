"""Per-tensor error figures of a variant's activation against the fp32 one (kept here, small, so the
shared comparison core can replace it later)."""

from __future__ import annotations

import numpy as np

FP16_MAX = 65504.0
# Rows whose reference norm is below this share of the largest row norm are left out of the cosine
# (their direction is noise: zero padding, a token the block zeroed).
TINY_ROW = 1e-6


def tensor_errors(ref: np.ndarray, got: np.ndarray) -> dict[str, float]:
    """max |got − ref|, ‖got − ref‖ / ‖ref‖ and the smallest cosine of rows along the last axis.

    A non-finite value in `got` gives max_abs = rel_l2 = inf and min_cosine = −1 (as broken as it gets).
    Shapes must match; a scalar or 1-D tensor is one row.
    """
    r = np.asarray(ref, dtype=np.float64)
    g = np.asarray(got, dtype=np.float64)
    if r.shape != g.shape:
        raise ValueError(f"shapes differ: {r.shape} vs {g.shape}")
    if not np.isfinite(g).all():
        return {"max_abs": float("inf"), "rel_l2": float("inf"), "min_cosine": -1.0}
    diff = g - r
    denom = float(np.linalg.norm(r))
    rel = float(np.linalg.norm(diff) / denom) if denom else (0.0 if not diff.any() else float("inf"))
    rows_r = r.reshape(-1, r.shape[-1]) if r.ndim else r.reshape(1, 1)
    rows_g = g.reshape(rows_r.shape)
    nr, ng = np.linalg.norm(rows_r, axis=-1), np.linalg.norm(rows_g, axis=-1)
    big = nr > TINY_ROW * max(float(nr.max(initial=0.0)), 1e-30)
    cos = (rows_r[big] * rows_g[big]).sum(-1) / np.maximum(nr[big] * ng[big], 1e-30)
    return {"max_abs": float(np.abs(diff).max(initial=0.0)), "rel_l2": rel,
            "min_cosine": float(np.clip(cos, -1.0, 1.0).min(initial=1.0))}


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

"""The report's headline numbers from many Checks: worst figures per output, and the worst cosine grid."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .comparison import Check


def summarize_checks(checks: "list[Check]") -> dict[str, dict[str, Any]]:
    """Worst case per output over all comparisons (the report's headline numbers)."""
    out: dict[str, dict[str, Any]] = {}
    for c in checks:
        s = out.setdefault(c.output, {"kind": c.kind, "checks": 0, "passed": True})
        s["checks"] += 1
        s["passed"] = s["passed"] and c.passed
        m = c.metrics
        for key, pick in (("max_abs_err", max), ("ref_max_abs", max), ("rel_l2_err", max), ("cosine_min", min),
                          ("cosine_p1", min),
                          ("jaccard_min", min), ("jaccard_mean", min)):
            if m.get(key) is not None:
                s[key] = m[key] if key not in s else pick(s[key], m[key])
        for key in ("swapped_total", "explained_swaps", "unexplained_swaps", "patches_moved_total"):
            if m.get(key) is not None:
                s[key] = s.get(key, 0) + int(m[key])
        for key in ("score_error", "elementwise_worst_ratio"):
            if key in m:
                s[key] = m[key] if s.get(key, 0) is None or m[key] is None else max(s.get(key, 0.0), m[key])
        if m.get("matched_tokens") is not None:
            s["matched_tokens_min"] = min(s.get("matched_tokens_min", m["matched_tokens"]), m["matched_tokens"])
        if m.get("mean_abs_err") is not None:
            s["mean_abs_err"] = max(s.get("mean_abs_err", 0.0), m["mean_abs_err"])
        if m.get("cosine_mean") is not None:
            s["cosine_mean"] = min(s.get("cosine_mean", 1.0), m["cosine_mean"])
    return out


def worst_grid(checks: "list[Check]", output: str) -> list[list[float | None]] | None:
    """Cell-wise minimum of the cosine grids of all checks of `output` (None cells stay None)."""
    grids = [c.grid for c in checks if c.output == output and c.grid]
    if not grids:
        return None
    h, w = len(grids[0]), len(grids[0][0])
    out: list[list[float | None]] = [[None] * w for _ in range(h)]
    for g in grids:
        if len(g) != h or len(g[0]) != w:
            continue
        for r in range(h):
            for q in range(w):
                v = g[r][q]
                if v is not None:
                    out[r][q] = v if out[r][q] is None else min(out[r][q], v)
    return out

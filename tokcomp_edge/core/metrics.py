"""Comparison metrics between an output and its expected value (pure numpy, computed in float64); every
stage's comparison goes through core.comparison, which computes them here.

Definitions (also in the README ("Validating a bundle or an engine")):
    max/mean abs error   max / mean of |a − e| over all elements
    rel L2 error         ‖a − e‖₂ / ‖e‖₂ over the whole tensor (0 when both are all-zero)
    per-token cosine     cos(a[b,t,:], e[b,t,:]) for every token; min, mean and 1st percentile reported
    Jaccard (prune)      |A ∩ E| / |A ∪ E| of the kept grid-index sets, per image
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


def finite_or_none(x: float) -> float | None:
    """JSON has no NaN/Inf: such values are stored as null (the non-finite count says why)."""
    x = float(x)
    return x if np.isfinite(x) else None


def token_cosine(actual: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """Cosine similarity of every token (last axis = channels).

    Args:
        actual, expected: [..., C] arrays of equal shape.
    Returns:
        float64 array of shape [...]: 1.0 where both tokens are all-zero, 0.0 where only one is, NaN
        where either token holds a NaN/Inf.
    """
    a = actual.astype(np.float64)
    e = expected.astype(np.float64)
    dot = (a * e).sum(-1)
    na = np.sqrt((a * a).sum(-1))
    ne = np.sqrt((e * e).sum(-1))
    denom = na * ne
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.where(denom > 0, dot / np.where(denom > 0, denom, 1.0), 0.0)
    cos = np.where((na == 0) & (ne == 0), 1.0, cos)
    # Rounding can push |cos| a hair past 1; the metric is a cosine, keep it one.
    cos = np.clip(cos, -1.0, 1.0)
    bad = ~(np.isfinite(a).all(-1) & np.isfinite(e).all(-1))
    return np.where(bad, np.nan, cos)


def min_row_cosine(actual: np.ndarray, expected: np.ndarray, tiny: float = 1e-6) -> float:
    """Smallest cosine of the rows (last axis) of any-shaped tensors, leaving out rows whose expected norm
    is below `tiny` of the largest row norm: inside a network such rows (zero padding, a token a block
    zeroed) have no direction to keep. A scalar or 1-D tensor is one row; NaN/Inf count as −1."""
    e = np.asarray(expected, np.float64)
    a = np.asarray(actual, np.float64)
    rows_e = e.reshape(-1, e.shape[-1]) if e.ndim else e.reshape(1, 1)
    rows_a = a.reshape(rows_e.shape)
    cos = token_cosine(rows_a, rows_e)
    norms = np.sqrt((rows_e * rows_e).sum(-1))
    keep = norms > tiny * max(float(norms.max(initial=0.0)), 1e-30)
    cos = np.where(np.isfinite(cos), cos, -1.0)[keep]
    return float(cos.min(initial=1.0))


@dataclass
class TensorMetrics:
    """How far one output is from its expected value.

    Attributes:
        elements: number of compared elements.
        nonfinite: NaN/Inf count in the actual output (any is a failure).
        max_abs_err, mean_abs_err, rel_l2_err: see module docstring.
        ref_max_abs: max |expected| (the scale the errors should be read against).
        cosine_min, cosine_mean, cosine_p1: per-token cosine statistics (None for non-token outputs).
        worst_token: (image, token) of the smallest cosine, or of the largest abs error without tokens.
    """

    elements: int
    nonfinite: int
    max_abs_err: float | None
    mean_abs_err: float | None
    rel_l2_err: float | None
    ref_max_abs: float | None
    cosine_min: float | None = None
    cosine_mean: float | None = None
    cosine_p1: float | None = None
    worst_token: list[int] | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def compare_tensors(actual: np.ndarray, expected: np.ndarray) -> tuple[TensorMetrics, np.ndarray | None]:
    """Error metrics of `actual` against `expected`.

    Args:
        actual, expected: same shape; [B, T, C] token tensors get per-token cosines.
    Returns:
        (metrics, cosines [B, T] or None).
    Raises:
        ValueError: shapes differ (callers turn this into a failed check naming both shapes).
    """
    if actual.shape != expected.shape:
        raise ValueError(f"shape {tuple(actual.shape)} != expected {tuple(expected.shape)}")
    a = actual.astype(np.float64)
    e = expected.astype(np.float64)
    nonfinite = int(np.size(a) - np.count_nonzero(np.isfinite(a)))
    diff = np.abs(a - e)
    n = int(diff.size)
    if n == 0:  # nothing compared: no error figure at all (a 0 would read as a perfect match)
        return TensorMetrics(0, 0, None, None, None, None), None
    e_norm = float(np.sqrt((e * e).sum()))
    d_norm = float(np.sqrt(((a - e) ** 2).sum()))
    rel = d_norm / e_norm if e_norm > 0 else (0.0 if d_norm == 0 else float("inf"))
    m = TensorMetrics(elements=n, nonfinite=nonfinite, max_abs_err=finite_or_none(diff.max()),
                      mean_abs_err=finite_or_none(diff.mean()), rel_l2_err=finite_or_none(rel),
                      ref_max_abs=finite_or_none(np.abs(e).max()))
    cos = None
    if a.ndim == 3 and a.shape[1] > 0:
        cos = token_cosine(a, e)
        cos = np.where(np.isfinite(cos), cos, -1.0)  # a NaN token counts as the worst possible
        m.cosine_min = float(cos.min())
        m.cosine_mean = float(cos.mean())
        m.cosine_p1 = float(np.percentile(cos, 1))
        m.worst_token = [int(i) for i in np.unravel_index(int(np.argmin(cos)), cos.shape)]
    else:
        m.worst_token = [int(i) for i in np.unravel_index(int(np.nanargmax(diff)), diff.shape)][:2]
    return m, cos


def elementwise_violations(actual: np.ndarray, expected: np.ndarray, bound: float) -> tuple[int, float]:
    """Elements outside |a − e| ≤ bound, and the worst excess ratio.

    Args:
        bound: the output's elementwise bound, atol + rtol·scale (core.tolerance).
    Returns:
        (count of violating elements, max over elements of |a − e| / bound); NaN counts as violating
        with ratio inf.
    """
    diff = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    bad = ~(diff <= bound)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = diff / bound if bound > 0 else np.where(diff > 0, np.inf, 0.0)
    ratio = np.where(np.isfinite(ratio), ratio, np.inf)
    return int(bad.sum()), float(ratio.max()) if ratio.size else 0.0


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """|A ∩ B| / |A ∪ B| of two index lists (1.0 when both are empty)."""
    sa, sb = set(int(x) for x in a.ravel()), set(int(x) for x in b.ravel())
    union = sa | sb
    return len(sa & sb) / len(union) if union else 1.0


@dataclass
class PruneAlignment:
    """Kept-token agreement of two prune outputs, and the tokens both kept, lined up.

    Attributes:
        jaccard: per-image Jaccard index of the kept grid-index sets.
        swapped: per-image count of indices kept by `actual` but not by `expected`.
        invalid: per-image count of indices outside the grid or repeated (a bug, never a tie).
        actual_tokens, expected_tokens: [1, N, C] — prefix tokens of every image, then the tokens at
            grid indices both kept, paired by grid index (not by position: equal sets in a different
            order still compare equal).
        image_of, grid_of: [N] image number and grid index of each paired token (−1 for prefix tokens,
            −2 for merged tokens).
    """

    jaccard: np.ndarray
    swapped: np.ndarray
    invalid: np.ndarray
    actual_tokens: np.ndarray
    expected_tokens: np.ndarray
    image_of: np.ndarray
    grid_of: np.ndarray


def align_pruned(actual_tokens: np.ndarray, actual_idx: np.ndarray, expected_tokens: np.ndarray,
                 expected_idx: np.ndarray, prefix: int, grid_cells: int, merged: int = 0,
                 actual_map: np.ndarray | None = None, expected_map: np.ndarray | None = None) -> PruneAlignment:
    """Pair the tokens two prune outputs both kept.

    Args:
        actual_tokens, expected_tokens: [B, prefix + K + merged, C]; token prefix + j belongs to grid index
            idx[b, j].
        actual_idx, expected_idx: [B, K] grid indices (0 .. grid_cells−1) of the kept tokens.
        prefix: number of prefix (CLS/register) tokens in front of the kept tokens.
        grid_cells: h·w of the input grid (indices must be below it).
        merged: tokens after the kept ones that merge everything not kept (VisionZip's contextual
            tokens). They pair by position, and only in images whose kept sets are equal (which fixes the
            targets) and, given the merge maps, whose member patches are the same in both: otherwise they
            average different patches and are not comparable. Their grid_of is −2.
        actual_map, expected_map: [B, grid_cells] output row of each patch (`merge_map`), or None.
    Returns:
        PruneAlignment.
    """
    bsz = actual_idx.shape[0]
    jac = np.zeros(bsz)
    swapped = np.zeros(bsz, np.int64)
    invalid = np.zeros(bsz, np.int64)
    pa, pe, img, cell = [], [], [], []
    for b in range(bsz):
        ia = [int(x) for x in actual_idx[b]]
        ie = [int(x) for x in expected_idx[b]]
        invalid[b] = sum(1 for x in ia if not 0 <= x < grid_cells) + (len(ia) - len(set(ia)))
        jac[b] = jaccard(actual_idx[b], expected_idx[b])
        swapped[b] = len(set(ia) - set(ie))
        for t in range(prefix):
            pa.append(actual_tokens[b, t])
            pe.append(expected_tokens[b, t])
            img.append(b)
            cell.append(-1)
        pos_a = {g: j for j, g in reversed(list(enumerate(ia)))}  # first occurrence wins
        pos_e = {g: j for j, g in reversed(list(enumerate(ie)))}
        for g in sorted(set(pos_a) & set(pos_e)):
            pa.append(actual_tokens[b, prefix + pos_a[g]])
            pe.append(expected_tokens[b, prefix + pos_e[g]])
            img.append(b)
            cell.append(g)
        if merged and set(ia) == set(ie):
            k = len(ia)
            for t in range(prefix + k, prefix + k + merged):
                if actual_map is not None and expected_map is not None and not np.array_equal(
                        actual_map[b] == t, expected_map[b] == t):
                    continue
                pa.append(actual_tokens[b, t])
                pe.append(expected_tokens[b, t])
                img.append(b)
                cell.append(-2)
    c = actual_tokens.shape[-1]

    def stack(xs: list[np.ndarray]) -> np.ndarray:
        return np.stack(xs)[None] if xs else np.zeros((1, 0, c), actual_tokens.dtype)

    return PruneAlignment(jac, swapped, invalid, stack(pa), stack(pe), np.asarray(img, np.int64),
                          np.asarray(cell, np.int64))


def map_jaccard(actual_map: np.ndarray, expected_map: np.ndarray) -> np.ndarray:
    """Per-image Jaccard index of two merge maps seen as sets of (patch, output row) pairs.

    With a of the N patches mapped to the same row, that is a / (2N − a): 1 when the maps are equal, and
    on the same scale as the kept-set Jaccard of `indices`, so one `min_jaccard` threshold judges both.
    """
    n = actual_map.shape[-1]
    same = (actual_map == expected_map).sum(axis=-1).astype(np.float64)
    return same / np.maximum(2 * n - same, 1)


def cosine_grid(cos: np.ndarray, grid: tuple[int, int], prefix: int) -> list[list[float | None]]:
    """Worst (min over images) per-token cosine at each grid cell, for the heat-map.

    Args:
        cos: [B, prefix + h·w] per-token cosines of a grid-shaped output.
        grid: (h, w) of the output grid.
        prefix: prefix tokens in front of the grid tokens (excluded from the map).
    Returns:
        h rows of w floats.
    """
    h, w = grid
    g = cos[:, prefix:prefix + h * w].min(axis=0).reshape(h, w)
    return [[float(v) for v in row] for row in g]


def cosine_grid_pruned(cos: np.ndarray, image_of: np.ndarray, grid_of: np.ndarray,
                       grid: tuple[int, int]) -> list[list[float | None]]:
    """Worst per-token cosine at each *input*-grid cell over the tokens both runtimes kept there.

    Args:
        cos: [N] cosines of paired tokens (from PruneAlignment, flattened).
        image_of, grid_of: PruneAlignment's bookkeeping (grid −1 = prefix, skipped).
        grid: (h, w) of the input grid.
    Returns:
        h rows of w values; None where no image kept that cell in both runtimes.
    """
    h, w = grid
    out: list[list[float | None]] = [[None] * w for _ in range(h)]
    for c, g in zip(cos.tolist(), grid_of.tolist(), strict=True):
        if g < 0:
            continue
        r, q = divmod(int(g), w)
        cur = out[r][q]
        out[r][q] = c if cur is None else min(cur, c)
    return out


def keep_frequency(indices: np.ndarray, grid: tuple[int, int]) -> list[list[float]]:
    """Fraction of images that kept each grid cell (prune mask averaged over the batch).

    Args:
        indices: [B, K] kept grid indices.
        grid: (h, w).
    Returns:
        h rows of w fractions in 0..1.
    """
    h, w = grid
    counts = np.zeros(h * w)
    for row in indices:
        valid = [int(x) for x in set(row.tolist()) if 0 <= int(x) < h * w]
        counts[valid] += 1
    freq = counts / max(1, indices.shape[0])
    return [[float(v) for v in r] for r in freq.reshape(h, w)]

"""The target judged alone, over whole tensors, before anything is paired with a reference.

A comparison that pairs tokens first (prune's kept cells, ToMe's rows with the same patches) only ever
looks at the pairs: an unpaired row could hold NaN or 1e30 and pass. So every comparison first checks
what must hold of the target by itself:
    every output has elements, and its shape is the manifest's (the batch axis excepted);
    every float output is finite;
    `indices` lie on the input grid and are unique per image;
    `merge_map` points into the compressor's patch rows (never a prefix row), and every patch row holds
        at least one patch; VisionZip's dominant cells map to their own rows;
    ToMe's `sizes` equal the bincount of the merge map (+1 per protected prefix row), within the
        Tolerance's count_atol (0: exact), written `not (err <= bound)` so NaN fails.
The failures are prepended to the output's Check (core.comparison), so one sentence names each cause.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .tolerance import Tolerance


@dataclass(frozen=True)
class TargetLayout:
    """What the manifest says the target's outputs are (for the target-alone checks).

    Attributes:
        method: compression method (`none`, `prune`, `visionzip`, `tome`, …).
        prefix_out: prefix (CLS/register) rows in front of the compressor's patch rows.
        grid_cells: h·w of the input grid (`indices` and `merge_map` index it).
        rows_out: rows the compressor outputs (prefix included): what `merge_map` and `sizes` index. For a
            VLM path this is the tower's compressed rows, not the LLM tokens after its transform.
        shapes: output name → manifest shape (a str dim, e.g. `batch`, is not checked).
        indices, merge_map, sizes: output names, or None when the target has no such output.
    """

    method: str = "none"
    prefix_out: int = 0
    grid_cells: int = 0
    rows_out: int = 0
    shapes: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    indices: str | None = None
    merge_map: str | None = None
    sizes: str | None = None

    @classmethod
    def from_outputs(cls, compression: dict[str, Any], outputs: list[dict[str, Any]],
                     grid: tuple[int, int] | list[int] | None = None) -> "TargetLayout":
        """From a manifest's compression section and its `onnx.outputs` entries (names, shapes)."""
        names = [o["name"] for o in outputs]
        gi = compression.get("grid_in") or grid or (0, 0)
        return cls(method=str(compression.get("method", "none")), prefix_out=int(compression.get("prefix_out", 0)),
                   grid_cells=int(gi[0]) * int(gi[1]), rows_out=int(compression.get("tokens_out", 0) or 0),
                   shapes={o["name"]: tuple(o.get("shape", ())) for o in outputs},
                   indices="indices" if "indices" in names else None,
                   merge_map="merge_map" if "merge_map" in names else None,
                   sizes="sizes" if "sizes" in names and compression.get("method") == "tome" else None)

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> "TargetLayout":
        return cls.from_outputs(manifest.get("compression", {}), manifest["onnx"]["outputs"],
                                manifest.get("encoder", {}).get("grid"))


@dataclass
class TargetVerdict:
    """One output of the target, judged alone: figures (`metrics`) and one sentence per violation."""

    metrics: dict[str, Any]
    failures: list[str]


def _is_float(x: np.ndarray) -> bool:
    return np.issubdtype(x.dtype, np.floating)


def _generic(name: str, x: np.ndarray, layout: TargetLayout) -> TargetVerdict:
    m: dict[str, Any] = {"shape": [int(d) for d in x.shape], "elements": int(x.size)}
    fails = []
    want = layout.shapes.get(name)
    if want is not None:
        fixed = [(i, d) for i, d in enumerate(want) if isinstance(d, int)]
        if len(want) != x.ndim or any(int(x.shape[i]) != d for i, d in fixed):
            fails.append(f"target shape {tuple(x.shape)} is not the manifest's {tuple(want)}")
    if x.size == 0:
        fails.append(f"target output has 0 elements (shape {tuple(x.shape)}): nothing to judge")
    if _is_float(x):
        bad = int(x.size - np.count_nonzero(np.isfinite(x)))
        m["nonfinite"] = bad
        if bad:
            rows = int((~np.isfinite(x)).reshape(x.shape[0], -1).any(axis=1).sum()) if x.ndim else 1
            fails.append(f"{bad} non-finite values (NaN/Inf) in the target, in {rows} of {x.shape[0] if x.ndim else 1} "
                         "images (whole tensor, before any pairing)")
    return TargetVerdict(m, fails)


def _indices(x: np.ndarray, cells: int) -> list[str]:
    if x.ndim != 2 or not np.issubdtype(x.dtype, np.integer):
        return [f"indices must be an integer [B, K] tensor, got {x.dtype} {tuple(x.shape)}"]
    out = int(((x < 0) | (x >= cells)).sum()) if cells else 0
    repeated = sum(int(x.shape[1] - np.unique(row).size) for row in x)
    fails = []
    if out:
        fails.append(f"{out} indices outside the {cells}-cell grid")
    if repeated:
        fails.append(f"{repeated} indices repeated within an image")
    return fails


def _merge_map(x: np.ndarray, layout: TargetLayout, indices: np.ndarray | None) -> tuple[list[str], np.ndarray | None]:
    """Failures, and the per-image row counts [B, rows_out] when the map is usable for `sizes`."""
    if x.ndim != 2 or not np.issubdtype(x.dtype, np.integer):
        return [f"merge_map must be an integer [B, N] tensor, got {x.dtype} {tuple(x.shape)}"], None
    lo, hi = layout.prefix_out, layout.rows_out
    if not hi:
        return [], None
    fails = []
    outside = int(((x < lo) | (x >= hi)).sum())
    if outside:
        fails.append(f"{outside} merge-map entries outside the patch rows {lo}..{hi - 1}")
    if layout.grid_cells and x.shape[1] != layout.grid_cells:
        fails.append(f"merge map has {x.shape[1]} entries for a {layout.grid_cells}-cell grid")
    if outside:
        return fails, None
    counts = np.stack([np.bincount(row, minlength=hi)[:hi] for row in x]) if x.shape[0] else np.zeros((0, hi), np.int64)
    empty = int((counts[:, lo:] == 0).sum())
    if empty:
        fails.append(f"{empty} patch rows hold no patch in the merge map")
    if layout.method == "visionzip" and indices is not None and indices.shape[0] == x.shape[0]:
        k = indices.shape[1]
        valid = (indices >= 0) & (indices < x.shape[1])
        rows = np.take_along_axis(x, np.where(valid, indices, 0), axis=1)
        wrong = int((valid & (rows != lo + np.arange(k))).sum())
        if wrong:
            fails.append(f"{wrong} dominant cells are not mapped to their own row")
    return fails, counts


def _sizes(x: np.ndarray, counts: np.ndarray | None, layout: TargetLayout, tol: Tolerance) -> tuple[dict, list[str]]:
    if counts is None:
        return {}, ["sizes cannot be checked: the merge map is not usable"]
    if x.shape != counts.shape:
        return {}, [f"sizes {tuple(x.shape)} do not match the merge map's rows {tuple(counts.shape)}"]
    want = counts.astype(np.float64)
    want[:, :layout.prefix_out] += 1.0  # a protected prefix row is its own token and holds no patch
    err = float(np.abs(x.astype(np.float64) - want).max(initial=0.0)) if x.size else float("nan")
    m = {"sizes_vs_merge_map_max_err": err if np.isfinite(err) else None, "count_atol": tol.count_atol}
    if not (err <= tol.count_atol):
        n = int((~(np.abs(x.astype(np.float64) - want) <= tol.count_atol)).sum())
        return m, [f"sizes differ from the patches the merge map puts in each row (+1 per prefix row) by up to "
                   f"{err:g} on {n} rows > count_atol {tol.count_atol:g}"]
    return m, []


def check_target(actual: dict[str, np.ndarray], layout: TargetLayout | None,
                 tols: dict[str, Tolerance]) -> dict[str, TargetVerdict]:
    """Every output of the target judged alone (see the module docstring).

    Args:
        actual: the target's outputs by name.
        layout: what the manifest says (None: only the generic checks — non-empty, finite floats).
        tols: per-output tolerances (count_atol judges `sizes`).
    Returns:
        {output name: TargetVerdict} for every output in `actual`.
    """
    layout = layout or TargetLayout()
    out = {name: _generic(name, np.asarray(x), layout) for name, x in actual.items()}
    idx = np.asarray(actual[layout.indices]) if layout.indices and layout.indices in actual else None
    if idx is not None and idx.size:
        out[layout.indices].failures += _indices(idx, layout.grid_cells)
    counts = None
    if layout.merge_map and layout.merge_map in actual and np.asarray(actual[layout.merge_map]).size:
        fails, counts = _merge_map(np.asarray(actual[layout.merge_map]), layout, idx)
        out[layout.merge_map].failures += fails
    if layout.sizes and layout.sizes in actual and np.asarray(actual[layout.sizes]).size:
        m, fails = _sizes(np.asarray(actual[layout.sizes]), counts, layout, tols[layout.sizes])
        out[layout.sizes].metrics.update(m)
        out[layout.sizes].failures += fails
    return out

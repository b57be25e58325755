"""Pair the rows of a ToMe block output by merge membership, not by row index.

After a ToMe block, row r holds the mean of the patches merged into it; the block tap's `source` ([B, N]
int64, the row each patch is in) says which. When a near-tie merge decision goes the other way in the
variant (a score difference within fp16's rounding), the two runs hold different merged sets, and every
row after the first differing one may be shifted: comparing row i with row i then reports a numeric
error that is a membership difference. So rows are paired when they hold the same set of patches; rows
without patches (the protected CLS/register rows, always in front) pair by index; the patches in rows
without a partner are counted as membership differences, and only paired rows are compared numerically.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MembershipPairs:
    """The paired rows of one ToMe block output over every run.

    Attributes:
        pairs: per run, (fp32 rows [n, C], variant rows [n, C]) of the rows holding the same patches.
        patches: patches over all runs and images.
        moved: of those, patches in a row whose member set the other run has nowhere.
    """

    pairs: list[tuple[np.ndarray, np.ndarray]]
    patches: int
    moved: int

    @property
    def agreement(self) -> float:
        """The share of patches whose merged set is the same in both runs (1.0: identical merges)."""
        return 1.0 - self.moved / self.patches if self.patches else float("nan")


def _row_keys(source: np.ndarray, rows: int) -> list[tuple]:
    """Per row: ("p", patches…) for a row holding patches, ("i", r) for one holding none (a prefix row)."""
    members: list[list[int]] = [[] for _ in range(rows)]
    for patch, row in enumerate(np.asarray(source).tolist()):
        if 0 <= row < rows:
            members[row].append(patch)
    return [("p", *m) if m else ("i", r) for r, m in enumerate(members)]


def pair_by_membership(ref_runs: list[tuple[np.ndarray, np.ndarray]],
                       var_runs: list[tuple[np.ndarray, np.ndarray]]) -> MembershipPairs | None:
    """Pair the rows of (block output [B, T, C], source [B, N]) of fp32 and variant runs by membership.

    Returns None when the runs do not line up (batch, patch count or width differ): not a ToMe output.
    """
    pairs, patches, moved = [], 0, 0
    for (rx, rs), (vx, vs) in zip(ref_runs, var_runs):
        rx, vx, rs, vs = np.asarray(rx), np.asarray(vx), np.asarray(rs), np.asarray(vs)
        if rx.ndim != 3 or vx.ndim != 3 or rx.shape[0] != vx.shape[0] or rx.shape[2] != vx.shape[2] \
                or rs.shape != vs.shape or rs.shape[0] != rx.shape[0]:
            return None
        ref_rows, var_rows = [], []
        for b in range(rx.shape[0]):
            rkeys, vkeys = _row_keys(rs[b], rx.shape[1]), _row_keys(vs[b], vx.shape[1])
            where = {k: i for i, k in enumerate(vkeys)}
            for i, k in enumerate(rkeys):
                j = where.pop(k, None)
                if j is not None:
                    ref_rows.append(rx[b, i])
                    var_rows.append(vx[b, j])
                elif k[0] == "p":
                    moved += len(k) - 1
            patches += rs.shape[1]
        pairs.append((np.stack(ref_rows), np.stack(var_rows)) if ref_rows
                     else (np.zeros((0, rx.shape[2]), rx.dtype), np.zeros((0, vx.shape[2]), vx.dtype)))
    return MembershipPairs(pairs=pairs, patches=patches, moved=moved)

"""VisionZip written independently of tokcomp_edge, per image with boolean masks, from the definition in
Yang et al. (CVPR 2025) and dvlab-research/VisionZip's `CLIPVisionTower_VisionZip.forward`:

  dominant   = the D patch tokens of highest importance, in grid order
  remaining  = the other M = N − D patch tokens, in grid order
  targets    = remaining[0 : M : step][:C], step = max(1, M // C)
  assignment = argmax over targets of cos(key_token, key_target), for every non-target remaining token
  contextual = target + mean(assigned tokens)   (target alone when nothing is assigned: counts clamp to 1)

Ties: importance ranks by a stable descending sort (lower grid index first); argmax takes the first maximum.
"""

from __future__ import annotations

import numpy as np


def visionzip_reference(x, importance, keys, dominant: int, contextual: int, offset: int = 0):
    """x [B, N, ch], importance [B, N], keys [B, N, d] (numpy) →
    (tokens [B, D + C, ch] float64, indices [B, D], merge map [B, N]: output row of each patch + offset)."""
    x, importance, keys = (np.asarray(a, np.float64) for a in (x, importance, keys))
    out, kept, maps = [], [], []
    for b in range(x.shape[0]):
        order = np.argsort(-importance[b], kind="stable")
        dom = np.sort(order[:dominant])
        remaining_mask = np.ones(x.shape[1], bool)
        remaining_mask[dom] = False
        remaining = np.flatnonzero(remaining_mask)
        m = remaining.size
        step = max(1, m // contextual)
        is_target = np.zeros(m, bool)
        is_target[np.arange(0, m, step)[:contextual]] = True
        k = keys[b, remaining]
        k = k / np.linalg.norm(k, axis=-1, keepdims=True)
        assign = (k[~is_target] @ k[is_target].T).argmax(axis=1)
        others = remaining[~is_target]
        ctx = []
        row = np.full(x.shape[1], -1, np.int64)
        row[dom] = offset + np.arange(dominant)
        for c, t in enumerate(remaining[is_target]):
            members = x[b, others[assign == c]]
            ctx.append(x[b, t] + (members.mean(axis=0) if len(members) else 0.0))
            row[t] = row[others[assign == c]] = offset + dominant + c
        out.append(np.concatenate([x[b, dom], np.stack(ctx)]))
        kept.append(dom)
        maps.append(row)
    return np.stack(out), np.stack(kept).astype(np.int64), np.stack(maps)

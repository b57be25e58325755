"""Everything Qwen's `grid_thw` decides, computed once per tile as constants of the graph.

transformers derives these per image at run time (`vision_utils.get_vision_*`: repeat_interleave, loops,
`.tolist()`, `nonzero`); at a static tile they are fixed tables, so the exported graph needs no extra
inputs and no data-dependent op. All tables here are in the tower's internal token order: raster
(row-major patch grid) for every family, except Qwen2.5-VL, whose tokens are grouped by window.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class WindowLayout:
    """Qwen2.5-VL's window attention at one grid, as static groups of equal-sized windows.

    transformers tiles the merge-unit grid with windows of `window // merge // patch` units from the top
    left; the last window row/column is smaller where the window does not divide the grid. Windows of the
    same size are contiguous here, so each group is one reshape into [B·windows, heads, tokens, d].

    Attributes:
        order: for each internal position, the raster index of the patch there (a permutation of T).
        groups: (windows, tokens per window) of each group, in order; Σ windows·tokens = T.
    """

    order: tuple[int, ...]
    groups: tuple[tuple[int, int], ...]

    @property
    def inverse(self) -> tuple[int, ...]:
        inv = [0] * len(self.order)
        for i, r in enumerate(self.order):
            inv[r] = i
        return tuple(inv)


def _spans(n: int, size: int) -> list[tuple[int, int]]:
    """(start, length) of the windows along one axis of n merge units: full windows, then any remainder."""
    return [(s, min(size, n - s)) for s in range(0, n, size)]


def window_layout(grid: tuple[int, int], merge: int, window_units: int) -> WindowLayout:
    """The window groups of a (gh, gw) patch grid with windows of `window_units` merge units per side."""
    gh, gw = grid
    rows, cols = _spans(gh // merge, window_units), _spans(gw // merge, window_units)
    order: list[int] = []
    groups: list[tuple[int, int]] = []
    # One group per (window height, window width) class: at most 4 (full/remainder on each axis).
    for hh in sorted({n for _, n in rows}, reverse=True):
        for ww in sorted({n for _, n in cols}, reverse=True):
            count = 0
            for r0, rn in rows:
                if rn != hh:
                    continue
                for c0, cn in cols:
                    if cn != ww:
                        continue
                    count += 1
                    for i in range(r0 * merge, (r0 + rn) * merge):
                        order.extend(i * gw + j for j in range(c0 * merge, (c0 + cn) * merge))
            groups.append((count, hh * ww * merge * merge))
    return WindowLayout(order=tuple(order), groups=tuple(groups))


def rotary_tables(grid: tuple[int, int], head_dim: int, theta: float, order: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """The 2-D rotary cos/sin [T, head_dim] (float32) of the patches at raster indices `order`.

    Same as transformers' VisionRotaryEmbedding: frequencies over head_dim/2, the first quarter of the
    angles from the patch row, the second from its column, then the half repeated (rotate_half pairs).
    """
    gh, gw = grid
    spatial = head_dim // 2
    inv_freq = 1.0 / (theta ** (torch.arange(0, spatial, 2, dtype=torch.float) / spatial))
    rows, cols = (order // gw).float(), (order % gw).float()
    freqs = torch.cat([rows[:, None] * inv_freq, cols[:, None] * inv_freq], dim=-1)
    freqs = torch.cat([freqs, freqs], dim=-1)
    return freqs.cos(), freqs.sin()


def position_taps(grid: tuple[int, int], side: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Qwen3-VL's learned position table (side × side) resampled to the grid: bilinear, align_corners,
    as 4 taps per patch in raster order: (indices [T, 4] int64, weights [T, 4] float32), the taps in
    transformers' order (row tap × column tap)."""
    gh, gw = grid

    def axis(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        src = torch.arange(n, dtype=torch.float32) * (side - 1) / max(n - 1, 1)
        floor = torch.floor(src)
        taps = (floor.long()[:, None] + torch.arange(2)).clamp(0, side - 1)
        weights = (1 - (src[:, None] - floor[:, None] - torch.arange(2)).abs()).clamp(min=0)
        return taps, weights

    ht, hw_ = axis(gh)
    wt, ww = axis(gw)
    idx = (ht[:, None, :, None] * side + wt[None, :, None, :]).reshape(gh * gw, 4)
    wts = (hw_[:, None, :, None] * ww[None, :, None, :]).reshape(gh * gw, 4)
    return idx, wts


def to_merge_order(x: torch.Tensor, grid: tuple[int, int], merge: int) -> torch.Tensor:
    """[B, gh·gw, C] raster → [B, gh·gw, C] in merge-block order (each merge×merge block's tokens
    consecutive, blocks row-major) — the processor's patch order, which the merger groups by view."""
    b, _, c = x.shape
    gh, gw = grid
    x = x.reshape(b, gh // merge, merge, gw // merge, merge, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, gh * gw, c)

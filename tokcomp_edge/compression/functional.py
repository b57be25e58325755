"""The compressors as pure functions on patch tokens laid out as a grid.

Every function takes `x` [B, h·w, C] (row-major over an h×w grid) and returns [B, N_out, C_out].
They use only ops that export to plain, static-shape ONNX that TensorRT parses: reshape/transpose,
AveragePool/MaxPool, MatMul with a constant, Resize (linear, no antialias), TopK with a static K,
GatherElements. No data-dependent shapes, no ScatterElements reductions.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def to_grid(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """[B, h·w, C] → [B, C, h, w]."""
    b, _, c = x.shape
    return x.transpose(1, 2).reshape(b, c, h, w)


def from_grid(x: torch.Tensor) -> torch.Tensor:
    """[B, C, h, w] → [B, h·w, C]."""
    b, c, h, w = x.shape
    return x.reshape(b, c, h * w).transpose(1, 2)


def pooling_matrix(h: int, w: int, s: int) -> torch.Tensor:
    """[⌈h/s⌉·⌈w/s⌉, h·w] averaging matrix for ceil-mode S×S pooling.

    Each row averages exactly the patches its window covers (edge windows cover fewer). (This is not
    LLaVA-OneVision's 27×27 → 14×14 video pooling, which resizes bilinearly: that is `bilinear:14x14`.)
    As one MatMul with a constant it exports to plain ONNX, where non-divisible adaptive pooling would
    decompose into data-dependent gathers.
    """
    ho, wo = math.ceil(h / s), math.ceil(w / s)
    m = torch.zeros(ho * wo, h * w, dtype=torch.float32)
    for i in range(ho):
        rows = range(i * s, min((i + 1) * s, h))
        for j in range(wo):
            cols = range(j * s, min((j + 1) * s, w))
            cells = [r * w + c for r in rows for c in cols]
            m[i * wo + j, cells] = 1.0 / len(cells)
    return m


def pool_tokens(x: torch.Tensor, h: int, w: int, s: int, mode: str = "avg",
                matrix: torch.Tensor | None = None) -> torch.Tensor:
    """S×S pooling of the grid. Divisible grids use the native pool op; others ceil mode.

    Args:
        matrix: the precomputed `pooling_matrix(h, w, s)` for non-divisible avg pooling (a module keeps it
            as a buffer so it is built once); computed here when None.
    """
    if mode == "max":
        # MaxPool with ceil_mode: the windows that hang off the edge take the max of what they cover.
        return from_grid(F.max_pool2d(to_grid(x, h, w), kernel_size=s, stride=s, ceil_mode=bool(h % s or w % s)))
    if h % s == 0 and w % s == 0:
        return from_grid(F.avg_pool2d(to_grid(x, h, w), kernel_size=s, stride=s))
    if matrix is None:
        matrix = pooling_matrix(h, w, s).to(x.dtype)
    return torch.matmul(matrix, x)


def bilinear_tokens(x: torch.Tensor, h: int, w: int, out_h: int, out_w: int) -> torch.Tensor:
    """Bilinear resize of the grid (align_corners=False; antialias off, which TensorRT requires)."""
    y = F.interpolate(to_grid(x, h, w), size=(out_h, out_w), mode="bilinear", align_corners=False,
                      antialias=False)
    return from_grid(y)


def pad_grid(x: torch.Tensor, h: int, w: int, r: int) -> tuple[torch.Tensor, int, int]:
    """Zero-pad the grid (bottom/right) to the next multiple of r; returns (x, new_h, new_w)."""
    ph, pw = (-h) % r, (-w) % r
    if not ph and not pw:
        return x, h, w
    g = F.pad(to_grid(x, h, w), (0, pw, 0, ph))
    return from_grid(g), h + ph, w + pw


def unshuffle_tokens(x: torch.Tensor, h: int, w: int, r: int, order: str = "torch") -> torch.Tensor:
    """Pixel-unshuffle by r: [B, h·w, C] → [B, (h/r)·(w/r), r²·C]. h and w must be multiples of r.

    `torch` order equals F.pixel_unshuffle on the [B, C, h, w] grid: channel index c·r² + i·r + j for
    the neighbour at row offset i, column offset j. Written as reshape/transpose rather than
    F.pixel_unshuffle because older onnxscript exported that as SpaceToDepth with the wrong channel
    order; reshapes export the same everywhere.

    `internvl` reproduces InternVL's `pixel_shuffle(x, scale_factor=1/r)` (ps_version v2) on the
    [B, h, w, C] grid, the order a projector trained for InternVL expects: the two view/permute steps
    below follow InternVL's code line by line.
    """
    b, _, c = x.shape
    if order == "torch":
        g = x.reshape(b, h // r, r, w // r, r, c)  # [B, h', i, w', j, C]
        g = g.permute(0, 1, 3, 5, 2, 4)  # [B, h', w', C, i, j]
        return g.reshape(b, (h // r) * (w // r), c * r * r)
    if order == "internvl":
        g = x.reshape(b, h, w, c)
        # InternVL: n, w, h, c = x.size() — its "w" is our rows, its "h" our columns.
        g = g.reshape(b, h, w // r, c * r)
        g = g.permute(0, 2, 1, 3)
        g = g.reshape(b, w // r, h // r, c * r * r)
        g = g.permute(0, 2, 1, 3)
        return g.reshape(b, (h // r) * (w // r), c * r * r)
    raise ValueError(f"unknown unshuffle order {order!r}")


def norm_scores(x: torch.Tensor) -> torch.Tensor:
    """L2 norm of each token: [B, N, C] → [B, N]."""
    return torch.sqrt((x * x).sum(dim=-1))


def similarity_scores(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of each token to `ref` [B, C]: [B, N, C] → [B, N]."""
    xn = x / (torch.sqrt((x * x).sum(dim=-1, keepdim=True)) + 1e-6)
    rn = ref / (torch.sqrt((ref * ref).sum(dim=-1, keepdim=True)) + 1e-6)
    return (xn * rn.unsqueeze(1)).sum(dim=-1)


def prune_tokens(x: torch.Tensor, scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep the k highest-scoring tokens, in their original (grid) order.

    Returns (tokens [B, k, C], indices [B, k] int64 into the grid). TopK with a static k and sorted
    output, then a second TopK (ascending) to restore grid order, then GatherElements: all static.
    """
    top = torch.topk(scores, k, dim=1, largest=True, sorted=True).indices
    idx = torch.sort(top, dim=1).values
    gathered = torch.gather(x, 1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
    return gathered, idx

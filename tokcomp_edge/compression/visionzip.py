"""VisionZip (Yang et al., CVPR 2025) as a pure function with static shapes and TensorRT-native ops.

Definition (dvlab-research/VisionZip, `CLIPVisionTower_VisionZip.forward`), on the N patch tokens of one
layer:
  1. dominant: the D tokens with the highest importance (CLS attention summed over heads), kept in
     grid order;
  2. the M = N − D remaining tokens, in grid order; every step-th of them (step = M // C, the first C)
     is a target, every other one is assigned to the target whose key (head-averaged, L2-normalised)
     has the highest cosine with its own;
  3. contextual token c = target_c + mean of the tokens assigned to c (target_c alone when none is).
Output: [D dominant tokens, C contextual tokens], the D dominant grid indices, and the merge map: for each
patch (grid order) the row of the output it went into (offset by the prefix rows kept in front).

The reference selects with masks (`masked_select`, boolean indexing → NonZero: data-dependent shapes)
and builds the assignment with an in-place scatter. Here every shape is a constant of (N, D, C):
  - one stable descending sort of the importance (ONNX TopK with K = N, sorted), split at D; each part
    is sorted back into grid order (a TopK over integers, as prune does);
  - the targets and the tokens to merge are fixed *positions* in the remaining list (constant Gathers);
  - the assignment is ArgMax + a one-hot compare, and the per-target sums one MatMul with it — exactly a
    scatter-add, without ScatterElements reductions (which TensorRT routes to a non-deterministic plugin);
  - the merge map is one ScatterElements *without* reduction: dominant, target and merged indices
    partition the grid, so every cell is written exactly once.

Tie rule (flat image regions give exactly equal scores):
  - importance ties: the lower grid index ranks first. In PyTorch a stable sort does this; the exported
    graph has a TopK (K = N, sorted) instead — the exporter has no stable sort — whose ONNX specification
    states the same rule ("the lower index appears first"), which ONNX Runtime follows (a test checks
    both on exactly tied scores). A TensorRT engine's TopK does not document its tie order and may pick another token
    of equal importance — `validate` judges that by index agreement, as for prune.
  - similarity ties: the first (lowest) target wins, torch.argmax's and ONNX ArgMax's (select_last_index=0)
    rule; TensorRT builds ArgMax on TopK(k=1), tie order again undocumented.
"""

from __future__ import annotations

import torch


def gather_rows(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x [B, N, C], idx [B, K] int64 → [B, K, C] (GatherElements on an expanded index)."""
    return torch.gather(x, 1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def target_positions(rest: int, contextual: int) -> tuple[list[int], list[int]]:
    """VisionZip's targets among the `rest` remaining tokens: every (rest // C)-th, the first C of them.

    Returns (target positions, positions of the tokens merged into them), both ascending.
    """
    step = max(1, rest // contextual)
    targets = list(range(0, rest, step))[:contextual]
    chosen = set(targets)
    return targets, [i for i in range(rest) if i not in chosen]


def split_dominant(importance: torch.Tensor, dominant: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(dominant indices [B, D], remaining indices [B, N − D]), each in grid order; ties → lower index."""
    if torch.compiler.is_exporting():
        # The exporter has no stable sort; ONNX TopK (sorted, K = N) specifies the same tie order.
        order = torch.topk(importance, importance.shape[1], dim=1, largest=True, sorted=True).indices
    else:
        order = torch.sort(importance, dim=1, descending=True, stable=True).indices
    dom = torch.sort(order[:, :dominant], dim=1).values
    rest = torch.sort(order[:, dominant:], dim=1).values
    return dom, rest


def unit_rows(k: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit L2 norm (VisionZip divides by the norm; the clamp only guards a zero row). The
    norm exports as one ReduceL2 (three nodes where sqrt(sum(k·k)) took five)."""
    return k / torch.linalg.vector_norm(k, dim=-1, keepdim=True).clamp_min(1e-12)


def visionzip_tokens(x: torch.Tensor, importance: torch.Tensor, keys: torch.Tensor, dominant: int,
                     contextual: int, offset: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """VisionZip on patch tokens.

    Args:
        x: [B, N, channels] patch tokens (the layer's output).
        importance: [B, N] score per patch token (CLS attention, or attention received without CLS).
        keys: [B, N, d] the layer's keys averaged over heads.
        dominant, contextual: D and C (D + C < N).
        offset: rows in front of these tokens in the final output (kept prefix tokens), added to the map.
    Returns:
        (tokens [B, D + C, channels] = [dominant in grid order, contextual in target order],
         indices [B, D] int64 grid indices of the dominant tokens,
         merge_map [B, N] int64: output row of each patch — offset + j for the j-th dominant token,
         offset + D + c for the tokens merged into contextual token c, its target included).
    """
    n = x.shape[1]
    dom, rest = split_dominant(importance, dominant)
    targets, merged = target_positions(n - dominant, contextual)
    t_idx = rest[:, targets]  # constant positions: a Gather with a constant index, no data-dependent shape
    m_idx = rest[:, merged]
    kt = unit_rows(gather_rows(keys, t_idx))  # [B, C, d]
    km = unit_rows(gather_rows(keys, m_idx))  # [B, M − C, d]
    assign = (km @ kt.transpose(1, 2)).argmax(dim=-1)  # [B, M − C]; first maximum on ties
    slots = torch.arange(contextual, device=x.device)
    one_hot = (assign.unsqueeze(-1) == slots).to(x.dtype)  # [B, M − C, C]
    counts = one_hot.sum(dim=1).clamp_min(1.0).unsqueeze(-1)  # [B, C, 1]; an empty target stays itself
    merged_sum = one_hot.transpose(1, 2) @ gather_rows(x, m_idx)  # [B, C, channels]: scatter-add as a MatMul
    ctx = gather_rows(x, t_idx) + merged_sum / counts
    rows = torch.cat([torch.arange(dominant, device=x.device).expand(x.shape[0], -1) + offset,
                      slots.expand(x.shape[0], -1) + offset + dominant,
                      assign + offset + dominant], dim=1)
    merge_map = torch.zeros_like(importance, dtype=torch.int64).scatter(1, torch.cat([dom, t_idx, m_idx], 1), rows)
    return torch.cat([gather_rows(x, dom), ctx], dim=1), dom, merge_map

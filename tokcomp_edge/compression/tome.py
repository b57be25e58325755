"""ToMe (Bolya et al., ICLR 2023) bipartite soft matching, with static shapes and TensorRT-native ops.

Definition (facebookresearch/ToMe, `tome.merge.bipartite_soft_matching` + `merge_wavg`, as
`tome.patch.timm` applies it between a block's attention residual and its MLP):
  1. metric = the block's keys averaged over heads, L2-normalised;
  2. tokens alternate into A (even positions) and B (odd positions); every A token finds its most
     similar B token (cosine);
  3. the r A tokens with the best matches are merged into their B match: x ← Σ size·x / Σ size and
     size ← Σ size (a size-weighted average, sizes starting at 1);
  4. output order: the unmerged A tokens, then all B tokens. The unmerged A tokens are in descending
     match order, or — when there are protected tokens — re-sorted into their original order (ToMe does
     this for its CLS token so that it stays first).

Protected tokens: ToMe protects only a CLS token (its score row is −inf: never merged away; being in A it
is never a destination). Here every prefix token (CLS and registers) is protected both ways — its row
and, for the ones that fall into B, its column are −inf — so no prefix token is merged away or absorbs a
patch. The prefix tokens then sit at fixed output positions; a constant permutation moves them back to
the front in their original order (the identity for CLS alone, so ToMe's order is kept exactly).

Static: r is a constant per block, every shape a function of (T, r). The reference's `argsort` is one
TopK over the A tokens (K = |A|, sorted); `scatter_reduce(sum)` is a MatMul with a one-hot matrix of the
destinations (exactly the scatter-add, without ScatterElements reductions); the position bookkeeping is a
ScatterElements without reduction (unmerged and merged A tokens partition A, so each slot is written once).

Tie rule: match ties (equal cosines) go to the first B token (ArgMax, first maximum); ranking ties keep the
lower A index first (stable sort in PyTorch, ONNX TopK's specified order in the graph). ToMe's own
`argsort` is not stable, so on exact ties the reference may pick differently; TensorRT documents neither.
"""

from __future__ import annotations

import torch

from .visionzip import unit_rows

NEG = float("-inf")


def merge_cap(tokens: int, protected: int) -> int:
    """The most tokens one ToMe step can merge: half of the unprotected tokens (ToMe's min(r, (t − p) // 2))."""
    return (tokens - protected) // 2


def protection_masks(tokens: int, protected: int) -> tuple[list[int], list[int]]:
    """Positions, within A and within B, of the protected (prefix) tokens 0..protected−1."""
    return ([i // 2 for i in range(protected) if i % 2 == 0], [i // 2 for i in range(protected) if i % 2 == 1])


def _rank(values: torch.Tensor) -> torch.Tensor:
    """Indices of `values` [B, n] in descending order; ties → lower index first."""
    if torch.compiler.is_exporting():
        # No stable sort in the exporter; ONNX TopK (sorted) specifies the same tie order.
        return torch.topk(values, values.shape[1], dim=1, largest=True, sorted=True).indices
    return torch.sort(values, dim=1, descending=True, stable=True).indices


def _rows(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    return torch.gather(x, 1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def tome_merge(x: torch.Tensor, size: torch.Tensor, keys: torch.Tensor, r: int, protected: int
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One ToMe step.

    Args:
        x: [B, T, C] tokens (after the block's attention residual).
        size: [B, T, 1] patches each token covers.
        keys: [B, T, d] the block's keys averaged over heads.
        r: tokens to merge (≤ merge_cap(T, protected)).
        protected: leading tokens (prefix) that are never merged.
    Returns:
        (x [B, T − r, C], size [B, T − r, 1], new_position [B, T] int64: where each input token went).
    """
    b, t, _ = x.shape
    ta = (t + 1) // 2
    tb = t // 2
    # A / B as Gathers with constant indices rather than strided Slices: ModelOpt AutoCast annotated the
    # odd-length strided slices of an fp16 variant with shapes ONNX Runtime then rejected (buffer reuse).
    even = torch.tensor(list(range(0, t, 2)), device=x.device)
    odd = torch.tensor(list(range(1, t, 2)), device=x.device)
    m = unit_rows(keys)
    scores = m[:, even] @ m[:, odd].transpose(1, 2)  # [B, |A|, |B|]
    a_prot, b_prot = protection_masks(t, protected)
    if a_prot or b_prot:
        # A constant additive mask: −inf on protected rows (never merged) and columns (never absorb).
        # Built as a Python list so that it is a graph constant (no in-graph index_put → ScatterND).
        rows = [[NEG if (i in a_prot or j in b_prot) else 0.0 for j in range(tb)] for i in range(ta)]
        scores = scores + torch.tensor(rows, dtype=scores.dtype, device=scores.device)
    node_max, node_idx = scores.max(dim=-1)  # best B of each A; first maximum on ties
    order = _rank(node_max)
    src_idx, unm_idx = order[:, :r], order[:, r:]
    if protected:
        unm_idx = torch.sort(unm_idx, dim=1).values  # original order, so the prefix stays in front
    dst_idx = torch.gather(node_idx, 1, src_idx)  # [B, r] into B
    xs = x * size
    xa, xb, sa, sb = xs[:, even], xs[:, odd], size[:, even], size[:, odd]
    one_hot = (dst_idx.unsqueeze(-1) == torch.arange(tb, device=x.device)).to(x.dtype)  # [B, r, |B|]
    dst_x = xb + one_hot.transpose(1, 2) @ _rows(xa, src_idx)  # the scatter-add, as a MatMul
    dst_s = sb + one_hot.transpose(1, 2) @ _rows(sa, src_idx)
    new_x = torch.cat([_rows(xa, unm_idx), dst_x], dim=1)
    new_s = torch.cat([_rows(sa, unm_idx), dst_s], dim=1)
    u = ta - r
    # Where each A token went: its slot among the unmerged, or u + its destination in B.
    slots = torch.cat([torch.arange(u, device=x.device).expand(b, -1), dst_idx + u], dim=1)
    pos_a = torch.zeros(b, ta, dtype=torch.int64, device=x.device).scatter(1, torch.cat([unm_idx, src_idx], 1), slots)
    pos_b = (torch.arange(tb, device=x.device) + u).expand(b, -1)
    # Interleave back to input order: input token i is A[i // 2] (even i) or B[i // 2] (odd i).
    inverse = torch.tensor([i // 2 if i % 2 == 0 else ta + i // 2 for i in range(t)], device=x.device)
    new_pos = torch.cat([pos_a, pos_b], dim=1)[:, inverse]
    perm = front_permutation(ta, tb, r, protected)
    if perm is not None:
        new_x, new_s = new_x[:, perm], new_s[:, perm]
        where = [0] * len(perm)
        for k, j in enumerate(perm):
            where[j] = k
        new_pos = torch.tensor(where, device=x.device)[new_pos]
    return new_x / new_s, new_s, new_pos


def front_permutation(ta: int, tb: int, r: int, protected: int) -> list[int] | None:
    """Constant order that puts the protected tokens first, in their original order (None: already so).

    After a merge with protection the A prefix tokens are the first unmerged ones (slots 0, 1, …) and the
    B prefix tokens the first B ones (slots u, u + 1, …, u = |A| − r).
    """
    u = ta - r
    front = [i // 2 if i % 2 == 0 else u + i // 2 for i in range(protected)]
    if front == list(range(protected)):
        return None
    rest = [j for j in range(u + tb) if j not in set(front)]
    return front + rest

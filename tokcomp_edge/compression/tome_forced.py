"""PyTorch's ToMe run forced to take a target's merge decisions, and whether each differing one was a near-tie.

Where a lower precision (fp16) sits within its noise of many ToMe decisions, it may take the other side of
several of them, and every later block then sees other tokens: no single flipped decision
(compression/tome_replay.py) reproduces its merge map. The target is judged here on its own decisions
instead. Its per-block patch → row maps (the bundle's block taps, `tokcomp_block_<i>_source`) give, step
by step, which A tokens it merged and into which B token. `forced_run` re-runs the fp32 PyTorch module
taking exactly those decisions, and at each step checks every decision where the target differs from
what PyTorch would decide on the very same tokens:

  rank boundary: PyTorch would merge A tokens the target kept (set R) and keep ones it merged (set T):
      max node_max(R) − min node_max(T) ≤ score_atol;
  best match: the target merged A token a into B token d, PyTorch's best is d* ≠ d:
      score(a, d*) − score(a, d) ≤ score_atol.

Scores are PyTorch's (float32, read in float64) on the forced history, so both conditions are about the
reference's own numbers; NaN or +inf scores, maps that are not a valid ToMe step (a token's patches split
over rows, an A token sharing a row with no B token, a count other than r merges, a protected column)
are failures. The forced run's outputs are then what the target must equal within the precision's
tolerance (export/tome_parity.py `explain_by_forcing`): exact up to rounding for the target's own map.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from .tome_replay import _steering


@dataclass
class Forced:
    """What forcing the target's decisions showed, per image.

    Attributes:
        differing: image → the decisions where the target differs from PyTorch on the same tokens, as
            (step, kind, gap) with kind `rank` or `match`.
        invalid: image → why its maps are not a ToMe step PyTorch could be forced to (first one found).
        nonfinite: image → the first step whose PyTorch scores hold NaN or +inf.
    """

    differing: dict[int, list[tuple[int, str, float]]] = field(default_factory=dict)
    invalid: dict[int, str] = field(default_factory=dict)
    nonfinite: dict[int, int] = field(default_factory=dict)

    def worst(self, b: int) -> float:
        """The largest score gap among image b's differing decisions (0 when there is none)."""
        return max((g for _, _, g in self.differing.get(b, [])), default=0.0)

    def explained(self, b: int, atol: float) -> bool:
        """Image b's every differing decision is a near-tie in PyTorch's scores (NaN gaps never are)."""
        return (b not in self.invalid and b not in self.nonfinite
                and all(g <= atol for _, _, g in self.differing.get(b, [])))


def decode_step(before: np.ndarray, after: np.ndarray, tokens: int, r: int) -> tuple[dict[int, int], str]:
    """One image's decisions of one ToMe step from its patch → row maps around it.

    Args:
        before: [N] the input token of each patch (0 … tokens − 1); after: [N] its output row.
        tokens: input tokens T of the step; r: merges of the step.
    Returns:
        ({A slot → B slot it merged into}, "") or ({}, why the maps are no valid step).
    """
    row_of: dict[int, int] = {}
    for tok, row in zip(before.tolist(), after.tolist()):
        if not 0 <= tok < tokens:
            return {}, f"patch in token {tok}, outside the step's {tokens} tokens"
        if row_of.setdefault(tok, row) != row:
            return {}, f"the patches of token {tok} went to different rows ({row_of[tok]}, {row})"
    b_row = {}
    for tok, row in row_of.items():
        if tok % 2 == 1:
            if row in b_row:
                return {}, f"B tokens {2 * b_row[row] + 1} and {tok} share row {row}"
            b_row[row] = tok // 2
    merged, seen_a = {}, {}
    for tok, row in row_of.items():
        if tok % 2 == 0:
            if row in b_row:
                merged[tok // 2] = b_row[row]
            elif row in seen_a:
                return {}, f"A tokens {2 * seen_a[row]} and {tok} share row {row} without a B token"
            seen_a[row] = tok // 2
    if len(merged) != r:
        return {}, f"{len(merged)} tokens merged, the step merges {r}"
    return merged, ""


def forced_run(model: torch.nn.Module, x: torch.Tensor, maps: list[np.ndarray], prefix: int):
    """Run `model` on `x` taking the target's decisions; returns (the model's output, Forced), whose
    `explained(b, score_atol)` judges image b.

    Args:
        maps: the target's patch → row map after each ToMe step ([B, N] int each, in step order).
        prefix: protected leading tokens (the initial patch p is token prefix + p).
    """
    out = Forced()
    step = [0]
    n = maps[0].shape[1] if maps else 0

    def force(scores, node_max, node_idx, order, r):
        s = step[0]
        step[0] += 1
        if s >= len(maps):
            raise ValueError(f"the module runs more ToMe steps than the {len(maps)} maps given")
        t = scores.shape[1] + scores.shape[2]  # |A| + |B| input tokens
        before = maps[s - 1] if s else np.broadcast_to(np.arange(prefix, prefix + n), maps[0].shape)
        s64, nm64 = scores.detach().double(), node_max.detach().double()
        order, node_idx = order.clone(), node_idx.clone()
        for b in range(scores.shape[0]):
            if b in out.invalid or b in out.nonfinite:
                continue  # already failed: PyTorch's own decisions for it, nothing more to judge
            sb = s64[b]
            if bool((torch.isnan(sb) | torch.isposinf(sb)).any()):
                out.nonfinite[b] = s
                continue
            merged, why = decode_step(np.asarray(before[b]), np.asarray(maps[s][b]), t, r)
            if why:
                out.invalid[b] = f"ToMe step {s}: {why}"
                continue
            mine = [int(a) for a in order[b, :r].tolist()]
            diff = out.differing.setdefault(b, [])
            ref_only = set(mine) - set(merged)
            tgt_only = set(merged) - set(mine)
            if ref_only:
                diff.append((s, "rank", float(max(nm64[b, a] for a in ref_only) - min(nm64[b, a] for a in tgt_only))))
            for a, d in merged.items():
                if d != int(node_idx[b, a]):
                    gap = float(nm64[b, a] - sb[a, d])
                    diff.append((s, "match", gap if not math.isnan(gap) else math.inf))
            rest = [a for a in order[b].tolist() if a not in merged]
            order[b] = torch.tensor(sorted(merged) + rest, dtype=order.dtype)
            for a, d in merged.items():
                node_idx[b, a] = d
        return order, node_idx

    with _steering(force), torch.no_grad():
        y = model(x)
    if step[0] != len(maps):
        raise ValueError(f"the module ran {step[0]} ToMe steps, the target's maps {len(maps)}")
    return y, out

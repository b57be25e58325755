"""ToMe's near-tie decisions, and PyTorch re-run with one of them flipped (issue 15 part 2b).

Only two choices of a ToMe step depend on how scores compare (compression/tome.py, "Tie rule"): which A
tokens rank among the best r (the rank boundary), and which B token each merged A token goes into (its
best match). When two scores there are within the precision's noise (Tolerance.score_atol) of each
other, another runtime may decide the other way; every later block then sees other tokens, so its merge
map legitimately differs from PyTorch's. Such a difference is explained only by evidence: `near_ties`
lists the decisions of one PyTorch run whose score gap is within score_atol, and `replay` re-runs the
same module with one of them flipped per image. A target is explained when its merge map equals one
replay's exactly (export/tome_parity.py then judges its tokens and sizes against that replay). Everything
else stays a failure.

The hook is tome.py's `_steer`, set only inside `near_ties` / `replay` (never while exporting).
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from . import tome

# Replays one image may take: each is a full PyTorch forward of the batch. A run with more near-ties than
# this is not "one value rounded the other way" but scores that barely separate anything (or a
# degenerate input); it fails naming the count instead of spending minutes on replays.
MAX_REPLAYS = 16


@dataclass(frozen=True)
class Decision:
    """One near-tie decision of one image in one ToMe step, and how to flip it.

    Attributes:
        step: the ToMe step in forward order (0 = the first block that merges).
        image: the image in the batch.
        kind: `rank` (A slot `keep` merged, `other` did not; flipped: `other` merges instead) or `match`
            (A slot `keep` went to B slot `chosen`; flipped: to B slot `other`, its second-best match).
        keep: A slot (input token 2·keep of that step).
        other: the A slot (rank) or B slot (match) the flipped decision takes.
        chosen: match: the B slot PyTorch chose (−1 for rank).
        gap: the score gap between the two choices in PyTorch's run (≥ 0; cosines).
    """

    step: int
    image: int
    kind: str
    keep: int
    other: int
    chosen: int
    gap: float

    def describe(self, block: int | None = None) -> str:
        where = f"block {block}" if block is not None else f"ToMe step {self.step}"
        if self.kind == "rank":
            what = (f"rank boundary: token {2 * self.other} merged instead of token {2 * self.keep} "
                    f"(node_max gap {self.gap:.3g})")
        else:
            what = (f"best match: token {2 * self.keep} merged into token {2 * self.other + 1} instead of "
                    f"{2 * self.chosen + 1} (score gap {self.gap:.3g})")
        return f"{where}, image {self.image}: {what}"


@dataclass
class NearTies:
    """What one PyTorch run decided within `score_atol`, per image.

    Attributes:
        decisions: image → its near-tie decisions, in forward order (rank first within a step).
        counts: image → how many there are (all of them, also beyond MAX_REPLAYS).
        nonfinite: image → the first step whose scores hold NaN (no decision of it can be judged).
        closest: image → the smallest decision gap seen (within score_atol or not), for the failure text.
    """

    decisions: dict[int, list[Decision]] = field(default_factory=dict)
    counts: dict[int, int] = field(default_factory=dict)
    nonfinite: dict[int, int] = field(default_factory=dict)
    closest: dict[int, float] = field(default_factory=dict)


def _within(gap: float, atol: float) -> bool:
    return gap <= atol  # NaN compares false: never a near-tie


@contextmanager
def _steering(fn):
    if tome._steer is not None:
        raise RuntimeError("ToMe replays do not nest")
    tome._steer = fn
    try:
        yield
    finally:
        tome._steer = None


def _second_best(scores: torch.Tensor, node_idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, |A|] the best score among the other B tokens, and which one."""
    masked = scores.scatter(-1, node_idx.unsqueeze(-1), float("-inf"))
    return masked.max(dim=-1)


def near_ties(model: torch.nn.Module, x: torch.Tensor, score_atol: float, limit: int = MAX_REPLAYS) -> NearTies:
    """Run `model` on `x` once and list, per image, the decisions within `score_atol` of flipping.

    Rank boundary: a merged A token i and an unmerged j with node_max[i] − node_max[j] ≤ score_atol.
    Best match: a merged A token whose best and second-best B scores differ by ≤ score_atol. Scores are
    read in float64 from the run's own float32 values; NaN makes a step's decisions unjudgeable.
    """
    out = NearTies()
    step = [0]

    def record(scores, node_max, node_idx, order, r):
        s64 = scores.detach().double()
        v = node_max.detach().double().gather(1, order)  # node_max in rank order
        second, second_idx = _second_best(s64, node_idx)
        best = s64.max(dim=-1).values
        for b in range(scores.shape[0]):
            if bool((torch.isnan(s64[b]) | torch.isposinf(s64[b])).any()):  # −inf: protected
                out.nonfinite.setdefault(b, step[0])
                continue
            found: list[Decision] = []
            vb = v[b]
            n = vb.shape[0]
            if 0 < r < n:
                # gap of every (merged position p, unmerged position q) pair; only the pairs near the boundary
                # can be within score_atol, since v is sorted.
                pairs = vb[:r].unsqueeze(1) - vb[r:].unsqueeze(0)  # [r, n − r]
                g = float(vb[r - 1] - vb[r])
                if math.isfinite(g):
                    out.closest[b] = min(out.closest.get(b, math.inf), g)
                for p, q in (pairs <= score_atol).nonzero().tolist():
                    found.append(Decision(step[0], b, "rank", int(order[b, p]), int(order[b, r + q]), -1,
                                          float(pairs[p, q])))
            for a in order[b, :r].tolist():
                g = float(best[b, a] - second[b, a])
                if math.isfinite(g):
                    out.closest[b] = min(out.closest.get(b, math.inf), g)
                if _within(g, score_atol):
                    found.append(Decision(step[0], b, "match", a, int(second_idx[b, a]), int(node_idx[b, a]), g))
            out.counts[b] = out.counts.get(b, 0) + len(found)
            kept = out.decisions.setdefault(b, [])
            kept += found[: max(0, limit + 1 - len(kept))]  # enough to know it is over the limit
        step[0] += 1
        return order, node_idx

    with _steering(record), torch.no_grad():
        model(x)
    return out


def replay(model: torch.nn.Module, x: torch.Tensor, flips: list[Decision]):
    """Run `model` on `x` with each decision in `flips` taken the other way (at most one per image: images
    are independent, so one forward replays one decision of several images). Returns the model's output."""
    by_step: dict[int, list[Decision]] = {}
    for d in flips:
        by_step.setdefault(d.step, []).append(d)
    step = [0]

    def flip(scores, node_max, node_idx, order, r):
        todo = by_step.get(step[0], [])
        step[0] += 1
        if not todo:
            return order, node_idx
        order, node_idx = order.clone(), node_idx.clone()
        for d in todo:
            if d.kind == "rank":
                row = order[d.image]
                p = int((row == d.keep).nonzero()[0, 0])
                q = int((row == d.other).nonzero()[0, 0])
                row[p], row[q] = d.other, d.keep
            else:
                node_idx[d.image, d.keep] = d.other
        return order, node_idx

    with _steering(flip), torch.no_grad():
        return model(x)

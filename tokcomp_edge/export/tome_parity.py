"""A ToMe merge map that differs from PyTorch's, judged by the score evidence (issue 15 part 2b).

A near-tie in ToMe's match scores (a gap within Tolerance.score_atol) is a genuine numerical tie: another
runtime may take the other side, and every later block then merges other tokens. Rather than require
identical maps, `explain_by_replay` re-runs the PyTorch module with one near-tie decision flipped per image
(compression/tome_replay.py) and returns, for the images whose map differs, that replay's outputs where
the target's merge map equals the replay's exactly; the caller then judges the target against those
outputs with the normal comparison (tokens and sizes within the same tolerance). An image whose map no
single replay reproduces, whose scores are not finite, or that has more near-ties than MAX_REPLAYS is
not explained; the notes say why. Only where the PyTorch module runs (export parity) can this be done.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..compression.tome_replay import MAX_REPLAYS, near_ties, replay
from ..core.tolerance import Tolerance


@dataclass
class ReplayVerdict:
    """What the replays showed for one batch.

    Attributes:
        expected: the outputs to judge the target against — PyTorch's own, with each explained image's
            rows taken from the replay that reproduced its merge map; None when some image is not explained.
        notes: one sentence per image whose map differs: the decision (block, kind, gap) that explains it,
            or why none does.
        replays: PyTorch forwards run with a flipped decision.
    """

    expected: dict[str, np.ndarray] | None
    notes: list[str] = field(default_factory=list)
    replays: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"explained": self.expected is not None, "replays": self.replays, "notes": list(self.notes)}


def _merging_blocks(model) -> list[int] | None:
    """Tower block index of each ToMe step (the plan's schedule, blocks with r > 0), when the module has one."""
    for m in model.modules():
        schedule = getattr(getattr(m, "plan", None), "schedule", None)
        if schedule:
            return [i for i, r in enumerate(schedule) if r]
    return None


def _named(y, names: list[str]) -> dict[str, np.ndarray]:
    ys = y if isinstance(y, tuple) else (y,)
    return {n: t.detach().cpu().numpy() for n, t in zip(names, ys)}


def explain_by_replay(model, x: np.ndarray, expected: dict[str, np.ndarray], got: dict[str, np.ndarray],
                      names: list[str], merge_map: str, tol: Tolerance, limit: int = MAX_REPLAYS) -> ReplayVerdict:
    """Explain the target's differing merge maps by replays of PyTorch's near-tie decisions.

    Args:
        model: the PyTorch module `expected` came from (same process, same input: its first run
            reproduces `expected` exactly).
        x: the batch's input (float32 NCHW).
        expected, got: PyTorch's and the target's outputs by name.
        names: the module's output names, in its output order.
        merge_map: the merge-map output's name.
        tol: the merge map's Tolerance; its score_atol is the near-tie bound (None: nothing is explained).
        limit: most near-ties (replays) per image.
    Returns:
        ReplayVerdict (`expected` None when any differing image stays unexplained).
    """
    import torch

    em, am = np.asarray(expected[merge_map]), np.asarray(got[merge_map])
    if am.shape != em.shape:
        return ReplayVerdict(None, [f"merge map shape {am.shape} is not PyTorch's {em.shape}: nothing to replay"])
    differ = [b for b in range(em.shape[0]) if not np.array_equal(am[b], em[b])]
    if not differ:
        return ReplayVerdict(None)
    atol = tol.score_atol
    if atol is None:
        return ReplayVerdict(None, ["score_atol is not set, so no merge decision counts as a near-tie"])
    blocks = _merging_blocks(model)
    param = next(model.parameters(), None)  # validate's PyTorch runner may hold the module on CUDA
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    xt = xt.to(param.device) if param is not None else xt
    ties = near_ties(model, xt, atol, limit)
    notes, todo = [], {}
    for b in differ:
        moved = int((am[b] != em[b]).sum())
        head = f"image {b} ({moved} patches in other rows)"
        if b in ties.nonfinite:
            step = ties.nonfinite[b]
            where = f"block {blocks[step]}" if blocks and step < len(blocks) else f"ToMe step {step}"
            notes.append(f"{head}: PyTorch's match scores are not finite in {where}, so no decision can be judged")
        elif ties.counts.get(b, 0) > limit:
            notes.append(f"{head}: {ties.counts[b]} decisions within score_atol {atol:g} > {limit} replays allowed")
        elif not ties.counts.get(b, 0):
            notes.append(f"{head}: no merge decision was within score_atol {atol:g} of flipping "
                         f"(closest gap {ties.closest.get(b, float('nan')):.3g})")
        else:
            todo[b] = sorted(ties.decisions[b], key=lambda d: d.gap)  # the closest call first
    if len(todo) < len(differ):
        return ReplayVerdict(None, notes)
    composite = {n: np.array(v, copy=True) for n, v in expected.items()}
    found: dict[int, Any] = {}
    replays = 0
    for j in range(max(len(d) for d in todo.values())):
        flips = [todo[b][j] for b in todo if b not in found and j < len(todo[b])]
        if not flips:
            break
        ys = _named(replay(model, xt, flips), names)
        replays += 1
        for d in flips:
            if np.array_equal(ys[merge_map][d.image], am[d.image]):
                found[d.image] = d
                for n in composite:
                    composite[n][d.image] = ys[n][d.image]
    for b in differ:
        d = found.get(b)
        block = blocks[d.step] if d is not None and blocks and d.step < len(blocks) else None
        notes.append(f"explained: {d.describe(block)} ≤ score_atol {atol:g}; the target's merge map equals "
                     "PyTorch's with that decision flipped" if d is not None else
                     f"image {b} ({int((am[b] != em[b]).sum())} patches in other rows): none of its "
                     f"{len(todo[b])} near-tie decisions, flipped one at a time, gives the target's merge map")
    return ReplayVerdict(composite if len(found) == len(differ) else None, notes, replays)


def _prefix_tokens(model) -> int:
    from ..encoders.tower import VisionTower

    tower = next((m for m in model.modules() if isinstance(m, VisionTower)), None)
    return int(tower.spec.prefix_tokens) if tower is not None else 0


def explain_by_forcing(model, x: np.ndarray, expected: dict[str, np.ndarray], got: dict[str, np.ndarray],
                       maps: list[np.ndarray], names: list[str], merge_map: str, tol: Tolerance) -> ReplayVerdict:
    """Explain the target's merge maps by forcing PyTorch to take its decisions (compression/tome_forced.py).

    For a target that sits within its precision's noise of many decisions (fp16), where one flipped decision
    (`explain_by_replay`) cannot reproduce several: PyTorch re-runs taking, step by step, the decisions the
    target's per-step patch → row maps show, and every decision where they differ from PyTorch's own on the
    same tokens must be a near-tie in PyTorch's scores (gap ≤ tol.score_atol). The verdict's `expected` is
    the forced run's outputs (the caller judges the target against them within `tol`: exact up to rounding
    for the target's own map), or None when an image's maps are invalid, PyTorch's scores are not finite,
    or a differing decision is not a near-tie; the notes say which, per differing image.

    Args:
        model: the fp32 PyTorch module; x: the batch (float32 NCHW).
        expected: PyTorch's own outputs (to say which images differ); got: the target's outputs.
        maps: the target's patch → row map after each ToMe step (the block taps of the merging blocks).
        names: the module's output names in its output order; merge_map: the merge map's name.
        tol: the merge map's Tolerance (score_atol None: nothing is explained).
    """
    import torch

    from ..compression.tome_forced import forced_run

    em, am = np.asarray(expected[merge_map]), np.asarray(got[merge_map])
    if am.shape != em.shape:
        return ReplayVerdict(None, [f"merge map shape {am.shape} is not PyTorch's {em.shape}: nothing to force"])
    atol = tol.score_atol
    if atol is None:
        return ReplayVerdict(None, ["score_atol is not set, so no merge decision counts as a near-tie"])
    blocks = _merging_blocks(model)
    if blocks is not None and len(blocks) != len(maps):
        return ReplayVerdict(None, [f"{len(maps)} per-block maps for the module's {len(blocks)} ToMe steps"])
    if not maps or not np.array_equal(np.asarray(maps[-1]), am):
        return ReplayVerdict(None, ["the target's last per-block map is not its merge_map output"])
    param = next(model.parameters(), None)
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    xt = xt.to(param.device) if param is not None else xt
    y, forced = forced_run(model, xt, [np.asarray(m) for m in maps], _prefix_tokens(model))
    ys = _named(y, names)
    notes = []
    for b in range(em.shape[0]):
        if np.array_equal(am[b], em[b]) and b not in forced.invalid and not forced.differing.get(b):
            continue
        head = f"image {b} ({int((am[b] != em[b]).sum())} patches in other rows)"
        if b in forced.invalid:
            notes.append(f"{head}: its per-block maps are no ToMe step PyTorch can take: {forced.invalid[b]}")
            continue
        if b in forced.nonfinite:
            s = forced.nonfinite[b]
            where = f"block {blocks[s]}" if blocks and s < len(blocks) else f"ToMe step {s}"
            notes.append(f"{head}: PyTorch's match scores are not finite in {where}, so no decision can be judged")
            continue
        diff = forced.differing.get(b, [])
        far = [(s, k, g) for s, k, g in diff if not g <= atol]
        shown = far or sorted(diff, key=lambda d: -d[2])
        what = ", ".join(f"{'block ' + str(blocks[s]) if blocks and s < len(blocks) else 'step ' + str(s)} "
                         f"{'rank boundary' if k == 'rank' else 'best match'} gap {g:.3g}" for s, k, g in shown[:3])
        more = f" and {len(shown) - 3} more" if len(shown) > 3 else ""
        if far:
            notes.append(f"{head}: PyTorch forced to the target's decisions: {len(diff)} differ from its own on the "
                         f"same tokens, {len(far)} of them not near-ties (> score_atol {atol:g}): {what}{more}")
        else:
            notes.append(f"explained: {head}: PyTorch forced to the target's decisions: {len(diff)} differ from its "
                         f"own on the same tokens, all near-ties ≤ score_atol {atol:g} ({what}{more})")
    ok = all(forced.explained(b, atol) for b in range(em.shape[0]))
    if ok and not np.array_equal(ys[merge_map], am):  # the forcing did not take: never judge against it
        return ReplayVerdict(None, notes + ["PyTorch forced to the target's decisions did not reproduce its merge map"], 1)
    return ReplayVerdict(ys if ok else None, notes, 1)

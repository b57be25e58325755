"""The candidates of a sweep: the user's `--candidates` list, or a default grid per family.

Every candidate is planned on the VLM with vlm/plan.py's plan_vlm — the same arithmetic the export uses —
so its token count is the one the exported bundle would have. A combination the family refuses (plan_vlm's
SpecError) stays in the list as refused, with the reason; a spec that does not parse is bad input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..compression.spec import parse_spec
from ..errors import SpecError

if TYPE_CHECKING:  # pragma: no cover
    from ..vlm.plan import VlmPlan
    from ..vlm.spec import VlmSpec

# Fractions of the VLM's own tokens per tile that the default grid aims at.
DEFAULT_BUDGETS = (1 / 4, 1 / 8)


@dataclass(frozen=True)
class Candidate:
    """One compression to measure.

    Attributes:
        spec: the canonical spec text (`pool:2`, `prune:16:cls-attn`).
        tokens: tokens per tile the LLM reads with it (None when refused).
        plan: the VlmPlan (None when refused).
        refused: why the family refuses it (None when it runs).
    """

    spec: str
    tokens: int | None
    plan: VlmPlan | None = None
    refused: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"spec": self.spec, "tokens": self.tokens, "refused": self.refused}
        if self.plan is not None:
            d["arithmetic"] = self.plan.arithmetic
        return d


def plan_candidate(vlm: VlmSpec, text: str) -> Candidate:
    """Parse `text` (SpecError on a typo, naming it) and plan it on `vlm` (a refusal is kept, not raised)."""
    from ..vlm.plan import plan_vlm

    try:
        spec = parse_spec(text)
    except SpecError as exc:
        raise SpecError(f"--candidates: {exc.message}", exc.hint) from exc
    try:
        plan = plan_vlm(vlm, spec, None)
    except SpecError as exc:
        return Candidate(spec=spec.text, tokens=None, refused=exc.one_line())
    return Candidate(spec=spec.text, tokens=plan.tokens_out, plan=plan)


def parse_candidates(text: str, vlm: VlmSpec) -> list[Candidate]:
    """`--candidates "none,pool:2,prune:16:cls-attn"` → candidates, `none` first (added when missing).

    ToMe schedules hold commas (`tome:8,4`): an item that is only digits continues the previous one.
    """
    items: list[str] = []
    for raw in (text or "").split(","):
        item = raw.strip()
        if not item:
            continue
        if item.isdigit() and items and items[-1].lower().startswith("tome:"):
            items[-1] += "," + item
        else:
            items.append(item)
    if not items:
        raise SpecError(f"--candidates {text!r} names no compression", "use e.g. --candidates \"none,pool:2\"")
    return _unique([plan_candidate(vlm, "none")] + [plan_candidate(vlm, t) for t in items])


def _unique(cands: list[Candidate]) -> list[Candidate]:
    seen, out = set(), []
    for c in cands:
        if c.spec not in seen:
            seen.add(c.spec)
            out.append(c)
    return out


def grid_specs(vlm: VlmSpec, budgets: tuple[float, ...] = DEFAULT_BUDGETS) -> list[str]:
    """The default grid: every method at each budget (a fraction of the VLM's own tokens per tile).

    pool:S and bilinear:H×W at the nearest grid, prune with each score, visionzip with about 1/6 contextual
    tokens (the paper's 54 + 10 at 64), tome:R with R·(blocks run) ≈ the tokens to remove, and unshuffle:2,
    which every family with a fixed projector width refuses (listed so the refusal is visible).
    """
    from ..encoders.tower import resolve_layer

    tower = vlm.tower
    h, w = tower.grid
    native = h * w
    layers = resolve_layer(vlm.tower_layer, tower.num_layers)
    specs = ["none"]
    for frac in budgets:
        k = max(1, round(native * frac))
        side = max(1, round(math.sqrt(frac) * min(h, w)))
        specs.append(f"pool:{max(2, round(1 / math.sqrt(frac)))}")
        specs.append(f"bilinear:{side}x{max(1, round(side * w / h))}")
        specs += [f"prune:{k}:{score}" for score in ("norm", "cls-attn", "cls-sim")]
        ctx = max(1, round(k / 6.4))
        if k - ctx >= 1:
            specs.append(f"visionzip:{k - ctx}:{ctx}")
        if layers:
            specs.append(tome_spec(native, native - k, layers, tower.prefix_tokens))
    specs.append("unshuffle:2")
    return specs


def tome_spec(native: int, remove: int, layers: int, protected: int) -> str:
    """`tome:R` removing ≈ `remove` tokens over `layers` blocks, or, when a constant R would merge more than
    half of a block's unprotected tokens (ToMe's bipartite limit), a front-loaded schedule `tome:R1,R2,…`."""
    r = max(1, math.ceil(remove / layers))
    n, ok = native, True
    for _ in range(layers):
        ok = ok and r <= n // 2
        n -= r
    if ok:
        return f"tome:{r}"
    sched, n, left = [], native, remove
    for _ in range(layers):
        step = min(left, n // 2)
        sched.append(step)
        n, left = n - step, left - step
    return "tome:" + ",".join(map(str, sched))


def candidate_grid(vlm: VlmSpec, budgets: tuple[float, ...] = DEFAULT_BUDGETS) -> list[Candidate]:
    """The default grid planned on `vlm` (refused ones kept with their reason)."""
    return _unique([plan_candidate(vlm, t) for t in grid_specs(vlm, budgets)])

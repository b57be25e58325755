"""The decision: the Pareto fronts and the pick under one constraint.

Works on plain score rows (dicts with `spec`, `tokens`, `latency_ms`, `top1`, `top1_lo`, `kl`, `match`), so
the chooser can be tested on synthetic tables and re-run on a sweep.json.

Ties are broken deterministically, always in this order after the constraint's own objective:
higher top1, fewer tokens, lower kl, higher match, lower latency, then the spec text (alphabetical).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from ..errors import CheckFailed, InputError


class NoFeasibleCandidate(CheckFailed):
    """No measured candidate meets the constraint (exit 1: a result, not bad input); names the closest."""

    def __init__(self, message: str, hint: str | None = None, closest: str | None = None):
        super().__init__(message, hint)
        self.closest = closest


@dataclass(frozen=True)
class Constraint:
    """What the pick must satisfy; exactly one of the three (or none: no pick, the fronts only).

    Attributes:
        tokens: at most this many tokens per tile; the best top1 among them.
        max_ms: at most this vision-path latency (median, ms); the best top1 among them.
        min_agreement: the top1 interval's lower bound at least this; the fewest tokens among them.
    """

    tokens: int | None = None
    max_ms: float | None = None
    min_agreement: float | None = None

    def __post_init__(self):
        given = [n for n, v in (("--tokens", self.tokens), ("--max-ms", self.max_ms),
                                ("--min-agreement", self.min_agreement)) if v is not None]
        if len(given) > 1:
            raise InputError(f"{' and '.join(given)} were both given; the pick follows one constraint",
                             "give one of --tokens, --max-ms, --min-agreement")
        if self.tokens is not None and (isinstance(self.tokens, bool) or int(self.tokens) != self.tokens
                                        or self.tokens < 1):
            raise InputError(f"--tokens {self.tokens} is not a token budget", "give an integer ≥ 1, e.g. --tokens 64")
        if self.max_ms is not None and not (math.isfinite(self.max_ms) and self.max_ms > 0):
            raise InputError(f"--max-ms {self.max_ms} is not a latency", "give milliseconds > 0, e.g. --max-ms 20")
        if self.min_agreement is not None and not (math.isfinite(self.min_agreement) and self.min_agreement >= 0):
            raise InputError(f"--min-agreement {self.min_agreement} is not a share",
                             "give a top-1 agreement between 0 and 1, e.g. --min-agreement 0.95")

    @property
    def kind(self) -> str | None:
        for name in ("tokens", "max_ms", "min_agreement"):
            if getattr(self, name) is not None:
                return name
        return None

    def describe(self) -> str:
        if self.kind == "tokens":
            return f"best top1 with ≤ {self.tokens} tokens per tile"
        if self.kind == "max_ms":
            return f"best top1 within {self.max_ms:g} ms"
        if self.kind == "min_agreement":
            return f"fewest tokens with top1 lower bound ≥ {self.min_agreement:g}"
        return "no constraint (fronts only)"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "kind": self.kind, "rule": self.describe()}


def _lat(r: dict) -> float:
    v = r.get("latency_ms")
    return math.inf if v is None else float(v)


def tie_key(r: dict) -> tuple:
    """The module docstring's order: higher top1, fewer tokens, lower kl, higher match, lower latency, spec."""
    return (-r["top1"], r["tokens"], r["kl"], -r["match"], _lat(r), r["spec"])


def pareto_front(rows: list[dict], x: str = "tokens") -> list[str]:
    """Specs not dominated in (x lower, top1 higher), sorted by x; x is `tokens` or `latency_ms`.

    A row dominates another when it is at least as good on both and better on one; rows without x (no
    latency measured) are left out. Equal rows are both kept.
    """
    pts = [r for r in rows if r.get(x) is not None]
    front = [r for r in pts if not any(
        o[x] <= r[x] and o["top1"] >= r["top1"] and (o[x] < r[x] or o["top1"] > r["top1"]) for o in pts)]
    return [r["spec"] for r in sorted(front, key=lambda r: (r[x], tie_key(r)))]


def choose(rows: list[dict], c: Constraint) -> dict | None:
    """The pick under `c` (None without a constraint).

    Raises:
        InputError: --max-ms without measured latency.
        NoFeasibleCandidate (exit 1): no row meets `c`; the message names the closest one.
    """
    if c.kind is None or not rows:
        return None
    if c.kind == "tokens":
        ok = [r for r in rows if r["tokens"] <= c.tokens]
        if ok:
            return min(ok, key=tie_key)
        near = min(rows, key=lambda r: (r["tokens"], tie_key(r)))
        raise NoFeasibleCandidate(
            f"no candidate reads ≤ {c.tokens} tokens per tile; the closest is {near['spec']} with {near['tokens']} "
            f"(top1 {near['top1']:.3f})", f"raise --tokens to {near['tokens']} or add a stronger compression to "
            "--candidates", near["spec"])
    if c.kind == "max_ms":
        if any(r.get("latency_ms") is None for r in rows):
            raise InputError("--max-ms needs the vision-path latency, which this sweep did not measure",
                             "drop --latency none, or use --tokens")
        ok = [r for r in rows if r["latency_ms"] <= c.max_ms]
        if ok:
            return min(ok, key=tie_key)
        near = min(rows, key=lambda r: (r["latency_ms"], tie_key(r)))
        raise NoFeasibleCandidate(
            f"no candidate runs within {c.max_ms:g} ms; the closest is {near['spec']} at {near['latency_ms']:.3g} ms "
            f"(top1 {near['top1']:.3f})", f"raise --max-ms to {math.ceil(near['latency_ms'] * 100) / 100:g}",
            near["spec"])
    ok = [r for r in rows if r["top1_lo"] >= c.min_agreement]
    if ok:
        return min(ok, key=lambda r: (r["tokens"],) + tie_key(r))
    near = min(rows, key=lambda r: (-r["top1_lo"],) + tie_key(r))
    raise NoFeasibleCandidate(
        f"no candidate keeps top1 ≥ {c.min_agreement:g} (the 95 % interval's lower bound); the closest is "
        f"{near['spec']} with lower bound {near['top1_lo']:.3f} (top1 {near['top1']:.3f}, {near['tokens']} tokens)",
        "lower --min-agreement, add more pairs (a narrower interval), or add milder compressions to --candidates",
        near["spec"])

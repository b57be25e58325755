"""Fidelity of a candidate against the VLM's own uncompressed path, on (image, prompt) pairs.

Reference: the uncompressed features (the `none` vision path, the module the export traces) → greedy
answer of up to K tokens (an eos ends it and counts as a position). Candidate: its own features, spliced
with its own placeholder count, teacher-forced on the reference answer:

- top1  = Σ positions where argmax p_cand = the reference token / Σ positions (pooled over pairs);
- kl    = Σ KL(p_ref ‖ p_cand) / Σ positions (nats, float64 from the logits);
- match = share of pairs where every position agrees — exactly the pairs whose own greedy answer equals the
  reference (while the answers agree, the candidate's greedy decode feeds the very tokens the teacher-forced
  pass feeds, so its logits are the same computation; a test checks it against a real greedy decode).

Intervals: 95 % percentile bootstrap over pairs (seeded), the pooled statistics recomputed per resample.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

BOOTSTRAP = 1000


@dataclass(frozen=True)
class Pair:
    """One (image, prompt) pair; `index` is its place in the sweep, image/prompt the sources' indices."""

    index: int
    image_index: int
    image: str
    prompt_index: int
    prompt: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class PairScore:
    """One candidate on one pair: answer positions, how many agree, Σ KL, and whether all agree."""

    positions: int
    agree: int
    kl_sum: float
    argmax: list[int]
    answer: list[int] | None = None  # the candidate's own greedy answer (SweepConfig.answers)
    image_tokens: int | None = None  # image tokens the LLM read for this pair (all tiles, newlines, packing)
    tiles: int | None = None  # tiles the image became (the runtime's tiling)

    @property
    def match(self) -> bool:
        return self.agree == self.positions

    def to_dict(self) -> dict[str, Any]:
        d = {"positions": self.positions, "agree": self.agree, "kl_sum": self.kl_sum, "match": self.match}
        if self.answer is not None:
            d["answer"] = self.answer
        if self.image_tokens is not None:
            d.update(image_tokens=self.image_tokens, tiles=self.tiles)
        return d


def log_probs(logits):
    """log softmax in float64 (KL of near-equal distributions needs the precision)."""
    import torch

    return torch.log_softmax(logits.double(), dim=-1)


def score(ref_tokens: list[int], ref_logp, cand_logits) -> PairScore:
    """Compare a candidate's teacher-forced logits [n, V] with the reference's log-probs [n, V]."""
    import torch

    logp = log_probs(cand_logits)
    arg = torch.argmax(cand_logits, dim=-1).tolist()
    kl = (ref_logp.exp() * (ref_logp - logp)).sum(dim=-1)
    agree = sum(int(a == t) for a, t in zip(arg, ref_tokens, strict=True))
    return PairScore(positions=len(ref_tokens), agree=agree, kl_sum=float(kl.sum()), argmax=arg)


def features(path, pixel_values):
    """The vision path's tokens for one tile [1, 3, H, W] → [T, D] (the first output; a whole image's tiles,
    packing and layout: images.py)."""
    import torch

    with torch.no_grad():
        out = path(pixel_values)
    x = out[0] if isinstance(out, tuple) else out
    return x[0]


def summarise(scores: list[PairScore], seed: int = 0, resamples: int = BOOTSTRAP) -> dict[str, Any]:
    """Pooled top1 / kl / match with 95 % bootstrap intervals over pairs."""
    pos = np.array([s.positions for s in scores], float)
    agree = np.array([s.agree for s in scores], float)
    kl = np.array([s.kl_sum for s in scores], float)
    match = np.array([s.match for s in scores], float)
    if not len(pos):
        raise ValueError("no pairs scored")
    top1, kl_mean, match_mean = agree.sum() / pos.sum(), kl.sum() / pos.sum(), match.mean()
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(pos), size=(resamples, len(pos)))
    p = pos[idx].sum(1)
    t_b, k_b, m_b = agree[idx].sum(1) / p, kl[idx].sum(1) / p, match[idx].mean(1)

    def ci(v, point):
        lo, hi = np.percentile(v, [2.5, 97.5])
        # A resampled statistic of identical values is the value itself; keep the point inside its interval.
        return [float(min(lo, point)), float(max(hi, point))]

    return {"top1": float(top1), "top1_ci": ci(t_b, top1), "kl": float(kl_mean), "kl_ci": ci(k_b, kl_mean),
            "match": float(match_mean), "match_ci": ci(m_b, match_mean), "pairs": len(pos),
            "positions": int(pos.sum()), "bootstrap": {"resamples": resamples, "seed": seed, "level": 0.95}}


def per_prompt(scores: list[PairScore], pairs: list[Pair]) -> list[dict[str, Any]]:
    """top1 / kl / match per prompt, pooled over that prompt's images."""
    out = []
    for pi in sorted({p.prompt_index for p in pairs}):
        sel = [s for s, p in zip(scores, pairs, strict=True) if p.prompt_index == pi]
        n = sum(s.positions for s in sel)
        out.append({"prompt_index": pi, "prompt": next(p.prompt for p in pairs if p.prompt_index == pi),
                    "pairs": len(sel), "top1": sum(s.agree for s in sel) / n, "kl": sum(s.kl_sum for s in sel) / n,
                    "match": sum(s.match for s in sel) / len(sel)})
    return out

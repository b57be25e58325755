"""A chosen tile: the sizes a VLM's processor can produce for one tile, checked before any model is built.

Qwen-VL and LFM2-VL take any H×W whose sides are multiples of a step (patch × merge/downsample factor)
and whose token count after the merge lies in the processor's limits; the user picks one with
--image-size. A size outside them exits 2 naming the nearest sizes that fit.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InputError


@dataclass(frozen=True)
class TileRule:
    """Sides a multiple of `step`, (H/step)·(W/step) tokens in [min_tokens, max_tokens].

    Attributes:
        step: pixels per merged token side (patch × merge factor).
        min_tokens, max_tokens: the processor's limits, in merged tokens.
        default: the square side used without --image-size.
        step_why: what `step` is, for the message (`patch × downsample_factor`).
        limits_why: where the limits come from (`min/max_image_tokens`).
    """

    step: int
    min_tokens: int
    max_tokens: int
    default: int
    step_why: str
    limits_why: str

    def fits(self, h: int, w: int) -> bool:
        return (h > 0 and w > 0 and not h % self.step and not w % self.step
                and self.min_tokens <= (h // self.step) * (w // self.step) <= self.max_tokens)

    def nearest(self, h: int, w: int) -> list[str]:
        """Up to three valid sizes nearest to h×w (squares first when h×w is square)."""
        s = self.step
        # Sides beyond what max_tokens allows for a 1-token-wide other side cannot fit; cap the search.
        most = min(self.max_tokens, max(h, w) // s + 64)
        cands = [(a * s, b * s) for a in range(1, most + 1) for b in range(1, most + 1)
                 if self.min_tokens <= a * b <= self.max_tokens]
        cands.sort(key=lambda c: ((c[0] != c[1]) if h == w else 0, abs(c[0] - h) + abs(c[1] - w), c))
        return [str(a) if a == b else f"{a}x{b}" for a, b in cands[:3]]


def choose_tile(name: str, rule: TileRule, image_size: tuple[int, int] | None) -> tuple[int, int]:
    """The (H, W) to export: the user's --image-size when the processor could produce it, else exit 2.

    Raises:
        InputError: a size that is not a multiple of the step or gives too few/many tokens; the message
            names the nearest valid sizes.
    """
    h, w = (rule.default, rule.default) if image_size is None else (int(image_size[0]), int(image_size[1]))
    if rule.fits(h, w):
        return h, w
    asked = str(h) if h == w else f"{h}x{w}"
    why = (f"a side is not a multiple of {rule.step} ({rule.step_why})" if h % rule.step or w % rule.step
           else f"it gives {(h // rule.step) * (w // rule.step)} tokens, outside the processor's "
                f"{rule.min_tokens}..{rule.max_tokens} ({rule.limits_why})")
    raise InputError(f"--image-size {asked} cannot be a tile of {name}: {why}",
                     f"nearest valid sizes: {', '.join(rule.nearest(h, w))}")

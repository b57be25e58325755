"""LFM2-VL's tile: which --image-size its processor can produce, and the default one.

Lfm2VlImageProcessor.smart_resize makes every side a multiple of encoder_patch_size × downsample_factor
(16 × 2 = 32) and keeps the tokens after the unshuffle, (H/32)·(W/32), within [min_image_tokens,
max_image_tokens] (64..256: 256 px to 512 px for a square); larger images are split into tile_size (512)
tiles. So a tile is any H×W of that kind, and 512×512 (the processor's tile_size) is the default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import InputError

# Lfm2VlImageProcessor's class defaults (transformers 5), used where the folder's processor config is silent.
DEFAULTS = {"encoder_patch_size": 16, "downsample_factor": 2, "min_image_tokens": 64, "max_image_tokens": 256,
            "tile_size": 512, "do_image_splitting": True, "max_tiles": 10, "use_thumbnail": True}


@dataclass(frozen=True)
class Lfm2Tiling:
    """The processor's limits on one tile: sides a multiple of `step`, tokens in [min_tokens, max_tokens]."""

    step: int
    min_tokens: int
    max_tokens: int
    default: int

    def fits(self, h: int, w: int) -> bool:
        return (h > 0 and w > 0 and not h % self.step and not w % self.step
                and self.min_tokens <= (h // self.step) * (w // self.step) <= self.max_tokens)

    def nearest(self, h: int, w: int) -> list[str]:
        """Up to three valid sizes nearest to h×w (squares first when h×w is square)."""
        s, most = self.step, self.max_tokens
        cands = [(a * s, b * s) for a in range(1, most + 1) for b in range(1, most // a + 1)
                 if self.fits(a * s, b * s)]
        cands.sort(key=lambda c: ((c[0] != c[1]) if h == w else 0, abs(c[0] - h) + abs(c[1] - w), c))
        return [str(a) if a == b else f"{a}x{b}" for a, b in cands[:3]]


def lfm2_tiling(preprocessor: dict[str, Any], cfg: dict[str, Any], patch: int, factor: int) -> Lfm2Tiling:
    """The limits from the folder's processor settings, then config.json (older LFM2-VL configs carry them)."""
    def get(key: str) -> int:
        return int(preprocessor.get(key, cfg.get(key, DEFAULTS[key])))

    return Lfm2Tiling(step=patch * factor, min_tokens=get("min_image_tokens"), max_tokens=get("max_image_tokens"),
                      default=get("tile_size"))


def lfm2_tile(name: str, tiling: Lfm2Tiling, image_size: tuple[int, int] | None) -> tuple[int, int]:
    """The (H, W) to export: the user's --image-size when the processor could produce it, else exit 2.

    Raises:
        InputError: a size that is not a multiple of the step or gives too few/many tokens; the message
            names the nearest valid sizes.
    """
    h, w = (tiling.default, tiling.default) if image_size is None else (int(image_size[0]), int(image_size[1]))
    if tiling.fits(h, w):
        return h, w
    asked = str(h) if h == w else f"{h}x{w}"
    why = (f"a side is not a multiple of {tiling.step} (patch × downsample_factor)" if h % tiling.step or w % tiling.step
           else f"it gives {(h // tiling.step) * (w // tiling.step)} tokens, outside the processor's "
                f"{tiling.min_tokens}..{tiling.max_tokens} (min/max_image_tokens)")
    raise InputError(f"--image-size {asked} cannot be a tile of {name}: {why}",
                     f"nearest valid sizes: {', '.join(tiling.nearest(h, w))}")

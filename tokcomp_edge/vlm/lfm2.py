"""LFM2-VL's tile: which --image-size its processor can produce, and the default one.

Lfm2VlImageProcessor.smart_resize makes every side a multiple of encoder_patch_size × downsample_factor
(16 × 2 = 32) and keeps the tokens after the unshuffle, (H/32)·(W/32), within [min_image_tokens,
max_image_tokens] (64..256: 256 px to 512 px for a square); larger images are split into tile_size (512)
tiles. So a tile is any H×W of that kind, and 512×512 (the processor's tile_size) is the default.
"""

from __future__ import annotations

from typing import Any

from .tile_rule import TileRule

# Lfm2VlImageProcessor's class defaults (transformers 5), used where the folder's processor config is silent.
DEFAULTS = {"encoder_patch_size": 16, "downsample_factor": 2, "min_image_tokens": 64, "max_image_tokens": 256,
            "tile_size": 512, "do_image_splitting": True, "max_tiles": 10, "use_thumbnail": True}


def lfm2_tiling(preprocessor: dict[str, Any], cfg: dict[str, Any], patch: int, factor: int) -> TileRule:
    """The limits from the folder's processor settings, then config.json (older LFM2-VL configs carry them)."""
    def get(key: str) -> int:
        return int(preprocessor.get(key, cfg.get(key, DEFAULTS[key])))

    return TileRule(step=patch * factor, min_tokens=get("min_image_tokens"), max_tokens=get("max_image_tokens"),
                    default=get("tile_size"), step_why="patch × downsample_factor",
                    limits_why="min/max_image_tokens")

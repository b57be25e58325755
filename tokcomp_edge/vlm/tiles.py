"""How many tiles one request can produce: the rows of the batch axis a VLM's vision path must accept.

The processor decides it, so the count is computed from the folder's image-processor settings (VlmSpec
.preprocessor), with the defaults of transformers 5's own processor classes where a key is absent:

| family | transformers rule | default |
|---|---|---|
| internvl | InternVLProcessor: `crop_to_patches` (True) → up to `max_patches` (GotOcr2ImageProcessor: 12) tiles, + one thumbnail when there is more than one | 13 |
| idefics3, smolvlm | `do_image_splitting` (True): the longest edge resized to `size.longest_edge`, cut into `max_image_size` squares, + one global view | (⌈1456 / 364⌉)² + 1 = 17 |
| llava_onevision | anyres: the best of `image_grid_pinpoints` (up to 2304×2304) cut into `size` (384) crops, + the resized image | 6 × 6 + 1 = 37 |
| gemma3 | Gemma3Processor: `do_pan_and_scan` (False); when on, up to `pan_and_scan_max_num_crops` (4) crops + the image | 1 |
| lfm2_vl | Lfm2VlImageProcessor: `do_image_splitting` (True): an image too large for one tile is cut into up to `max_tiles` (10) tiles of `tile_size`, + a thumbnail when `use_thumbnail` (True) | 10 + 1 = 11 |
| llava, paligemma | one tile per image | 1 |
| qwen2_vl, qwen2_5_vl, qwen3_vl, qwen3_5 | the processor resizes each image to one grid (smart_resize), no tiling; a static-tile bundle takes it resized to its tile | 1 |

LLaVA-OneVision's `anyres_max_9` (vision_aspect_ratio) shrinks the *features* of many crops after the tower
(pack_image_features); the tower still runs every crop, so it does not bound the batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .spec import VlmSpec

# transformers 5 class defaults (image_processing_*.py class attributes, processing_*.py `_defaults`).
_INTERNVL_MAX_PATCHES = 12
_SPLIT_SIZES = {"idefics3": (4 * 364, 364), "smolvlm": (4 * 364, 364)}  # size.longest_edge, max_image_size
_ONEVISION_CROP = 384
_ONEVISION_PINPOINTS = [[h, w] for h in range(384, 2305, 384) for w in range(384, 2305, 384)]
_GEMMA3_MAX_CROPS = 4


@dataclass(frozen=True)
class TileCount:
    """Tiles one image request can produce, and the processor rule that says so (for the manifest)."""

    count: int
    rule: str

    def to_dict(self) -> dict[str, Any]:
        return {"tiles_per_request": self.count, "tiles_rule": self.rule}


def _edge(value: Any, default: int) -> int:
    """`{"longest_edge": N}`, `{"height": N, …}` or an int, as transformers' size fields are written."""
    if isinstance(value, dict):
        return int(value.get("longest_edge") or value.get("height") or default)
    if isinstance(value, int):
        return value
    return default


def tiles_per_request(vlm: VlmSpec) -> TileCount:
    """The most tiles the VLM's processor cuts from one image (see the module docstring's table)."""
    pre, fam = vlm.preprocessor, vlm.family.model_type
    where = "preprocessor settings" if pre else "transformers' defaults"
    if fam == "internvl":
        n = int(pre.get("max_patches", _INTERNVL_MAX_PATCHES))
        if not pre.get("crop_to_patches", True) or n <= 1:
            return TileCount(1, f"crop_to_patches off ({where}): one tile per image")
        return TileCount(n + 1, f"crop_to_patches: up to max_patches {n} tiles + a thumbnail ({where})")
    if fam in _SPLIT_SIZES:
        longest, tile = _SPLIT_SIZES[fam]
        if not pre.get("do_image_splitting", True):
            return TileCount(1, f"do_image_splitting off ({where}): one tile per image")
        longest, tile = _edge(pre.get("size"), longest), _edge(pre.get("max_image_size"), tile)
        side = math.ceil(longest / tile)
        return TileCount(side * side + 1, f"do_image_splitting: longest edge {longest} in {tile} px tiles "
                                          f"({side}×{side}) + a global view ({where})")
    if fam == "llava_onevision":
        crop = _edge(pre.get("crop_size"), 0) or _edge(pre.get("size"), _ONEVISION_CROP)
        pins = pre.get("image_grid_pinpoints") or _ONEVISION_PINPOINTS
        most = max(math.ceil(int(h) / crop) * math.ceil(int(w) / crop) for h, w in pins)
        return TileCount(most + 1, f"anyres: up to {most} crops of {crop} px (image_grid_pinpoints) + the "
                                   f"resized image ({where})")
    if fam == "lfm2_vl":
        from .lfm2 import DEFAULTS

        get = lambda k: pre.get(k, vlm.config.get(k, DEFAULTS[k]))  # noqa: E731 - older config.json files carry them
        n = int(get("max_tiles"))
        if not get("do_image_splitting") or n <= 1:
            return TileCount(1, f"do_image_splitting off ({where}): one tile per image")
        thumb = bool(get("use_thumbnail"))
        return TileCount(n + thumb, f"do_image_splitting: up to max_tiles {n} tiles"
                                    f"{' + a thumbnail' if thumb else ''} ({where})")
    if fam == "gemma3" and pre.get("do_pan_and_scan"):
        n = int(pre.get("pan_and_scan_max_num_crops") or _GEMMA3_MAX_CROPS)
        return TileCount(n + 1, f"do_pan_and_scan: up to {n} crops + the image ({where})")
    return TileCount(1, "one tile per image")

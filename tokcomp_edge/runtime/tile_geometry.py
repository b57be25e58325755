"""The processors' size arithmetic, transcribed from transformers 5.24 (pure Python, no image work).

Each function names the transformers function it follows; the rounding (int(), math.ceil, the even-height
bump of Idefics3) is kept exactly, because one pixel of difference changes the tile grid.
"""

from __future__ import annotations

import math
from functools import lru_cache

# Idefics3ImageProcessor's MAX_IMAGE_SIZE (image_processing_idefics3.py).
IDEFICS3_MAX_SIDE = 4096


@lru_cache(maxsize=16)
def supported_aspect_ratios(min_tiles: int, max_tiles: int) -> tuple[tuple[int, int], ...]:
    """got_ocr2 get_all_supported_aspect_ratios: (columns, rows) with min ≤ c·r ≤ max, by tile count (stable)."""
    ratios = [(w, h) for w in range(1, max_tiles + 1) for h in range(1, max_tiles + 1)
              if min_tiles <= w * h <= max_tiles]
    return tuple(sorted(ratios, key=lambda x: x[0] * x[1]))


def optimal_tiled_canvas(size: tuple[int, int], tile: tuple[int, int], min_tiles: int,
                         max_tiles: int) -> tuple[int, int]:
    """got_ocr2 get_optimal_tiled_canvas: (columns, rows) whose aspect is closest to the image's; on a tie the
    later (more tiles) grid wins while the image area exceeds half the grid's."""
    height, width = size
    aspect, area = width / height, width * height
    best_diff, best = float("inf"), (1, 1)
    for grid in supported_aspect_ratios(min_tiles, max_tiles):
        diff = abs(aspect - grid[0] / grid[1])
        if diff < best_diff:
            best_diff, best = diff, grid
        elif diff == best_diff and area > 0.5 * tile[0] * tile[1] * grid[0] * grid[1]:
            best = grid
    return best


def idefics3_resize_size(height: int, width: int, longest_edge: int) -> tuple[int, int]:
    """Idefics3 get_resize_output_image_size: longest edge → `longest_edge` (the other side int() of the aspect,
    bumped to even), then bounded by 4096."""
    aspect = width / height
    if width >= height:
        width = longest_edge
        height = int(width / aspect)
        if height % 2 != 0:
            height += 1
    else:
        height = longest_edge
        width = int(height * aspect)
        if width % 2 != 0:
            width += 1
    height, width = max(height, 1), max(width, 1)
    aspect = width / height
    if width >= height and width > IDEFICS3_MAX_SIDE:
        width = IDEFICS3_MAX_SIDE
        height = int(width / aspect)
    elif height > width and height > IDEFICS3_MAX_SIDE:
        height = IDEFICS3_MAX_SIDE
        width = int(height * aspect)
    return max(height, 1), max(width, 1)


def idefics3_encoder_size(height: int, width: int, tile: int) -> tuple[int, int]:
    """Idefics3 resize_for_vision_encoder: both sides up to multiples of the tile (the shorter one through the
    aspect ratio first, as transformers computes it)."""
    aspect = width / height
    if width >= height:
        width = math.ceil(width / tile) * tile
        height = int(width / aspect)
        height = math.ceil(height / tile) * tile
    else:
        height = math.ceil(height / tile) * tile
        width = int(height * aspect)
        width = math.ceil(width / tile) * tile
    return height, width


def select_best_resolution(size: tuple[int, int], resolutions) -> tuple[int, int]:
    """image_processing_utils select_best_resolution: the (h, w) keeping most of the image, then wasting least."""
    oh, ow = size
    best, best_eff, best_waste = None, 0, float("inf")
    for h, w in resolutions:
        scale = min(w / ow, h / oh)
        eff = min(int(ow * scale) * int(oh * scale), ow * oh)
        waste = w * h - eff
        if eff > best_eff or (eff == best_eff and waste < best_waste):
            best, best_eff, best_waste = (int(h), int(w)), eff, waste
    return best


def patch_output_size(size: tuple[int, int], target: tuple[int, int]) -> tuple[int, int]:
    """image_processing_utils get_patch_output_size: the image scaled to fit `target`, aspect kept (ceil)."""
    oh, ow = size
    th, tw = target
    sw, sh = tw / ow, th / oh
    if sw < sh:
        return min(math.ceil(oh * sw), th), tw
    return th, min(math.ceil(ow * sh), tw)


def pan_and_scan_boxes(height: int, width: int, min_crop: int, max_crops: int,
                       min_ratio: float) -> list[tuple[int, int, int, int]]:
    """Gemma3 pan_and_scan: (top, left, bottom, right) of each crop, [] when the image is not elongated enough."""
    if width >= height:
        if width / height < min_ratio:
            return []
        n_w = int(math.floor(width / height + 0.5))
        n_w = min(int(math.floor(width / min_crop)), n_w)
        n_w = min(max_crops, max(2, n_w))
        n_h = 1
    else:
        if height / width < min_ratio:
            return []
        n_h = int(math.floor(height / width + 0.5))
        n_h = min(int(math.floor(height / min_crop)), n_h)
        n_h = min(max_crops, max(2, n_h))
        n_w = 1
    cw, ch = int(math.ceil(width / n_w)), int(math.ceil(height / n_h))
    if min(cw, ch) < min_crop:
        return []
    # numpy slicing clips at the border, as transformers' image[:, y:y+ch, x:x+cw] does.
    return [(ch * i, cw * j, min(ch * i + ch, height), min(cw * j + cw, width))
            for i in range(n_h) for j in range(n_w)]

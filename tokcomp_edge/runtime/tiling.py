"""Images → the engine's tiles, exactly as the VLM's transformers processor (PIL backend) makes them.

transformers 5 ships two image-processor backends: torchvision (the default) and PIL (`backend="pil"`).
They differ by about one grey level where they resize; this module follows the PIL one step by step (PIL
resize on uint8, numpy crops and zero padding, float64 rescale cast to float32, (x − mean) / std in float32),
so its pixels equal `AutoImageProcessor.from_pretrained(folder, backend="pil")` bit for bit (the tests
compare them on real photos). Torch-free: numpy and PIL only.

Tile order per rule (TiledImage.pixels rows), as the processor emits them:

| rule | family | order |
|---|---|---|
| crop_to_patches | internvl | rows × cols crops in raster order, then the thumbnail (only when > 1 crop) |
| split | idefics3, smolvlm | rows × cols crops in raster order, then the global view (only when split) |
| anyres | llava_onevision | the base image (resized to `size`) FIRST, then the crops in raster order |
| single | llava, paligemma, gemma3, qwen*, lfm2_vl | one tile; Gemma 3 with pan-and-scan: the image first, then its crops |
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..errors import InputError
from . import tile_geometry as geo
from .processor import ProcessorParams


@dataclass(frozen=True)
class TiledImage:
    """One image cut into the engine's tiles.

    Attributes:
        pixels: float32 [n, 3, H, W], normalised, in the processor's order (module docstring).
        uint8: uint8 [n, H, W, 3], the same framed pixels before normalisation (for nhwc variants).
        grid: (rows, cols) of the crops; (1, 1) when the image is one tile.
        thumbnail: a thumbnail / global view / base image is among the tiles: LAST for internvl and
            idefics3/smolvlm, FIRST for llava_onevision and gemma3 (pan-and-scan).
        size: (H, W) of the original image.
        resized: (H, W) the processor resized to before cutting (InternVL: rows·H × cols·W; Idefics3: the
            image after resize_for_vision_encoder; OneVision: the best resolution), or None for one tile.
        family: the params' family (the layout reads it).
    """

    pixels: np.ndarray
    uint8: np.ndarray
    grid: tuple[int, int]
    thumbnail: bool
    size: tuple[int, int]
    resized: tuple[int, int] | None
    family: str = ""

    @property
    def tiles(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def crops(self) -> int:
        """Tiles that are crops (not the thumbnail / global view / base image)."""
        return self.tiles - int(self.thumbnail)


def as_rgb_array(image, do_convert_rgb: bool = True) -> np.ndarray:
    """uint8 [H, W, 3] from a PIL image (converted as transformers' convert_to_rgb does) or an array.

    Arrays: HWC uint8 RGB; [H, W] grayscale and [H, W, 4] RGBA are converted through PIL the same way.

    Raises:
        InputError: not an image, a zero-size image, or an array of another shape / dtype.
    """
    from PIL import Image

    from ..calibration.images import to_rgb

    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
            raise InputError(f"an image array of shape {list(image.shape)} and dtype {image.dtype} cannot be tiled",
                             "pass HWC uint8 RGB pixels (or a PIL image)")
        if 0 in image.shape[:2]:
            raise InputError(f"the image array is {image.shape[1]}x{image.shape[0]} pixels (zero-size)",
                             "pass an image with pixels")
        if image.ndim == 3 and image.shape[2] == 3:
            return np.ascontiguousarray(image)
        image = Image.fromarray(image)
    if not isinstance(image, Image.Image):
        raise InputError(f"{type(image).__name__} is not an image", "pass a PIL image or an HWC uint8 array")
    if image.width == 0 or image.height == 0:
        raise InputError(f"the image is {image.width}x{image.height} pixels (zero-size)", "pass an image with pixels")
    rgb = to_rgb(image) if do_convert_rgb or image.mode != "RGB" else image
    return np.asarray(rgb, dtype=np.uint8)


def _resize(arr: np.ndarray, hw: tuple[int, int], resample: int) -> np.ndarray:
    """transformers' PIL-backend resize of a uint8 image: PIL's resize, always called (same size: a copy)."""
    from PIL import Image

    return np.asarray(Image.fromarray(arr).resize((int(hw[1]), int(hw[0])), resample=resample), dtype=np.uint8)


def normalize(tiles: np.ndarray, p: ProcessorParams) -> np.ndarray:
    """uint8 [n, H, W, 3] → float32 [n, 3, H, W] as transformers' PIL backend computes it: x·rescale in float64
    cast to float32 (image_transforms.rescale), then (x − mean) / std in float32 (image_transforms.normalize).

    Each output value depends only on the pixel's byte and its channel, so the arithmetic runs once on the 256
    possible bytes per channel and the tiles are a table look-up: the same float32 values, several times faster
    than computing every pixel (host time is what the runtime adds to the engine's).
    """
    table = _lut(p.rescale_factor, p.mean if p.do_normalize else None, p.std if p.do_normalize else None)
    chw = np.ascontiguousarray(tiles.transpose(0, 3, 1, 2))  # contiguous planes: the look-up is fastest there
    out = np.empty(chw.shape, np.float32)
    for c in range(3):
        out[:, c] = table[c][chw[:, c]]
    return out


@lru_cache(maxsize=8)
def _lut(rescale: float | None, mean: tuple | None, std: tuple | None) -> np.ndarray:
    """[3, 256] float32: the normalised value of each byte per channel, computed as transformers does."""
    x = np.broadcast_to(np.arange(256, dtype=np.uint8)[None, :], (3, 256))
    x = (x.astype(np.float64) * rescale).astype(np.float32) if rescale else x.astype(np.float32)
    if mean is not None:
        x = (x - np.asarray(mean, np.float32)[:, None]) / np.asarray(std, np.float32)[:, None]
    return np.ascontiguousarray(x, dtype=np.float32)


def _pad_to_square(arr: np.ndarray, background) -> np.ndarray:
    """LLaVA / OneVision pad_to_square: centred on a square of the longest side, filled with `background`."""
    h, w = arr.shape[:2]
    if h == w:
        return arr
    side = max(h, w)
    out = np.empty((side, side, 3), np.uint8)
    out[:] = np.asarray(background, np.uint8)
    if w > h:
        top = (side - h) // 2
        out[top:top + h] = arr
    else:
        left = (side - w) // 2
        out[:, left:left + w] = arr
    return out


def _frame_one(arr: np.ndarray, p: ProcessorParams) -> np.ndarray:
    """One tile by the bundle's one-tile policy (calibration/images.py frame: the same PIL steps)."""
    from PIL import Image

    from ..calibration.images import frame
    from ..image_policy import PreprocessPolicy

    policy = PreprocessPolicy.from_manifest({"encoder": {"image_size": list(p.tile), "mean": list(p.mean),
                                                         "std": list(p.std)}, "preprocess": p.frame})
    return frame(Image.fromarray(arr), policy)


def _crop_to_patches(arr, p: ProcessorParams):
    """GotOcr2ImageProcessor (InternVLProcessor passes crop_to_patches=True): crop_image_to_patches."""
    th, tw = p.size or p.tile
    h, w = arr.shape[:2]
    if p.max_patches <= 1:
        return [_resize(arr, (th, tw), p.resample)], (1, 1), False, None
    cols, rows = geo.optimal_tiled_canvas((h, w), (th, tw), p.min_patches, p.max_patches)
    big = _resize(arr, (th * rows, tw * cols), p.resample)
    tiles = [big[r * th:(r + 1) * th, c * tw:(c + 1) * tw] for r in range(rows) for c in range(cols)]
    thumb = p.use_thumbnail and len(tiles) != 1
    if thumb:
        tiles.append(_resize(arr, (th, tw), p.resample))
    return tiles, (rows, cols), thumb, (th * rows, tw * cols)


def _split(arr, p: ProcessorParams):
    """Idefics3ImageProcessor / SmolVLMImageProcessor: resize (longest edge), resize_for_vision_encoder,
    split_images (global view last)."""
    edge = int(p.max_image_size or p.tile[0])
    if p.do_resize:
        arr = _resize(arr, geo.idefics3_resize_size(*arr.shape[:2], int(p.longest_edge or 4 * edge)), p.resample)
    if not p.do_image_splitting:
        return [_resize(arr, (edge, edge), p.resample)], (1, 1), False, None
    hw = geo.idefics3_encoder_size(*arr.shape[:2], edge)
    arr = _resize(arr, hw, p.resample)
    h, w = hw
    if h > edge or w > edge:
        rows, cols = (h - edge) // edge + 1, (w - edge) // edge + 1
        tiles = [arr[r * edge:(r + 1) * edge, c * edge:(c + 1) * edge] for r in range(rows) for c in range(cols)]
        tiles.append(_resize(arr, (edge, edge), p.resample))
        return tiles, (rows, cols), True, hw
    return [arr], (1, 1), False, hw


def _anyres(arr, p: ProcessorParams):
    """LlavaOnevisionImageProcessor get_image_patches (one image in its sample): the base image resized to
    `size` first, then the best resolution's crops (the image fitted, zero-padded centred, divided)."""
    size = p.size or p.tile
    patch = int(p.patch_size or size[0])
    h, w = arr.shape[:2]
    best = geo.select_best_resolution((h, w), p.image_grid_pinpoints)
    nh, nw = geo.patch_output_size((h, w), best)
    fitted = _resize(arr, (nh, nw), p.resample)
    top, left = (best[0] - nh) // 2, (best[1] - nw) // 2
    padded = np.zeros((best[0], best[1], 3), np.uint8)
    padded[top:top + nh, left:left + nw] = fitted
    crops = [padded[i:i + patch, j:j + patch] for i in range(0, best[0], patch) for j in range(0, best[1], patch)]
    tiles = [_resize(arr, size, p.resample)] + crops
    # _preprocess resizes every patch to `size` again (do_resize): PIL copies when it already is that size.
    tiles = [_resize(t, size, p.resample) for t in tiles]
    return tiles, (-(-best[0] // patch), -(-best[1] // patch)), True, best


def _onevision_multi(arr, p: ProcessorParams):
    """LLaVA-OneVision with several images in one sample: no anyres, the image padded to a square (mean colour)."""
    size = p.size or p.tile
    return [_resize(_pad_to_square(arr, p.pad_background), size, p.resample)], (1, 1), False, None


def _single(arr, p: ProcessorParams):
    if p.family == "llava" and p.do_pad:
        arr = _pad_to_square(arr, p.pad_background)
    tiles = [_frame_one(arr, p)]
    if p.family == "gemma3" and p.do_pan_and_scan:
        boxes = geo.pan_and_scan_boxes(*arr.shape[:2], p.pan_and_scan_min_crop_size, p.pan_and_scan_max_num_crops,
                                       p.pan_and_scan_min_ratio_to_activate)
        if boxes:
            tiles += [_frame_one(np.ascontiguousarray(arr[t:b, left:r]), p) for t, left, b, r in boxes]
            rows = len({b[0] for b in boxes})
            return tiles, (rows, len(boxes) // rows), True, None
    return tiles, (1, 1), False, None


_RULES = {"crop_to_patches": _crop_to_patches, "split": _split, "anyres": _anyres, "single": _single}


def tile_image(image, params: ProcessorParams, *, multi_image: bool = False) -> TiledImage:
    """Cut one image into the engine's tiles as the family's processor does.

    Args:
        image: a PIL image (any mode) or an HWC uint8 RGB array.
        params: the bundle's ProcessorParams (`ProcessorParams.from_manifest(manifest)`).
        multi_image: LLaVA-OneVision only: the reading of an image that shares its sample with others
            (transformers skips anyres then: one square-padded tile); other families ignore it.
    Returns:
        The TiledImage.
    Raises:
        InputError: not an image or zero-size; BundleError-worthy params surface as InputError naming the tile.
    """
    arr = as_rgb_array(image, params.do_convert_rgb)
    size = (int(arr.shape[0]), int(arr.shape[1]))
    cut = _onevision_multi if (multi_image and params.rule == "anyres") else _RULES[params.rule]
    tiles, grid, thumb, resized = cut(arr, params)
    stack = np.ascontiguousarray(np.stack(tiles))
    if stack.shape[1:3] != tuple(params.tile):
        raise InputError(f"the {params.family} processor settings make {stack.shape[2]}x{stack.shape[1]} tiles, "
                         f"but the bundle's engine takes {params.tile[1]}x{params.tile[0]}",
                         "re-export from a folder whose processor config matches the tower's image size")
    return TiledImage(pixels=normalize(stack, params), uint8=stack, grid=grid, thumbnail=thumb, size=size,
                      resized=resized, family=params.family)

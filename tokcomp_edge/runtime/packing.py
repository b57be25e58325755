"""LLaVA-OneVision's `pack_image_features` in numpy: per-tile features → what the LLM reads for one image.

transformers 5.24 (`LlavaOnevisionModel.pack_image_features`, called by `get_image_features`) does, for an
image cut into a base view + rows × cols crops:

1. the crops' token grids are laid out as one feature map [D, rows·h, cols·w] (h × w tokens per tile);
2. `unpad_image` removes the rows/columns that fall on the processor's padding (the image was resized into
   the best resolution keeping its aspect ratio, then padded to it);
3. when the map is larger than `anyres_max_N` allows (ratio √(H'·W' / (N·h²)) > 1.1), it is downscaled with
   `F.interpolate(mode="bilinear")` (align_corners False, no antialiasing) to ⌊H'/ratio⌋ × ⌊W'/ratio⌋;
4. the learned `image_newline` vector is appended at the end of every row, the map is flattened row-major
   and put after the base view's tokens.

An image that is one tile (several images in one sample skip anyres in transformers) gets its tokens and one
newline at the end. With extra compression the tiles' token grid is the compressed one (`grid_out`): the same
packing on the smaller grid, which is what a VLM fed these tokens must see (transformers itself assumes the
uncompressed grid and would refuse it).

The bilinear resize reproduces PyTorch's CPU kernel step by step in float32 (source index
scale·(i + ½) − ½ rounded once and clamped at 0, weights 1 − λ / λ, the width pass inside the height pass):
its weights are PyTorch's bit for bit, and its values agree with `F.interpolate` to 1–2 float32 ulps (the
kernel's vectorised accumulation rounds in an order numpy cannot follow exactly).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import BundleError, InputError


@dataclass(frozen=True)
class Packed:
    """One image's packed features.

    Attributes:
        features: [tokens, D] float32, what replaces the image's placeholders.
        newline_positions: indices (into `features`) of the image_newline tokens.
        feature_size: (rows, cols) of the unpadded (and possibly downscaled) crop feature map, None for one tile.
    """

    features: np.ndarray
    newline_positions: tuple[int, ...]
    feature_size: tuple[int, int] | None


def max_patches(vision_aspect_ratio: str) -> int:
    """N of `anyres_max_N`, parsed as transformers does (`str.strip("anyres_max_")`)."""
    try:
        return int(str(vision_aspect_ratio).strip("anyres_max_"))
    except ValueError as exc:
        raise BundleError(f"vision_aspect_ratio {vision_aspect_ratio!r} is not of the form anyres_max_N",
                          "re-export the bundle from a checkpoint whose config.json has one") from exc


def unpad(feature: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
    """transformers' `unpad_image`: [C, H, W] → the part that covers the original image (H0, W0)."""
    oh, ow = original_size
    ch, cw = feature.shape[1:]
    if ow / oh > cw / ch:
        new_h = int(round(oh * (cw / ow), 7))
        pad = (ch - new_h) // 2
        return feature[:, pad:ch - pad, :]
    new_w = int(round(ow * (ch / oh), 7))
    pad = (cw - new_w) // 2
    return feature[:, :, pad:cw - pad]


def _linear_indices(in_size: int, out_size: int):
    """Source indices and weights of one axis, as PyTorch's CPU upsample_bilinear computes them (float32)."""
    scale = np.float32(in_size) / np.float32(out_size)
    # scale·(i + ½) − ½ rounded once to float32, as the compiled kernel's fused multiply-add does (the float64
    # product of a float32 and a half-integer is exact; two float32 roundings differ by up to 1e-6).
    src = (np.float64(scale) * (np.arange(out_size, dtype=np.float64) + 0.5) - 0.5).astype(np.float32)
    src = np.maximum(src, np.float32(0.0))
    i0 = src.astype(np.int64)
    lam1 = np.clip(src - i0.astype(np.float32), np.float32(0.0), np.float32(1.0)).astype(np.float32)
    lam0 = (np.float32(1.0) - lam1).astype(np.float32)
    i1 = i0 + (i0 < in_size - 1)
    return i0, i1, lam0, lam1


def bilinear(feature: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`F.interpolate(x[None], size, mode="bilinear")[0]` for x [C, H, W] float32 (align_corners False)."""
    x = np.asarray(feature, dtype=np.float32)
    h0, h1, a0, a1 = _linear_indices(x.shape[1], size[0])
    w0, w1, b0, b1 = _linear_indices(x.shape[2], size[1])
    rows0, rows1 = x[:, h0, :], x[:, h1, :]
    # Width pass inside the height pass, in PyTorch's order of operations: out = t·w, then out += t'·w' as a
    # fused multiply-add (one rounding; float64 holds the exact product of two float32 values).
    t0 = _fma(rows0[:, :, w1], b1, rows0[:, :, w0] * b0)
    t1 = _fma(rows1[:, :, w1], b1, rows1[:, :, w0] * b0)
    return _fma(t1, a1[:, None], t0 * a0[:, None])


def _fma(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """float32(a·b + c) with one rounding, for float32 a, b, c."""
    return (a.astype(np.float64) * b.astype(np.float64) + c.astype(np.float64)).astype(np.float32)


def pack_image_features(tiles: np.ndarray, grid: tuple[int, int], original_size: tuple[int, int],
                        token_grid: tuple[int, int], image_newline: np.ndarray | None,
                        vision_aspect_ratio: str = "anyres_max_9") -> Packed:
    """Pack one image's per-tile features as LLaVA-OneVision does.

    Args:
        tiles: [n, T, D] the bundle's `tokens` for the image's tiles, the base view first, then the crops in
            row-major order (n = 1 + rows·cols, or 1 for an image that was not split).
        grid: (rows, cols) of crops (the best resolution / the crop size).
        original_size: (H, W) of the image before any resizing.
        token_grid: (h, w) tokens per tile side (the bundle's grid_out).
        image_newline: [D] the checkpoint's learned newline vector (None: no newline, as transformers allows).
        vision_aspect_ratio: config.json's `vision_aspect_ratio`.
    Returns:
        Packed.
    """
    tiles = np.asarray(tiles, dtype=np.float32)
    n, tokens, dim = tiles.shape
    h, w = token_grid
    if h * w != tokens:
        raise InputError(f"tiles of {tokens} tokens do not form the {h}x{w} token grid packing needs",
                         "re-export the bundle (its grid_out must describe its tokens)")
    newline = None if image_newline is None else np.asarray(image_newline, dtype=np.float32).reshape(-1)
    if newline is not None and newline.shape[0] != dim:
        raise BundleError(f"image_newline has {newline.shape[0]} values, the tokens have {dim} channels",
                          "re-export the bundle with its projector (image_newline lives in the LLM's space)")
    if n == 1:
        feats = tiles[0]
        if newline is None:
            return Packed(feats, (), None)
        return Packed(np.concatenate([feats, newline[None]]), (tokens,), None)
    rows, cols = grid
    if n != 1 + rows * cols:
        raise InputError(f"{n} tiles for a {rows}x{cols} grid + base view", "tile the image with the bundle's "
                                                                             "own processor parameters")
    base = tiles[0]
    fmap = tiles[1:].reshape(rows, cols, h, w, dim).transpose(4, 0, 2, 1, 3).reshape(dim, rows * h, cols * w)
    fmap = unpad(fmap, original_size)
    _, ch, cw = fmap.shape
    ratio = math.sqrt(ch * cw / (max_patches(vision_aspect_ratio) * h ** 2))
    if ratio > 1.1:
        fmap = bilinear(fmap, (int(ch // ratio), int(cw // ratio)))
    _, ch, cw = fmap.shape
    if newline is not None:
        fmap = np.concatenate([fmap, np.broadcast_to(newline[:, None, None], (dim, ch, 1))], axis=-1)
    flat = fmap.reshape(dim, -1).T
    feats = np.ascontiguousarray(np.concatenate([base, flat]), dtype=np.float32)
    lines = tuple(tokens + r * (cw + 1) + cw for r in range(ch)) if newline is not None else ()
    return Packed(feats, lines, (ch, cw))

"""One image's tiles' tokens → its embedding rows and its ImageLayout: the family's post-processing, shared by
the device runtime (the engine's outputs) and the sweep (the candidate's PyTorch outputs), so that both lay
out an image the same way. Torch-free.

LLaVA-OneVision: pack_image_features on the crop grid config.json's pinpoints give (base grid, unpadded
crops, the learned image_newline, the bilinear downscale above anyres_max); every other family: the tiles'
tokens in the processor's tile order. The layout's token count must equal the rows produced.
"""

from __future__ import annotations

import numpy as np

from ..errors import BundleError, CheckFailed
from .layout import ImageLayout, image_layout
from .packing import pack_image_features
from .processor import ProcessorParams
from .tiling import TiledImage


def onevision_grid(params: ProcessorParams, tiled: TiledImage) -> tuple[int, int]:
    """The crop grid pack_image_features views the features as: config.json's grid_pinpoints (the model's,
    which transformers reads there) at the tile size; it must describe the crops the processor made."""
    from .tile_geometry import select_best_resolution

    pins = params.model_grid_pinpoints or params.image_grid_pinpoints
    grid = tiled.grid
    if pins:
        h, w = select_best_resolution(tiled.size, pins)
        grid = (h // params.tile[0], w // params.tile[1])
    if grid[0] * grid[1] != tiled.tiles - 1:
        raise BundleError(f"config.json's grid pinpoints give a {grid[0]}x{grid[1]} grid for a "
                          f"{tiled.size[1]}x{tiled.size[0]} image, the processor cut {tiled.tiles - 1} crops",
                          "re-export from a folder whose config.json and processor pinpoints agree")
    return grid


def image_embedding(tiled: TiledImage, tokens: np.ndarray, params: ProcessorParams, manifest: dict,
                    token_grid: tuple[int, int] | None, newline: np.ndarray | None,
                    source: str) -> tuple[np.ndarray, ImageLayout]:
    """Tokens [tiles, T, D] of one image → (rows [tokens, D] float32, layout).

    Args:
        token_grid: the tokens' grid per tile (grid_out); LLaVA-OneVision's packing needs it (callers refuse
            a bundle or candidate without one, each with its own error, before calling).
        newline: LLaVA-OneVision's image_newline [D]; None elsewhere.
        source: what produced the tokens, for the error ("the backend", a candidate's vision path).
    Raises:
        CheckFailed (exit 1): the layout's token count is not the number of rows produced.
    """
    if params.rule == "anyres":
        grid = onevision_grid(params, tiled) if tiled.tiles > 1 else (1, 1)
        packed = pack_image_features(tokens, grid, tiled.size, tuple(token_grid), newline,
                                     params.vision_aspect_ratio or "anyres_max_9")
        emb = packed.features
        lay = image_layout(tiled, manifest, tokens=int(emb.shape[0]), newline_positions=packed.newline_positions)
    else:
        emb = np.ascontiguousarray(tokens.reshape(-1, tokens.shape[-1]), dtype=np.float32)
        lay = image_layout(tiled, manifest)
    if lay.tokens != emb.shape[0]:
        raise CheckFailed(f"the layout of a {tiled.size[1]}x{tiled.size[0]} image says {lay.tokens} tokens, "
                          f"{source} produced {emb.shape[0]}", "report this with the bundle's manifest or the "
                          "folder's config.json")
    return emb, lay

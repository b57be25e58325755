"""SigLIP2 NaFlex (Siglip2VisionModel) at one static tile: the tower of LFM2-VL.

transformers' Siglip2 takes already-flattened patches [B, N, 3·p·p] plus `spatial_shapes` and a pixel
attention mask, and resizes its square position table to each image's grid at every forward (bilinear,
antialiased). For one full tile (every patch valid, the grid fixed) all of that is a constant:

- the patch flattening (the image processor's `convert_image_to_patches`: rows of patches, each patch
  row-major with the channels last) is a static reshape/permute of pixel_values [B, 3, H, W] inside the graph;
- the resized position table is `A @ table` with A [gh·gw, n·n] the interpolation matrix, built once by
  applying F.interpolate(bilinear, antialias) to the n·n basis images, so the graph holds a MatMul with a
  constant instead of an antialiased Resize (which ONNX/TensorRT do not express) or a data-dependent op;
- the attention mask of an all-valid tile masks nothing, so the blocks run unmasked.
A test compares embed() and the tower's output with Siglip2VisionModel's for spatial_shapes = the grid.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .hf_towers import TOWERS, HFTower, _self_attn_parts, _self_attn_qk
from .spec import EncoderSpec
from .tower import BlockParts

MODEL_TYPE = "siglip2_vision_model"


def siglip2_spec(name: str, source: str, hf: dict[str, Any], image_size: tuple[int, int],
                 mean: tuple[float, ...], std: tuple[float, ...]) -> EncoderSpec:
    """The EncoderSpec of a SigLIP2 NaFlex tower exported at one (H, W) tile.

    SigLIP2's config has no image size (NaFlex takes any grid up to num_patches); the tile is the caller's
    (the VLM's --image-size or its default), already checked to be a multiple of the patch size.
    """
    patch = int(hf["patch_size"])
    h, w = (int(v) for v in image_size)
    return EncoderSpec(
        name=name, family="siglip", source=source, image_size=(h, w), patch_size=patch, prefix_tokens=0,
        has_cls=False, hidden_size=int(hf["hidden_size"]), num_layers=int(hf["num_hidden_layers"]),
        num_heads=int(hf["num_attention_heads"]), mean=tuple(float(v) for v in mean),
        std=tuple(float(v) for v in std), default_prefix="drop",
        config={"model_type": MODEL_TYPE, "hf": {**hf, "patch_size": patch}})


def interpolation_matrix(side: int, grid: tuple[int, int]) -> torch.Tensor:
    """A [gh·gw, side·side] with A @ table.reshape(side², C) = Siglip2's resized table on `grid`.

    Resizing is linear in the table, so F.interpolate applied to the side² one-hot basis images gives its
    matrix exactly (Siglip2's own mode: bilinear, align_corners False, antialias True).
    """
    basis = torch.eye(side * side, dtype=torch.float32).reshape(side * side, 1, side, side)
    out = F.interpolate(basis, size=grid, mode="bilinear", align_corners=False, antialias=True)
    return out.reshape(side * side, grid[0] * grid[1]).t().contiguous()


def flatten_patches(pixel_values: torch.Tensor, patch: int) -> torch.Tensor:
    """[B, 3, H, W] → [B, (H/p)·(W/p), p·p·3] in the order Lfm2Vl's / Siglip2's image processors flatten."""
    b, c, h, w = pixel_values.shape
    x = pixel_values.reshape(b, c, h // patch, patch, w // patch, patch)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // patch) * (w // patch), patch * patch * c)


class Siglip2Tower(HFTower):
    """Siglip2VisionModel (no head) at a static grid: embeddings → encoder.layers → post_layernorm."""

    def __init__(self, spec: EncoderSpec, model: nn.Module, layer: int = -1, final_norm_on_last: bool = True):
        super().__init__(spec, model, layer, final_norm_on_last)
        side = model.embeddings.position_embedding_size
        # Built from the config, never from the weights: loading a checkpoint later changes the table only.
        self.register_buffer("pos_resize", interpolation_matrix(side, spec.grid), persistent=False)

    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        emb = self.hf.embeddings
        x = emb.patch_embedding(flatten_patches(pixel_values, self.spec.patch_size))
        pos = self.pos_resize @ emb.position_embedding.weight.float()
        return x + pos.to(x.dtype)

    @property
    def blocks(self) -> nn.ModuleList:
        return self.hf.encoder.layers

    @property
    def final_norm(self) -> nn.Module:
        return self.hf.post_layernorm

    def attention_qk(self, block: nn.Module, x: torch.Tensor, q_rows: int | None = None):
        return _self_attn_qk(block, x, q_rows)

    def block_parts(self, block: nn.Module) -> BlockParts:
        return _self_attn_parts(block)


TOWERS[MODEL_TYPE] = Siglip2Tower

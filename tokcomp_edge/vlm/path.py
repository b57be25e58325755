"""The exported module of a VLM: tower → select → extra compression → the VLM's transform → projector.

Each step calls transformers' own modules (the tower's blocks, the projector or its parts) in the order
`get_image_features` does, so with `--compress none` the output equals that method's for one tile. The
reductions inside a projector module (Idefics3/SmolVLM's pixel shuffle, Gemma 3's average pool) are
re-expressed on the actual grid, so that extra compression in front of them keeps working; with no extra
compression they are the same ops on the same numbers (tests compare with transformers).
"""

from __future__ import annotations

import torch
from torch import nn

from ..compression import functional as Fc
from ..compression.module import TokenCompressor
from .plan import VlmPlan


class VlmVisionPath(nn.Module):
    """pixel_values [B, 3, H, W] → tokens [B, T, D] as the VLM's LLM reads them (+ indices [B, K] for prune and visionzip, + merge_map [B, N] for visionzip).

    Args:
        tower: the VisionTower at the VLM's feature layer (final norm as the family's feature says).
        plan: the VlmPlan (extra compression, transform factors, projector on/off).
        projector: transformers' projector module (`multi_modal_projector` / `connector`), or None.
    """

    def __init__(self, tower: nn.Module, plan: VlmPlan, projector: nn.Module | None):
        super().__init__()
        self.tower = tower
        self.compressor = TokenCompressor(plan.compression)
        self.projector = projector if plan.projector else None
        self.family = plan.vlm.family.model_type
        self.in_projector = plan.vlm.family.transform_in_projector
        self.shuffle = plan.vlm.shuffle
        self.pool = plan.vlm.pool
        self.grid = plan.compression.grid_out
        self.video_grid = plan.grid_out if plan.video else None
        # transformers' `[:, 1:]` on a tower whose row 0 is a patch (or a CLS before registers).
        self.drop_first = plan.vlm.drops_first_only

    def forward(self, pixel_values: torch.Tensor):
        tokens, attn = self.compressor.tower_outputs(self.tower, pixel_values)
        out = self.compressor(tokens, attn)
        x, *extra = out if isinstance(out, tuple) else (out,)  # indices (+ merge_map) index the tower's grid
        if self.drop_first:
            x = x[:, 1:]
        if self.shuffle and not self.in_projector:
            x = Fc.unshuffle_tokens(x, self.grid[0], self.grid[1], self.shuffle, "internvl")
        if self.projector is not None:
            x = self._project(x)
        if self.video_grid is not None:
            # LLaVA-OneVision's apply_pooling: bilinear to ⌈h/2⌉×⌈w/2⌉, after the projector.
            x = Fc.bilinear_tokens(x, self.grid[0], self.grid[1], *self.video_grid)
        return (x, *extra) if extra else x

    def _project(self, x: torch.Tensor) -> torch.Tensor:
        p = self.projector
        if self.family in ("idefics3", "smolvlm"):
            # Idefics3Connector.pixel_shuffle has the same channel order as InternVL's (a test proves it).
            x = Fc.unshuffle_tokens(x, self.grid[0], self.grid[1], self.shuffle, "internvl")
            return p.modality_projection(x)
        if self.family == "lfm2_vl":
            # Lfm2VlMultiModalProjector.pixel_unshuffle has InternVL's channel order (row offset, column
            # offset, channel); a test compares with transformers' get_image_features.
            x = Fc.unshuffle_tokens(x, self.grid[0], self.grid[1], self.shuffle, "internvl")
            if p.use_layer_norm:
                x = p.layer_norm(x)
            return p.linear_2(p.act(p.linear_1(x)))
        if self.family == "gemma3":
            dtype = x.dtype
            x = Fc.pool_tokens(x, self.grid[0], self.grid[1], self.pool, "avg")
            x = p.mm_soft_emb_norm(x)
            return torch.matmul(x, p.mm_input_projection_weight).to(dtype)
        return p(x)


def vision_path(tower: nn.Module, plan: VlmPlan, projector: nn.Module | None) -> nn.Module:
    """The module a VLM exports: Qwen-VL's own static-grid path (qwen_tower.py: rotary and window tables as
    constants, merger, DeepStack outputs), every other family's VlmVisionPath."""
    if plan.vlm.family.transform == "patch_merger":
        from .qwen_tower import QwenVisionPath

        return QwenVisionPath(tower, plan.compression, merger=plan.projector)
    return VlmVisionPath(tower, plan, projector)

"""The Qwen vision path (Qwen2-VL, Qwen2.5-VL, Qwen3-VL, Qwen3.5) at one static tile.

transformers' vision models take the processor's flattened patches plus `grid_thw` and derive rotary
tables, windows and segments from it at run time. Here the tile is fixed, so all of that is a constant
(qwen_grid.py), the graph input is plain `pixel_values` [B, 3, H, W], the processor's flattening is a
static reshape inside the graph, and the blocks run with our own attention over transformers' block
weights (batch rows are images: no cu_seqlens split; windows are static reshapes).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..compression.module import TokenCompressor
from ..compression.plan import CompressionPlan
from ..encoders.spec import EncoderSpec
from ..encoders.tower import VisionTower
from ..errors import InputError, SpecError
from .qwen_grid import position_taps, rotary_tables, to_merge_order, window_layout

QWEN_TYPES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_5")
# Grid reductions keep the merger's 2×2 groups neighbours and M-RoPE consistent; nothing else does.
GRID_METHODS = ("none", "pool", "bilinear")


@dataclass(frozen=True)
class QwenFacts:
    """What the vision path needs from a Qwen VLM config's vision_config.

    Attributes:
        hidden: the tower's channels; out_hidden: the merger's output (the LLM's hidden size).
        window: Qwen2.5-VL's window_size in pixels (None elsewhere); fullatt: its full-attention blocks.
        deepstack: Qwen3-VL's deepstack_visual_indexes (0-based blocks whose output feeds a DeepStack merger).
        theta: the vision rotary base.
    """

    model_type: str
    patch: int
    temporal: int
    merge: int
    depth: int
    hidden: int
    heads: int
    out_hidden: int
    window: int | None
    fullatt: tuple[int, ...]
    deepstack: tuple[int, ...]
    theta: float = 10000.0

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def tile_multiple(self) -> int:
        """H and W must be multiples of this (patch × merge)."""
        return self.patch * self.merge

    def to_dict(self) -> dict:
        d = asdict(self)
        d["fullatt"], d["deepstack"] = list(self.fullatt), list(self.deepstack)
        return d


def _vision_config(vlm_config):
    return getattr(vlm_config, "vision_config", vlm_config)


def qwen_facts(model_type: str, vlm_config) -> QwenFacts:
    """Read QwenFacts from a transformers VLM config object (or its vision_config)."""
    if model_type not in QWEN_TYPES:
        raise InputError(f"{model_type!r} is not a Qwen vision family", f"one of {', '.join(QWEN_TYPES)}")
    vc = _vision_config(vlm_config)
    rope = getattr(vc, "rope_parameters", None) or {}
    if model_type == "qwen2_vl":  # Qwen2-VL names the tower width embed_dim and the merger output hidden_size
        hidden, out = vc.embed_dim, vc.hidden_size
    else:
        hidden, out = vc.hidden_size, vc.out_hidden_size
    return QwenFacts(
        model_type=model_type, patch=vc.patch_size, temporal=vc.temporal_patch_size, merge=vc.spatial_merge_size,
        depth=vc.depth, hidden=hidden, heads=vc.num_heads, out_hidden=out,
        window=vc.window_size if model_type == "qwen2_5_vl" else None,
        fullatt=tuple(vc.fullatt_block_indexes) if model_type == "qwen2_5_vl" else (),
        deepstack=tuple(getattr(vc, "deepstack_visual_indexes", None) or ()) if model_type == "qwen3_vl" else (),
        theta=float(rope.get("rope_theta", 10000.0)))


def build_visual(model_type: str, vlm_config) -> nn.Module:
    """transformers' own vision module for the family, random-initialised, in eval mode."""
    if model_type == "qwen2_vl":
        from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VisionTransformerPretrainedModel as cls
    elif model_type == "qwen2_5_vl":
        from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionTransformerPretrainedModel as cls
    elif model_type == "qwen3_vl":
        from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLVisionModel as cls
    elif model_type == "qwen3_5":
        from transformers.models.qwen3_5.modeling_qwen3_5 import Qwen3_5VisionModel as cls
    else:
        raise InputError(f"{model_type!r} is not a Qwen vision family", f"one of {', '.join(QWEN_TYPES)}")
    return cls(_vision_config(vlm_config)).eval()


def check_tile(facts: QwenFacts, image_size: tuple[int, int]) -> None:
    """InputError (exit 2) unless H and W are multiples of patch × merge, naming the nearest valid sizes."""
    m = facts.tile_multiple
    bad = [s for s in image_size if s <= 0 or s % m]
    if bad:
        near = sorted({max(m, (s // m) * m) for s in bad} | {(s // m + 1) * m for s in bad})
        raise InputError(f"image size {image_size[0]}x{image_size[1]} is not a multiple of {m} "
                         f"(patch {facts.patch} × merge {facts.merge}) for {facts.model_type}",
                         f"use multiples of {m}, e.g. {', '.join(map(str, near))}")


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """transformers' apply_rotary_pos_emb_vision on [B, T, heads, d] with cos/sin [T, d] (in float32)."""
    dtype = x.dtype
    x = x.float()
    half = x.shape[-1] // 2
    rot = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return (x * cos[:, None, :] + rot * sin[:, None, :]).to(dtype)


class QwenTower(VisionTower):
    """pixel_values [B, 3, H, W] → the Qwen tower's last hidden state [B, gh·gw, hidden] in raster order.

    Internally Qwen2.5-VL's tokens are grouped by window (qwen_grid.WindowLayout), so each window
    block is a static reshape; block taps see that internal order, the outputs are raster.
    `deepstack_out` holds, after a forward, the raster hidden states after each DeepStack block.
    """

    def __init__(self, spec: EncoderSpec, visual: nn.Module, facts: QwenFacts, image_size: tuple[int, int]):
        check_tile(facts, image_size)
        grid = (image_size[0] // facts.patch, image_size[1] // facts.patch)
        if spec.grid != grid or spec.prefix_tokens or spec.num_layers != facts.depth:
            raise InputError(f"encoder spec {spec.name} (grid {spec.grid}, {spec.prefix_tokens} prefix, "
                             f"{spec.num_layers} layers) does not describe this Qwen tower (grid {grid}, "
                             f"{facts.depth} layers)", "this is a bug in the caller; report it")
        super().__init__(spec)
        self.facts = facts
        self.visual = visual
        self.blocks = visual.blocks
        self.final_norm = nn.Identity()
        self.grid = grid
        t = grid[0] * grid[1]
        layout = None
        if facts.window is not None:
            units = facts.window // facts.merge // facts.patch
            if units < 1:
                raise InputError(f"window_size {facts.window} is smaller than one merge unit "
                                 f"({facts.merge}×{facts.patch} px)", "check the checkpoint's vision_config")
            layout = window_layout(grid, facts.merge, units)
        order = torch.tensor(layout.order if layout else range(t), dtype=torch.long)
        self.groups = layout.groups if layout else ((1, t),)
        self.permuted = layout is not None
        self.register_buffer("order", order, persistent=False)
        self.register_buffer("inverse", torch.argsort(order), persistent=False)
        cos, sin = rotary_tables(grid, facts.head_dim, facts.theta, order)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        self.pos_taps = hasattr(visual, "pos_embed")  # Qwen3-VL / Qwen3.5: a learned, resampled table
        if self.pos_taps:
            side = int(visual.pos_embed.num_embeddings ** 0.5)
            idx, wts = position_taps(grid, side)
            self.register_buffer("pos_index", idx, persistent=False)
            self.register_buffer("pos_weight", wts, persistent=False)
        self.deepstack_out: list[torch.Tensor] = []

    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        f = self.facts
        b = pixel_values.shape[0]
        (gh, gw), p = self.grid, f.patch
        # The processor's flattening per patch: (C, temporal, p, p) with the still image repeated over the
        # temporal patch; patch order does not matter to the (per-patch) embedding, so raster here.
        x = pixel_values.reshape(b, 3, gh, p, gw, p).permute(0, 2, 4, 1, 3, 5)
        x = x.unsqueeze(4).expand(b, gh, gw, 3, f.temporal, p, p).reshape(b * gh * gw, 3 * f.temporal * p * p)
        x = self.visual.patch_embed(x).reshape(b, gh * gw, f.hidden)
        if self.pos_taps:
            pos = (self.visual.pos_embed.weight[self.pos_index] * self.pos_weight[:, :, None]).sum(1)
            x = x + pos.to(x.dtype)
        return x[:, self.order] if self.permuted else x

    def _attention(self, attn: nn.Module, x: torch.Tensor, windowed: bool) -> torch.Tensor:
        b, t, c = x.shape
        h = self.facts.heads
        q, k, v = attn.qkv(x).reshape(b, t, 3, h, c // h).unbind(2)
        q, k = _rotate(q, self.cos, self.sin), _rotate(k, self.cos, self.sin)
        if not windowed or len(self.groups) == 1 and self.groups[0][0] == 1:
            o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                               scale=attn.scaling)
            o = o.transpose(1, 2).reshape(b, t, c)
        else:
            outs, start = [], 0
            for n, w in self.groups:  # each group: n windows of w tokens, contiguous

                def win(z):
                    return z[:, start:start + n * w].reshape(b, n, w, h, c // h).permute(0, 1, 3, 2, 4).reshape(
                        b * n, h, w, c // h)

                o = F.scaled_dot_product_attention(win(q), win(k), win(v), scale=attn.scaling)
                outs.append(o.reshape(b, n, h, w, c // h).permute(0, 1, 3, 2, 4).reshape(b, n * w, c))
                start += n * w
            o = torch.cat(outs, dim=1)
        return attn.proj(o)

    def run_block(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        # Which blocks attend within windows is a fact of the block's index (Qwen2.5-VL's fullatt indexes),
        # looked up by identity at call time: the exporter traces a copy of the module tree.
        windowed = self.facts.window is not None and next(
            i for i, b in enumerate(self.blocks) if b is block) not in self.facts.fullatt
        x = x + self._attention(block.attn, block.norm1(x), windowed)
        return x + block.mlp(block.norm2(x))

    def raster(self, x: torch.Tensor) -> torch.Tensor:
        """Internal token order → raster."""
        return x[:, self.inverse] if self.permuted else x

    def forward(self, pixel_values: torch.Tensor, with_cls_attention: bool = False, with_probe: bool = False):
        if with_cls_attention or with_probe:
            raise InputError(f"{self.spec.name} has no CLS token and tokcomp does not read its attention",
                             "use pool or bilinear compression on Qwen towers")
        x = self.embed(pixel_values)
        deep = []
        for i, block in enumerate(self.blocks):
            x = self.run_block(block, x)
            if self.block_tap is not None:
                self.block_tap(i, x, None)
            if i in self.facts.deepstack:
                deep.append(self.raster(x))
        self.deepstack_out = deep
        return self.raster(x), None


class QwenVisionPath(nn.Module):
    """pixel_values → tokens [B, T, out_hidden] as the LLM reads them (+ one DeepStack feature per
    deepstack block, [B, T, out_hidden], for Qwen3-VL).

    Extra compression (a grid reduction) acts on the raster patch grid of the last hidden state, and
    identically on each DeepStack layer's, before the mergers: their merge×merge groups stay neighbours.
    """

    def __init__(self, tower: QwenTower, compression: CompressionPlan, merger: bool = True):
        super().__init__()
        method = compression.spec.method
        if method not in GRID_METHODS:
            raise SpecError(f"{compression.spec.text} would break the Qwen merger's {tower.facts.merge}×"
                            f"{tower.facts.merge} groups and the LLM's M-RoPE positions",
                            "use pool:F or bilinear:HxW on Qwen (or none)")
        m = tower.facts.merge
        gh, gw = compression.grid_out
        if gh % m or gw % m:
            raise SpecError(f"{compression.spec.text} gives a {gh}x{gw} patch grid, which the merge size {m} "
                            "does not divide", f"pick a compression whose grid is a multiple of {m} per side")
        self.tower = tower
        self.compressor = TokenCompressor(compression)
        self.grid_out = (gh, gw)
        self.merger = tower.visual.merger if merger else None
        self.deepstack_mergers = getattr(tower.visual, "deepstack_merger_list", None) if merger else None

    def _merge(self, x: torch.Tensor, merger: nn.Module | None) -> torch.Tensor:
        b = x.shape[0]
        x = to_merge_order(self.compressor(x), self.grid_out, self.tower.facts.merge)
        if merger is None:
            return x
        return merger(x).reshape(b, x.shape[1] // self.tower.facts.merge ** 2, -1)

    def forward(self, pixel_values: torch.Tensor):
        tokens, _ = self.tower(pixel_values)
        out = self._merge(tokens, self.merger)
        if not self.tower.facts.deepstack:
            return out
        mergers = self.deepstack_mergers or [None] * len(self.tower.deepstack_out)
        deep = [self._merge(h, mg) for h, mg in zip(self.tower.deepstack_out, mergers)]
        return (out, *deep)


def merged_grid_thw(facts: QwenFacts, grid_out: tuple[int, int]) -> list[int]:
    """The image_grid_thw to give the LLM's get_rope_index for a tile whose (reduced) patch grid is
    grid_out: in patch units, as the processor reports it (the LLM divides by the merge size)."""
    return [1, int(grid_out[0]), int(grid_out[1])]

"""Qwen-VL's vision path at one static tile: transformers' own modules, every grid-dependent table a constant.

transformers runs Qwen2-VL / Qwen2.5-VL / Qwen3-VL / Qwen3.5's vision model on packed, processor-flattened
patches with a `grid_thw` per image, from which it computes per call: the 2-D rotary tables, Qwen2.5-VL's
window index and window boundaries (`cu_seqlens`), and Qwen3's interpolated learned position embedding
(transformers.vision_utils). For one tile these are fixed, so they are computed once here, with transformers'
own functions, and stored as buffers (graph constants):

- the processor's flattening (a still image repeated over `temporal_patch_size`, patches in 2×2 merge-block
  order) is the patch embedding's Conv3d applied to the image expanded over time, then a static reshape into
  merge-block order;
- window attention is attention over the whole tile with a constant block mask (0 inside a window, −30000
  outside: exp underflows to exactly 0 in fp32 and fp16, and unlike −inf the constant survives an fp16 cast),
  so windows that the grid does not divide (transformers pads them) need no data-dependent op;
- a batch row is one image; attention never crosses rows (transformers' one `cu_seqlens` segment per image).

QwenTower's output is the last hidden state in raster order (row-major patch grid), so that the generic grid
compressors (pool, bilinear) act on the patch grid in spatial order; QwenVisionPath then puts the (reduced) grid
back into merge-block order for the merger, and does the same for Qwen3-VL's DeepStack layers.
"""

from __future__ import annotations

import importlib
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from ..compression.module import TokenCompressor
from ..compression.plan import CompressionPlan
from ..encoders.spec import EncoderSpec
from ..encoders.tower import VisionTower
from ..errors import InputError, SpecError
from .qwen_spec import QWEN_TYPES, qwen_shape

# transformers' vision model class of each VLM model_type.
VISION_CLASSES = {"qwen2_vl": ("qwen2_vl", "Qwen2VisionTransformerPretrainedModel"),
                  "qwen2_5_vl": ("qwen2_5_vl", "Qwen2_5_VisionTransformerPretrainedModel"),
                  "qwen3_vl": ("qwen3_vl", "Qwen3VLVisionModel"),
                  "qwen3_5": ("qwen3_5", "Qwen3_5VisionModel")}
# Grid reductions keep the merger's groups neighbours and M-RoPE consistent; nothing else does.
GRID_METHODS = ("none", "pool", "bilinear")
# The additive mask outside a window: far below any attention logit, finite in fp16 (max 65504).
MASKED = -30000.0


@dataclass(frozen=True)
class QwenFacts:
    """What the static path needs of a Qwen vision config.

    Attributes:
        model_type: the VLM model_type (a QWEN_TYPES entry).
        patch, temporal, merge: patch_size, temporal_patch_size, spatial_merge_size.
        depth, width, heads, out: blocks, tower channels, heads, merger output channels.
        window: Qwen2.5-VL's window_size in pixels (None for the others).
        fullatt: Qwen2.5-VL's fullatt_block_indexes (blocks with attention over the whole tile).
        deepstack: Qwen3-VL's deepstack_visual_indexes.
        pos_table: Qwen3's learned position table side (num_position_embeddings ** 0.5), 0 without one.
    """

    model_type: str
    patch: int
    temporal: int
    merge: int
    depth: int
    width: int
    heads: int
    out: int
    window: int | None
    fullatt: tuple[int, ...]
    deepstack: tuple[int, ...]
    pos_table: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def qwen_facts(model_type: str, vlm_config) -> QwenFacts:
    """QwenFacts of a VLM config object (transformers' class, defaults completed)."""
    vision = vlm_config.vision_config
    s = qwen_shape(model_type, vision)
    windowed = model_type == "qwen2_5_vl"
    n_pos = int(getattr(vision, "num_position_embeddings", 0) or 0) if model_type in ("qwen3_vl", "qwen3_5") else 0
    return QwenFacts(model_type=model_type, patch=s.patch, temporal=s.temporal, merge=s.merge, depth=s.depth,
                     width=s.width, heads=s.heads, out=s.out,
                     window=int(vision.window_size) if windowed else None,
                     fullatt=tuple(int(i) for i in vision.fullatt_block_indexes) if windowed else (),
                     deepstack=s.deepstack, pos_table=int(round(n_pos ** 0.5)))


def build_visual(model_type: str, vlm_config) -> nn.Module:
    """transformers' vision model of `model_type` from the VLM config's vision_config, random init, eval."""
    if model_type not in QWEN_TYPES:
        raise ValueError(f"{model_type} is not a Qwen-VL model_type")
    module, cls = VISION_CLASSES[model_type]
    mod = importlib.import_module(f"transformers.models.{module}.modeling_{module}")
    vision = vlm_config.vision_config
    vision._attn_implementation = "sdpa"
    return getattr(mod, cls)._from_config(vision).eval()


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


class QwenTower(VisionTower):
    """pixel_values [B, 3, H, W] → the last hidden state [B, (H/p)·(W/p), width] in raster order.

    Args:
        spec: the tower's EncoderSpec (qwen_spec.qwen_encoder_spec: grid H/p × W/p, no prefix tokens).
        visual: transformers' vision model (build_visual), whose modules are called.
        facts: the QwenFacts.
        image_size: the tile (H, W).
    """

    # Its own forward (window order, DeepStack taps) calls block_tap after every block (export/block_taps.py).
    calls_block_tap = True

    def __init__(self, spec: EncoderSpec, visual: nn.Module, facts: QwenFacts, image_size: tuple[int, int]):
        super().__init__(spec, -1, final_norm_on_last=False)
        from transformers.vision_utils import (
            get_vision_interpolation_indices_and_weights,
            get_vision_position_ids,
            get_vision_window_index,
        )

        self.visual = visual
        self.facts = facts
        h, w = int(image_size[0]), int(image_size[1])
        p, m = facts.patch, facts.merge
        if h % (p * m) or w % (p * m):
            raise InputError(f"tile {h}x{w} is not a multiple of patch × merge = {p * m}",
                             "choose --image-size within the processor's limits (qwen_spec.qwen_rule)")
        self.grid = (h // p, w // p)
        n = self.grid[0] * self.grid[1]
        thw = torch.tensor([[1, self.grid[0], self.grid[1]]])
        # Every table in transformers' token order (merge blocks), as its forward computes it for this grid.
        with torch.no_grad():
            pos_ids = get_vision_position_ids(thw, m)
            cos, sin = visual.rotary_pos_emb(torch.zeros(n, facts.width), pos_ids)
        self.register_buffer("cos", cos.float(), persistent=False)
        self.register_buffer("sin", sin.float(), persistent=False)
        if facts.pos_table:
            idx, wts = get_vision_interpolation_indices_and_weights(
                thw, num_grid_per_side=visual.num_grid_per_side, mode=visual.interpolation_mode,
                align_corners=visual.interpolation_align_corners, spatial_merge_size=m)
            self.register_buffer("pos_index", idx.long(), persistent=False)
            self.register_buffer("pos_weight", wts.float(), persistent=False)
        else:
            self.pos_index = self.pos_weight = None
        unit = m * m
        if facts.window is not None:
            window_index, cu = get_vision_window_index(thw, m, facts.window, p)
            self.register_buffer("window_index", window_index.long(), persistent=False)
            self.register_buffer("window_reverse", torch.argsort(window_index).long(), persistent=False)
            # The tables follow the tokens into window order (transformers' permute_input_for_window_attn).
            self.cos = self.cos.reshape(n // unit, unit, -1)[window_index].reshape(n, -1)
            self.sin = self.sin.reshape(n // unit, unit, -1)[window_index].reshape(n, -1)
            win = torch.zeros(n, dtype=torch.long)
            for i, (a, b) in enumerate(zip(cu[:-1].tolist(), cu[1:].tolist())):
                win[a:b] = i
            mask = torch.where(win[:, None] == win[None, :], 0.0, MASKED)
            self.register_buffer("window_mask", mask, persistent=False)
        else:
            self.window_index = self.window_reverse = self.window_mask = None
        self.deepstack_out: list[torch.Tensor] = []

    # -- VisionTower hooks ------------------------------------------------------------------------
    @property
    def blocks(self) -> nn.ModuleList:
        return self.visual.blocks

    @property
    def final_norm(self) -> nn.Module:
        return nn.Identity()  # the merger holds Qwen's only norm after the blocks

    @property
    def model_type(self) -> str:
        return self.facts.model_type

    def to_merge_order(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """[B, h·w, C] raster → merge-block order (m×m neighbours consecutive, blocks in raster order)."""
        b, _, c = x.shape
        m = self.facts.merge
        gh, gw = grid
        x = x.reshape(b, gh // m, m, gw // m, m, c).permute(0, 1, 3, 2, 4, 5)
        return x.reshape(b, gh * gw, c)

    def to_raster(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """The inverse of to_merge_order."""
        b, _, c = x.shape
        m = self.facts.merge
        gh, gw = grid
        x = x.reshape(b, gh // m, gw // m, m, m, c).permute(0, 1, 3, 2, 4, 5)
        return x.reshape(b, gh * gw, c)

    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Patch embedding (+ Qwen3's interpolated positions), in transformers' token order."""
        pe = self.visual.patch_embed
        conv = pe.proj
        b, c, h, w = pixel_values.shape
        # The processor repeats a still image over the temporal patch; Conv3d with stride = kernel over the
        # image expanded in time is the per-patch Conv3d transformers runs on the flattened patches.
        x = pixel_values.to(conv.weight.dtype).unsqueeze(2).expand(b, c, self.facts.temporal, h, w)
        x = conv(x).flatten(2).transpose(1, 2)  # [B, gh·gw, width], raster
        x = self.to_merge_order(x, self.grid)
        if self.pos_index is not None:
            pos = (self.visual.pos_embed(self.pos_index) * self.pos_weight[:, :, None]).sum(1)
            x = x + pos.to(x.dtype)
        if self.window_index is not None:
            x = self._units(x)[:, self.window_index].reshape(x.shape)
        return x

    def _units(self, x: torch.Tensor) -> torch.Tensor:
        m2 = self.facts.merge ** 2
        return x.reshape(x.shape[0], x.shape[1] // m2, m2, x.shape[2])

    def attention(self, block: nn.Module, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """transformers' vision attention (qkv, 2-D rotary in fp32, softmax in fp32, proj) on [B, N, C]."""
        attn = block.attn
        b, n, c = x.shape
        heads = attn.num_heads
        q, k, v = attn.qkv(x).reshape(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4).unbind(0)  # [B, H, N, d]
        dtype = q.dtype
        cos, sin = self.cos, self.sin
        q = (q.float() * cos + _rotate_half(q.float()) * sin).to(dtype)
        k = (k.float() * cos + _rotate_half(k.float()) * sin).to(dtype)
        scores = torch.matmul(q, k.transpose(-1, -2)) * attn.scaling
        if mask is not None:
            scores = scores + mask.to(scores.dtype)
        probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(dtype)
        out = torch.matmul(probs, v).transpose(1, 2).reshape(b, n, c)
        return attn.proj(out)

    def run_block(self, block: nn.Module, x: torch.Tensor, index: int = 0) -> torch.Tensor:
        windowed = self.window_mask is not None and index not in self.facts.fullatt
        x = x + self.attention(block, block.norm1(x), self.window_mask if windowed else None)
        return x + block.mlp(block.norm2(x))

    def _to_raster(self, x: torch.Tensor) -> torch.Tensor:
        if self.window_reverse is not None:
            x = self._units(x)[:, self.window_reverse].reshape(x.shape)
        return self.to_raster(x, self.grid)

    def forward(self, pixel_values: torch.Tensor, with_cls_attention: bool = False, with_probe: bool = False):
        x = self.embed(pixel_values)
        self.deepstack_out = []
        for i in range(self.num_used):
            x = self.run_block(self.blocks[i], x, i)
            if self.block_tap is not None:
                self.block_tap(i, x, None)
            if i in self.facts.deepstack:
                self.deepstack_out.append(self._to_raster(x))
        return self._to_raster(x), None


class QwenVisionPath(nn.Module):
    """pixel_values → tokens [B, T, out] (+ Qwen3-VL's DeepStack features, each [B, T, out]).

    Args:
        tower: the QwenTower.
        compression: the extra compression's plan on the raster patch grid (none, pool, bilinear: the plan
            refuses the rest); its grid_out is what the merger reads.
        merger: apply the merger (False: `--no-projector`, the tokens in merge-block order as the merger sees them).
    """

    def __init__(self, tower: QwenTower, compression: CompressionPlan, merger: bool = True):
        super().__init__()
        # plan_vlm refuses these before anything is built; a direct caller gets the same answer here.
        spec, m = compression.spec, tower.facts.merge
        if spec.method not in GRID_METHODS:
            raise SpecError(f"{spec.text} would break the Qwen merger's {m}×{m} groups and the LLM's M-RoPE "
                            "positions", "use pool:F or bilinear:HxW on Qwen (or none)")
        gh, gw = compression.grid_out
        if gh % m or gw % m:
            raise SpecError(f"{spec.text} gives a {gh}x{gw} patch grid, which the merge size {m} does not divide",
                            f"pick a compression whose grid is a multiple of {m} per side")
        self.tower = tower
        self.compressor = TokenCompressor(compression)
        self.grid = tuple(compression.grid_out)
        self.merger = tower.visual.merger if merger else None
        self.deepstack = list(tower.visual.deepstack_merger_list) if merger and tower.facts.deepstack else []

    def _merge(self, merger: nn.Module, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        x = self.tower.to_merge_order(x, self.grid)
        y = merger(x.reshape(-1, x.shape[-1]))
        return y.reshape(b, -1, y.shape[-1])

    def forward(self, pixel_values: torch.Tensor):
        x, _ = self.tower(pixel_values)
        x = self.compressor(x)
        if self.merger is None:
            return self.tower.to_merge_order(x, self.grid)
        tokens = self._merge(self.merger, x)
        if not self.deepstack:
            return tokens
        feats = [self._merge(mg, self.compressor(h)) for mg, h in zip(self.deepstack, self.tower.deepstack_out)]
        return (tokens, *feats)

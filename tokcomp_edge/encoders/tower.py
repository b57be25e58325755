"""The one interface every encoder family implements: run the encoder up to a chosen layer.

A `VisionTower` maps pixel_values [B, 3, H, W] (float32, normalised) to tokens [B, prefix + grid, C],
stopping after the selected hidden layer so that layers nobody reads are not computed (LLaVA reads the
penultimate layer: the last block would be dead weight in the engine). It can also return the CLS
token's attention row in the last block it runs, computed separately from the block's own (fused)
attention so that no layer has to materialise its full attention matrix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .spec import EncoderSpec


def resolve_layer(layer: int, num_layers: int) -> int:
    """Map `--layer` (python-style index over the block outputs; -1 = last) to a count of blocks to run.

    Raises ValueError when out of range; callers turn that into an InputError naming the encoder.
    """
    idx = layer if layer >= 0 else num_layers + 1 + layer
    # hidden_states has num_layers + 1 entries: [embeddings, block1, ..., blockL]; index 0 is the embedding.
    if not 1 <= idx <= num_layers:
        raise ValueError(f"layer {layer} is outside 1..{num_layers} (or -{num_layers}..-1)")
    return idx


@dataclass
class BlockParts:
    """A pre-norm transformer block taken apart, for ToMe, which acts between its attention residual and its MLP.

    x → x + ls1(out(attention(qkv(norm1(x)))))  → [merge] →  x + ls2(mlp(norm2(x)))

    Attributes:
        qkv: normed input [B, T, C] → (q, k, v), each [B, H, T, d], after any q/k norm.
        scale: attention logit scale (None: d^-0.5).
        ls1, ls2: LayerScale (nn.Identity where the family has none).
    """

    norm1: nn.Module
    qkv: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
    out: nn.Module
    scale: float | None
    ls1: nn.Module
    norm2: nn.Module
    mlp: nn.Module
    ls2: nn.Module


def split_heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    """[B, T, H·d] → [B, H, T, d]."""
    b, n, c = t.shape
    return t.reshape(b, n, heads, c // heads).transpose(1, 2)


def attention_residual(parts: BlockParts, x: torch.Tensor, bias: torch.Tensor | None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """The block's attention half with an additive logit bias; returns (x, the keys per head [B, H, T, d])."""
    q, k, v = parts.qkv(parts.norm1(x))
    # SDPA with a float mask: the fused-attention pattern TensorRT accepts (a mask added to the logits).
    o = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=parts.scale)
    b, h, t, d = o.shape
    return x + parts.ls1(parts.out(o.transpose(1, 2).reshape(b, t, h * d))), k


def mlp_residual(parts: BlockParts, x: torch.Tensor) -> torch.Tensor:
    return x + parts.ls2(parts.mlp(parts.norm2(x)))


class VisionTower(nn.Module):
    """Base class of family adapters. Subclasses set the attributes and implement three hooks.

    Subclasses must provide:
        embed(pixel_values) -> [B, T, C]: patch + position embedding, prefix tokens, any pre-norm.
        blocks: nn.ModuleList of transformer blocks; run_block(block, x) -> x.
        final_norm: the norm applied after the last block (nn.Identity when the family has none).
        attention_qk(block, x, q_rows) -> (q, k, num_heads, scale): `block`'s projected queries (the
            first q_rows tokens, or all when None) and keys, after any q/k norm, given the block's input
            x. It drives `cls_attention` (prune:K:cls-attn) and `attention_probe` (VisionZip).
    """

    spec: EncoderSpec
    # Set only while the exporter traces (export/block_taps.py): called with (block index, the block's
    # output, ToMe's patch → row map or None) after every block run, so that the blocks are recorded
    # while the module tree is known instead of being guessed from the graph afterwards.
    block_tap = None

    def __init__(self, spec: EncoderSpec, layer: int = -1, final_norm_on_last: bool = True):
        super().__init__()
        self.spec = spec
        self.layer = layer
        self.num_used = resolve_layer(layer, spec.num_layers)
        # The family's final norm belongs to its "last hidden state"; intermediate layers are raw.
        self.apply_final_norm = final_norm_on_last and self.num_used == spec.num_layers

    # -- hooks -----------------------------------------------------------------------------------
    # Hooks of the generic forward below. Not abstract: a tower that overrides forward itself (the
    # py: wrapper, whose user module is one opaque stage) has no blocks to expose.
    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Patch + position embedding, prefix tokens and any pre-norm: [B,3,H,W] → [B, T, C]."""
        raise NotImplementedError(f"{type(self).__name__} must implement embed() or override forward()")

    def run_block(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """One transformer block."""
        raise NotImplementedError(f"{type(self).__name__} must implement run_block() or override forward()")

    def attention_qk(self, block: nn.Module, x: torch.Tensor, q_rows: int | None = None):
        """(q [B, q_rows or T, C], k [B, T, C], num_heads, scale) of `block`'s attention given its input x."""
        from ..errors import InputError

        raise InputError(f"tokcomp does not read the attention inside {self.spec.name}'s blocks",
                         "use a compression that acts on the output tokens (pool, bilinear, prune:K:norm)")

    def block_parts(self, block: nn.Module) -> BlockParts:
        """`block` taken apart for ToMe (families that support it override this)."""
        from ..errors import InputError

        raise InputError(f"tokcomp cannot merge tokens inside {self.spec.name}'s blocks",
                         "ToMe runs on CLIP, SigLIP, DINOv2, ViT, InternViT and timm ViT towers; use a "
                         "compression on the output tokens here")

    def cls_attention(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The CLS row of `block`'s attention, mean over heads ([B, T])."""
        from ..errors import InputError

        if not self.spec.has_cls:
            raise InputError(f"{self.spec.name} has no CLS token, so it has no CLS attention",
                             "use a pruning score that does not need CLS (e.g. prune:K:norm)")
        # Only the CLS query is projected: the block's own attention stays fused and nothing T×T is built.
        return cls_attention_row(*self.attention_qk(block, x, 1))

    def attention_probe(self, block: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """What VisionZip reads in `block`: (importance [B, T], keys [B, T, C / heads]).

        importance: with a CLS token, the CLS query's attention over the tokens (mean over heads: the
            same ranking as VisionZip's sum over heads); without one (SigLIP), the mean attention each
            token receives over all queries and heads — the column mean of the attention matrix, the
            natural "how much is this token looked at" when no token summarises the image.
        keys: the block's keys averaged over heads (VisionZip's similarity metric), pre-normalisation.
        """
        q, k, heads, scale = self.attention_qk(block, x, 1 if self.spec.has_cls else None)
        b, t, c = k.shape
        d = c // heads
        kh = k.reshape(b, t, heads, d)
        keys = kh.mean(dim=2)
        if self.spec.has_cls:
            return cls_attention_row(q, k, heads, scale), keys
        qh = q.reshape(b, t, heads, d).transpose(1, 2)  # [B, H, T, d]
        # One layer materialises its T×T attention here, computed beside the block's fused attention.
        probs = ((qh @ kh.permute(0, 2, 3, 1)) * (scale if scale is not None else d ** -0.5)).softmax(dim=-1)  # [B, H, T(query), T(key)]
        return probs.mean(dim=(1, 2)), keys

    def forward_tome(self, pixel_values: torch.Tensor, schedule: tuple[int, ...]):
        """The forward with ToMe in every block run: block i merges schedule[i] tokens after its attention.

        Proportional attention from the first merge on: log(size) of each key is added to the logits
        (before any merge every size is 1 and the bias is left out). Prefix tokens are protected.
        Returns:
            (tokens [B, T_out, C], (sizes [B, T_out] float, source [B, N] int64: the token each patch is in)).
        """
        from ..compression.tome import attention_bias, tome_block

        x = self.embed(pixel_values)
        b, t, _ = x.shape
        p = self.spec.prefix_tokens
        size = None  # every size is 1 until the first merge
        source = (torch.arange(p, t, device=x.device)).expand(b, -1)
        bias = None
        for i in range(self.num_used):
            parts = self.block_parts(self.blocks[i])
            x, keys = attention_residual(parts, x, bias)
            if schedule[i]:
                x, size, source = tome_block(x, size, source, keys, schedule[i], p)
                bias = attention_bias(size)
            x = mlp_residual(parts, x)
            if self.block_tap is not None:
                self.block_tap(i, x, source)
        if self.apply_final_norm:
            x = self.final_norm(x)
        if size is None:
            size = torch.ones(b, x.shape[1], 1, dtype=x.dtype, device=x.device)
        return x, (size.squeeze(-1), source)

    # -- the shared forward ------------------------------------------------------------------------
    def forward(self, pixel_values: torch.Tensor, with_cls_attention: bool = False, with_probe: bool = False):
        """Returns (tokens [B, T, C], cls_attn [B, T] or None), or with_probe: (tokens, attention_probe of
        the last block run)."""
        x = self.embed(pixel_values)
        attn = None
        for i in range(self.num_used):
            block = self.blocks[i]
            if i == self.num_used - 1:
                if with_probe:
                    attn = self.attention_probe(block, x)
                elif with_cls_attention:
                    attn = self.cls_attention(block, x)
            x = self.run_block(block, x)
            if self.block_tap is not None:
                self.block_tap(i, x, None)
        if self.apply_final_norm:
            x = self.final_norm(x)
        return x, attn


def cls_attention_row(q_cls: torch.Tensor, k: torch.Tensor, num_heads: int,
                      scale: float | None = None) -> torch.Tensor:
    """Mean-over-heads softmax attention of one query token over all keys.

    Args:
        q_cls: [B, 1, C] projected query of the CLS token (after any q-norm).
        k: [B, T, C] projected keys.
        scale: the logit scale (default d^-0.5).
    Returns:
        [B, T] attention probabilities, averaged over heads.
    """
    b, t, c = k.shape
    d = c // num_heads
    qh = q_cls.reshape(b, 1, num_heads, d).transpose(1, 2)  # [B, H, 1, d]
    kh = k.reshape(b, t, num_heads, d).transpose(1, 2)  # [B, H, T, d]
    s = (qh @ kh.transpose(-1, -2)) * (scale if scale is not None else d ** -0.5)  # [B, H, 1, T]
    return s.softmax(dim=-1).mean(dim=1).squeeze(1)

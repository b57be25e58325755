"""Thin nn.Module wrappers: the compressor, and the encoder + compressor that gets exported."""

from __future__ import annotations

import torch
from torch import nn

from . import functional as Fc
from .plan import CompressionPlan
from .visionzip import visionzip_tokens


class TokenCompressor(nn.Module):
    """Applies a CompressionPlan to encoder tokens [B, P + h·w, C].

    Prefix tokens (CLS, registers) are split off first and, with prefix=keep, put back in front of the
    compressed patch tokens unchanged. Returns tokens, or (tokens, *plan.extra_outputs): (tokens, indices)
    for prune, (tokens, indices, merge_map) for visionzip.
    """

    def __init__(self, plan: CompressionPlan):
        super().__init__()
        self.plan = plan
        self.method = plan.spec.method
        self.params = dict(plan.spec.params)
        h, w = plan.grid_in
        if self.method == "pool" and self.params["mode"] == "avg" and (h % self.params["size"] or w % self.params["size"]):
            # A buffer, so it is a graph constant (an initializer) and built once, not per forward.
            self.register_buffer("pool_matrix", Fc.pooling_matrix(h, w, self.params["size"]), persistent=False)
        else:
            self.pool_matrix = None

    @property
    def needs_cls_attention(self) -> bool:
        return self.method == "prune" and self.params["score"] == "cls-attn"

    @property
    def needs_tome(self) -> bool:
        """ToMe merges inside every block the tower runs (VisionTower.forward_tome)."""
        return self.method == "tome"

    @property
    def needs_probe(self) -> bool:
        """VisionZip reads the used layer's attention importance and keys (VisionTower.attention_probe)."""
        return self.method == "visionzip"

    def tower_outputs(self, tower: nn.Module, pixel_values: torch.Tensor):
        """Run `tower` asking for exactly what this compressor reads: (tokens, attention row / probe / None)."""
        if self.needs_probe:
            return tower(pixel_values, with_probe=True)
        if self.needs_tome:
            return tower.forward_tome(pixel_values, self.plan.schedule)
        return tower(pixel_values, with_cls_attention=self.needs_cls_attention)

    def forward(self, tokens: torch.Tensor, aux=None):
        """Args:
            tokens: the tower's output [B, P + h·w, C] (for tome: already merged, [B, P + h·w − ΣR, C]).
            aux: what `tower_outputs` returned beside the tokens: the CLS attention row (prune:cls-attn),
                (importance, keys) (visionzip) or (sizes, source) (tome); None otherwise.
        """
        plan = self.plan
        p = plan.prefix_in
        prefix, x = tokens[:, :p], tokens[:, p:]
        h, w = plan.grid_in
        indices = merge_map = None
        if self.method == "tome":
            # The tower merged already; what is left is the prefix policy. Prefix tokens are protected and
            # kept in front, so dropping them is a slice, and map rows shift by the dropped count.
            sizes, source = aux
            if plan.prefix_out:
                return tokens, sizes, source
            return tokens[:, p:], sizes[:, p:], source - p
        if self.method == "none":
            y = x
        elif self.method == "pool":
            y = Fc.pool_tokens(x, h, w, self.params["size"], self.params["mode"], self.pool_matrix)
        elif self.method == "bilinear":
            y = Fc.bilinear_tokens(x, h, w, self.params["height"], self.params["width"])
        elif self.method == "unshuffle":
            r = self.params["factor"]
            x, hp, wp = Fc.pad_grid(x, h, w, r) if self.params["pad"] else (x, h, w)
            y = Fc.unshuffle_tokens(x, hp, wp, r, self.params["order"])
        elif self.method == "visionzip":
            if aux is None:
                raise ValueError("visionzip needs the tower's attention probe (importance, keys)")
            importance, keys = aux
            y, indices, merge_map = visionzip_tokens(x, importance[:, p:], keys[:, p:], self.params["dominant"],
                                                     self.params["contextual"], plan.prefix_out)
        else:
            y, indices = Fc.prune_tokens(x, self._scores(prefix, x, aux), self.params["k"])
        if plan.prefix_out:
            y = torch.cat([prefix, y], dim=1)
        if merge_map is not None:
            return y, indices, merge_map
        return y if indices is None else (y, indices)

    def _scores(self, prefix: torch.Tensor, x: torch.Tensor, cls_attn: torch.Tensor | None) -> torch.Tensor:
        score = self.params["score"]
        if score == "norm":
            return Fc.norm_scores(x)
        if score == "cls-sim":
            # Similarity to CLS where the encoder has one; SigLIP-style encoders use the mean token.
            ref = prefix[:, 0] if self.plan.has_cls else x.mean(dim=1)
            return Fc.similarity_scores(x, ref)
        if cls_attn is None:
            raise ValueError("cls-attn scoring needs the CLS attention row from the tower")
        return cls_attn[:, self.plan.prefix_in:]


class CompressedEncoder(nn.Module):
    """Encoder tower + compressor: pixel_values [B,3,H,W] → tokens [B, T_out, C_out] (+ indices [B,K], + merge_map
    [B, N] for visionzip)."""

    def __init__(self, tower: nn.Module, plan: CompressionPlan):
        super().__init__()
        self.tower = tower
        self.compressor = TokenCompressor(plan)
        check_tower_supports(tower, self.compressor)

    def forward(self, pixel_values: torch.Tensor):
        tokens, attn = self.compressor.tower_outputs(self.tower, pixel_values)
        return self.compressor(tokens, attn)


def check_tower_supports(tower: nn.Module, compressor: TokenCompressor) -> None:
    """Compression inside the encoder needs the generic block loop; a tower with its own forward (the
    py: wrapper, one opaque stage) cannot offer it. InputError (exit 2) before anything is traced."""
    from ..encoders.tower import VisionTower
    from ..errors import InputError

    inside = compressor.needs_probe or compressor.needs_tome
    if inside and (not isinstance(tower, VisionTower) or type(tower).forward is not VisionTower.forward):
        name = getattr(getattr(tower, "spec", None), "name", type(tower).__name__)
        raise InputError(f"{compressor.plan.spec.text} reads the attention inside {name}'s blocks, which "
                         "tokcomp cannot see in a tower with its own forward",
                         "use a compression on the output tokens (pool, bilinear, prune:K:norm)")
    if compressor.needs_tome and tower.num_used:
        # A family without block_parts raises its InputError here, before tracing (inside the exporter it
        # would surface as an export failure, exit 1, with the exporter's own text).
        tower.block_parts(tower.blocks[0])

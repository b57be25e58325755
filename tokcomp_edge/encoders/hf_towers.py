"""VisionTower adapters over the HF transformers vision models (CLIP, SigLIP, DINOv2 (+registers), ViT).

Each adapter holds the HF model itself (`self.hf`) and only re-orders the calls its `forward` makes,
so that it can stop after any block; the blocks are HF's own modules, called with the same arguments
HF's encoder loop uses, so outputs match `output_hidden_states=True` to the bit.
Module names follow transformers 5.x (e.g. ViT's `layers`, DINOv2's `encoder.layer`, `q_proj`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import InputError
from .spec import EncoderSpec
from .tower import BlockParts, VisionTower, split_heads

# model_type → (config class, model class) in `transformers`.
HF_CLASSES = {
    "clip_vision_model": ("CLIPVisionConfig", "CLIPVisionModel"),
    "siglip_vision_model": ("SiglipVisionConfig", "SiglipVisionModel"),
    "dinov2": ("Dinov2Config", "Dinov2Model"),
    "dinov2_with_registers": ("Dinov2WithRegistersConfig", "Dinov2WithRegistersModel"),
    "vit": ("ViTConfig", "ViTModel"),
    # The towers of VLM checkpoints (built from the VLM's vision_config by tokcomp_edge.vlm).
    "internvl_vision": ("InternVLVisionConfig", "InternVLVisionModel"),
    "idefics3_vision": ("Idefics3VisionConfig", "Idefics3VisionTransformer"),
    "smolvlm_vision": ("SmolVLMVisionConfig", "SmolVLMVisionTransformer"),
    "siglip2_vision_model": ("Siglip2VisionConfig", "Siglip2VisionModel"),  # LFM2-VL's NaFlex tower
}

# Checkpoint keys of heads the tower never runs (projection, pooling, classifier); dropped when the
# built model has no such parameter, so a classification or contrastive checkpoint loads as a tower.
HEAD_PREFIXES = {
    "clip_vision_model": ("visual_projection.", "text_projection.", "logit_scale"),
    "siglip_vision_model": ("head.", "logit_scale", "logit_bias"),
    "dinov2": ("classifier.", "mask_token"),
    "dinov2_with_registers": ("classifier.",),
    "vit": ("classifier.", "pooler."),
    "internvl_vision": (),
    "idefics3_vision": (),
    "smolvlm_vision": (),
    "siglip2_vision_model": ("head.",),
}

# How HF's `interpolate_pos_encoding` resamples each family's position table (bicubic, no corners);
# DINOv2-with-registers alone antialiases. Applied once at load time instead of at every forward.
POS_EMBED = {
    "clip_vision_model": ("embeddings.position_embedding.weight", 1, False),
    "siglip_vision_model": ("embeddings.position_embedding.weight", 0, False),
    "dinov2": ("embeddings.position_embeddings", 1, False),
    "dinov2_with_registers": ("embeddings.position_embeddings", 1, True),
    "vit": ("embeddings.position_embeddings", 1, False),
    "internvl_vision": ("embeddings.position_embeddings", 1, False),
    "idefics3_vision": ("embeddings.position_embedding.weight", 0, False),
    "smolvlm_vision": ("embeddings.position_embedding.weight", 0, False),
    # SigLIP2 resizes its table to each grid itself (bilinear, antialias): siglip2_tower.py holds that.
    "siglip2_vision_model": ("embeddings.position_embedding.weight", 0, True),
}


def build_hf_model(model_type: str, hf: dict[str, Any], attn_implementation: str = "sdpa") -> nn.Module:
    """Construct an HF vision model from config kwargs (random init from the current torch RNG).

    Args:
        model_type: a key of HF_CLASSES.
        hf: config kwargs.
        attn_implementation: `sdpa` for export, `eager` when attention weights must be returned.
    Returns:
        The model, in eval mode.
    """
    import transformers

    cfg_name, model_name = HF_CLASSES[model_type]
    try:
        config = getattr(transformers, cfg_name)(**hf, attn_implementation=attn_implementation)
    except Exception as exc:  # noqa: BLE001 - HF raises ValueError, TypeError or its own dataclass errors
        raise InputError(f"{cfg_name} rejects this configuration ({str(exc).strip().splitlines()[-1]})",
                         "fix the config (hidden size must divide by the head count, sizes be positive)") from exc
    kwargs = {"add_pooling_layer": False} if model_type == "vit" else {}
    model = getattr(transformers, model_name)(config, **kwargs)
    return model.eval()


class HFTower(VisionTower):
    """Shared part of the HF adapters: holds the model and adapts checkpoints to it."""

    def __init__(self, spec: EncoderSpec, model: nn.Module, layer: int = -1, final_norm_on_last: bool = True):
        super().__init__(spec, layer, final_norm_on_last)
        self.hf = model

    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.hf.embeddings(pixel_values)

    def run_block(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        # Every HF vision block takes (hidden_states, attention_mask); the towers never mask.
        return block(x, None)

    @property
    def model_type(self) -> str:
        return self.spec.config["model_type"]

    @property
    def core(self) -> nn.Module:
        """The module whose state dict a weights file fills."""
        return self.hf

    def adapt_state_dict(self, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Map a checkpoint's keys onto `self.hf`: vision subset, legacy names, heads, position grid.

        Accepts the tower model's own state dict, a full CLIP/SigLIP one (`vision_model.*` is taken),
        a task model's (`vit.*`, `dinov2.*` prefixes), and pre-5.0 transformers key names.
        """
        from .weights import resample_pos_table

        if any(k.startswith("vision_model.") for k in sd):
            sd = {k[len("vision_model."):]: v for k, v in sd.items() if k.startswith("vision_model.")}
        target = self.hf.state_dict()
        sd = _rename_legacy(self.hf, sd, target)
        heads = HEAD_PREFIXES[self.model_type]
        sd = {k: v for k, v in sd.items() if k in target or not k.startswith(heads)}
        key, prefix, antialias = POS_EMBED[self.model_type]
        if key in sd and key in target and sd[key].shape != target[key].shape:
            table = resample_pos_table(sd[key], target[key].shape, prefix, antialias)
            if table is not None:
                sd[key] = table
        return sd


def _rename_legacy(model: nn.Module, sd: dict[str, torch.Tensor],
                   target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Apply transformers' own checkpoint renamings (what from_pretrained does), if this version has them.

    transformers 5 renamed e.g. ViT's `encoder.layer.N.attention.attention.query` to
    `layers.N.attention.q_proj`; checkpoints on disk mostly carry the old names. Only keys that do not
    already match the model are renamed.
    """
    try:
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import WeightConverter, rename_source_key
    except ImportError:  # an older transformers loads the old names natively
        return sd
    transforms = get_model_conversion_mapping(model)
    renamings = [t for t in transforms if not isinstance(t, WeightConverter)]
    converters = [t for t in transforms if isinstance(t, WeightConverter)]
    prefix = getattr(model, "base_model_prefix", None)
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        if k not in target:
            k, _ = rename_source_key(k, renamings, converters, base_model_prefix=prefix, meta_state_dict=target)
        out[k] = v
    return out


def _parts(norm1, attn, out, heads: int, scale, norm2, mlp, ls1=None, ls2=None) -> BlockParts:
    def qkv(h):
        return (split_heads(attn.q_proj(h), heads), split_heads(attn.k_proj(h), heads),
                split_heads(attn.v_proj(h), heads))

    return BlockParts(norm1=norm1, qkv=qkv, out=out, scale=scale, ls1=ls1 or nn.Identity(), norm2=norm2, mlp=mlp,
                      ls2=ls2 or nn.Identity())


def _self_attn_parts(block: nn.Module) -> BlockParts:
    """CLIP-style block (layer_norm1 → self_attn → layer_norm2 → mlp): CLIP, SigLIP, Idefics3/SmolVLM."""
    a = block.self_attn
    return _parts(block.layer_norm1, a, a.out_proj, a.num_heads, a.scale, block.layer_norm2, block.mlp)


def _self_attn_qk(block: nn.Module, x: torch.Tensor, q_rows: int | None):
    """q/k of the CLIP-style block (layer_norm1 → self_attn), shared by CLIP, SigLIP and Idefics3/SmolVLM."""
    attn = block.self_attn
    h = block.layer_norm1(x)
    return attn.q_proj(h[:, :q_rows]), attn.k_proj(h), attn.num_heads, attn.scale


# -- the families -----------------------------------------------------------------------------------


class CLIPTower(HFTower):
    """CLIPVisionModel: embeddings → pre_layrnorm → encoder.layers."""

    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.hf.pre_layrnorm(self.hf.embeddings(pixel_values))

    @property
    def blocks(self) -> nn.ModuleList:
        return self.hf.encoder.layers

    @property
    def final_norm(self) -> nn.Module:
        # HF's CLIP last_hidden_state is the raw output of the last block: post_layernorm is applied
        # only to the pooled CLS vector, so applying it to every token would not match HF (or LLaVA).
        return nn.Identity()

    def attention_qk(self, block: nn.Module, x: torch.Tensor, q_rows: int | None = None):
        return _self_attn_qk(block, x, q_rows)

    def block_parts(self, block: nn.Module) -> BlockParts:
        return _self_attn_parts(block)


class SiglipTower(HFTower):
    """SiglipVisionModel (no head): embeddings → encoder.layers → post_layernorm. No CLS token."""

    def attention_qk(self, block: nn.Module, x: torch.Tensor, q_rows: int | None = None):
        return _self_attn_qk(block, x, q_rows)

    def block_parts(self, block: nn.Module) -> BlockParts:
        return _self_attn_parts(block)

    @property
    def blocks(self) -> nn.ModuleList:
        return self.hf.encoder.layers

    @property
    def final_norm(self) -> nn.Module:
        return self.hf.post_layernorm


class Dinov2Tower(HFTower):
    """Dinov2Model / Dinov2WithRegistersModel: embeddings (CLS, registers) → encoder.layer → layernorm."""

    @property
    def blocks(self) -> nn.ModuleList:
        return self.hf.encoder.layer

    @property
    def final_norm(self) -> nn.Module:
        return self.hf.layernorm

    def attention_qk(self, block: nn.Module, x: torch.Tensor, q_rows: int | None = None):
        attn = block.attention
        h = block.norm1(x)
        return attn.q_proj(h[:, :q_rows]), attn.k_proj(h), attn.num_attention_heads, attn.scaling

    def block_parts(self, block: nn.Module) -> BlockParts:
        a = block.attention
        # LayerScale is part of the block (ToMe's timm patch skips it; here it is applied where it belongs).
        return _parts(block.norm1, a, a.o_proj, a.num_attention_heads, a.scaling, block.norm2, block.mlp,
                      block.layer_scale1, block.layer_scale2)


class ViTTower(HFTower):
    """ViTModel (no pooler): embeddings → layers → layernorm."""

    @property
    def blocks(self) -> nn.ModuleList:
        return self.hf.layers

    @property
    def final_norm(self) -> nn.Module:
        return self.hf.layernorm

    def attention_qk(self, block: nn.Module, x: torch.Tensor, q_rows: int | None = None):
        attn = block.attention
        h = block.layernorm_before(x)
        return attn.q_proj(h[:, :q_rows]), attn.k_proj(h), attn.num_attention_heads, attn.scaling

    def block_parts(self, block: nn.Module) -> BlockParts:
        a = block.attention
        return _parts(block.layernorm_before, a, a.o_proj, a.num_attention_heads, a.scaling, block.layernorm_after,
                      block.mlp)


class InternVLTower(HFTower):
    """InternVLVisionModel (InternViT): embeddings (CLS) → encoder.layer (LayerScale, optional q/k norm) →
    layernorm (Identity when the config mean-pools, as InternVL 2.5/3 do)."""

    @property
    def blocks(self) -> nn.ModuleList:
        return self.hf.encoder.layer

    def run_block(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return block(x)  # InternVLVisionLayer takes no attention mask

    @property
    def final_norm(self) -> nn.Module:
        return self.hf.layernorm

    def attention_qk(self, block: nn.Module, x: torch.Tensor, q_rows: int | None = None):
        attn = block.attention
        h = block.layernorm_before(x)
        # q/k norms (RMSNorm over the full width) act per token, so normalising the CLS query alone is exact.
        q = attn.q_norm(attn.q_proj(h[:, :q_rows]))
        return q, attn.k_norm(attn.k_proj(h)), attn.num_heads, attn.scale

    def block_parts(self, block: nn.Module) -> BlockParts:
        a = block.attention
        heads = a.num_heads

        def qkv(h):  # q/k norms act on the full width, before the heads split (as HF's InternVLVisionAttention)
            return (split_heads(a.q_norm(a.q_proj(h)), heads), split_heads(a.k_norm(a.k_proj(h)), heads),
                    split_heads(a.v_proj(h), heads))

        # LayerScale is a bare parameter here (lambda_1/2), applied where the block applies it.
        return BlockParts(norm1=block.layernorm_before, qkv=qkv, out=a.projection_layer, scale=a.scale,
                          ls1=_Scale(block.lambda_1), norm2=block.layernorm_after, mlp=block.mlp,
                          ls2=_Scale(block.lambda_2))


class _Scale(nn.Module):
    """x ↦ gamma · x for a LayerScale kept as a bare parameter of its block (not registered here: the
    block owns it, so the tower's state dict is unchanged)."""

    def __init__(self, gamma: torch.Tensor):
        super().__init__()
        self.__dict__["gamma"] = gamma  # bypass nn.Module registration

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gamma * x


class Idefics3Tower(SiglipTower):
    """Idefics3VisionTransformer / SmolVLMVisionTransformer (SigLIP with NaViT-style position ids).

    HF computes position ids from the patch attention mask with `bucketize` at every forward. For a full
    tile (every patch valid, which is what a tile of the image splitter is) they are a fixed table, so
    they are computed once here with HF's own formula and kept as a constant: the graph then holds a
    plain Gather instead of data-dependent bucketing. A test checks equality with HF's embeddings.
    """

    def __init__(self, spec: EncoderSpec, model: nn.Module, layer: int = -1, final_norm_on_last: bool = True):
        super().__init__(spec, model, layer, final_norm_on_last)
        emb = model.embeddings
        n = emb.num_patches_per_side
        gh, gw = spec.grid
        boundaries = torch.arange(1 / n, 1.0, 1 / n)
        frac_h = torch.clamp(torch.arange(gh, dtype=torch.float32) * (1.0 / gh), max=1.0 - 1e-6)
        frac_w = torch.clamp(torch.arange(gw, dtype=torch.float32) * (1.0 / gw), max=1.0 - 1e-6)
        bh = torch.bucketize(frac_h, boundaries, right=True)
        bw = torch.bucketize(frac_w, boundaries, right=True)
        self.register_buffer("position_ids", (bh[:, None] * n + bw[None, :]).reshape(1, -1), persistent=False)

    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        emb = self.hf.embeddings
        x = emb.patch_embedding(pixel_values).flatten(2).transpose(1, 2)
        return x + emb.position_embedding(self.position_ids)


TOWERS = {
    "clip_vision_model": CLIPTower,
    "siglip_vision_model": SiglipTower,
    "dinov2": Dinov2Tower,
    "dinov2_with_registers": Dinov2Tower,
    "vit": ViTTower,
    "internvl_vision": InternVLTower,
    "idefics3_vision": Idefics3Tower,
    "smolvlm_vision": Idefics3Tower,
}

# SigLIP2 (NaFlex) lives in its own module, which adds itself to TOWERS on import (it subclasses HFTower,
# so it cannot be imported above this line).
from . import siglip2_tower  # noqa: E402,F401


def build_hf_tower(spec: EncoderSpec, layer: int = -1) -> HFTower:
    """Build the tower of an HF-family spec with random init from the current torch RNG."""
    model_type = spec.config["model_type"]
    model = build_hf_model(model_type, spec.config["hf"])
    return TOWERS[model_type](spec, model, layer)

"""`timm:<name>`: a VisionTower over a timm VisionTransformer (built with pretrained=False).

The model is created with timm's export-friendly settings: `exportable=True` (its layer config for
ONNX: no scripted/JIT activations) and `dynamic_img_size=False` (a static position table instead of a
resample in the graph). The tower runs timm's own pieces in `forward_features` order:
patch_embed → _pos_embed → patch_drop → norm_pre → blocks → norm.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import InputError, UnknownModelError
from .spec import EncoderSpec
from .tower import BlockParts, VisionTower


def build_timm_model(name: str, image_size: int | None = None) -> nn.Module:
    """Create timm model `name` without weights, export-friendly, at `image_size` when given.

    Raises:
        UnknownModelError: timm has no such model.
        InputError: the model is not a ViT-family VisionTransformer.
    """
    import timm
    from timm.models.vision_transformer import VisionTransformer

    if not timm.is_model(name):
        close = timm.list_models(f"*{name.split('_')[0]}*")[:8] if name else []
        raise UnknownModelError(f"timm has no model named {name!r}",
                                f"see timm.list_models(); close names: {', '.join(close) or 'none'}")
    kwargs: dict[str, Any] = dict(pretrained=False, exportable=True, dynamic_img_size=False, num_classes=0)
    if image_size is not None:
        kwargs["img_size"] = image_size
    try:
        model = timm.create_model(name, **kwargs)
    except TypeError as exc:  # non-ViT constructors reject dynamic_img_size / img_size
        raise InputError(f"timm:{name} is not a ViT-family model ({exc})",
                         "tokcomp adapts timm VisionTransformer models (vit_*, deit_*, test_vit, …)") from exc
    if not isinstance(model, VisionTransformer):
        raise InputError(f"timm:{name} is a {type(model).__name__}, not a VisionTransformer",
                         "tokcomp adapts timm VisionTransformer models (vit_*, deit_*, test_vit, …)")
    return model.eval()


def _pair(value: Any) -> tuple[int, int]:
    return (int(value[0]), int(value[1])) if isinstance(value, (tuple, list)) else (int(value), int(value))


def timm_spec(name: str, model: nn.Module, image_size: int | None) -> EncoderSpec:
    """The EncoderSpec of a built timm VisionTransformer."""
    h, w = _pair(model.patch_embed.img_size)
    ph, pw = _pair(model.patch_embed.patch_size)
    if ph != pw:
        raise InputError(f"timm:{name} has a non-square patch {ph}x{pw}", "use a model with square patches")
    if image_size is not None and (h % ph or w % pw):  # a model's own size is taken as published
        raise InputError(f"image size {h}x{w} of timm:{name} is not a multiple of its patch size {ph}",
                         f"use a multiple of {ph}")
    cfg = getattr(model, "pretrained_cfg", None) or {}
    mean = tuple(float(v) for v in cfg.get("mean", (0.485, 0.456, 0.406)))
    std = tuple(float(v) for v in cfg.get("std", (0.229, 0.224, 0.225)))
    return EncoderSpec(
        name=f"timm:{name}", family="timm", source="timm", image_size=(h, w), patch_size=ph,
        prefix_tokens=int(model.num_prefix_tokens), has_cls=model.cls_token is not None,
        hidden_size=int(model.embed_dim), num_layers=len(model.blocks),
        num_heads=int(getattr(model.blocks[0].attn, "num_heads", 1)), mean=mean, std=std,
        # timm ViTs are used here as VLM vision towers (open_clip, SigLIP, DINOv2 via timm), whose
        # consumers read the patch tokens; the CLS / register tokens stay available with --prefix keep.
        default_prefix="drop",
        config={"timm_name": name, "img_size": image_size})


class TimmTower(VisionTower):
    """VisionTower over timm's VisionTransformer."""

    def __init__(self, spec: EncoderSpec, model: nn.Module, layer: int = -1):
        super().__init__(spec, layer)
        self.timm = model

    @property
    def core(self) -> nn.Module:
        return self.timm

    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        m = self.timm
        x = m.patch_embed(pixel_values)
        x = m._pos_embed(x)
        x = m.patch_drop(x)
        return m.norm_pre(x)

    @property
    def blocks(self) -> nn.Module:
        return self.timm.blocks

    @property
    def final_norm(self) -> nn.Module:
        return self.timm.norm

    def run_block(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return block(x)

    def attention_qk(self, block: nn.Module, x: torch.Tensor, q_rows: int | None = None):
        from timm.layers import Attention
        from timm.models.vision_transformer import Block, ResPostBlock

        attn = block.attn
        if type(attn) is not Attention or not isinstance(block, (Block, ResPostBlock)):
            raise InputError(f"{self.spec.name} uses {type(block).__name__}/{type(attn).__name__}, whose "
                             "attention tokcomp does not read",
                             "use a compression that acts on the output tokens (e.g. prune:K:norm)")
        # Block normalises before attention; ResPostBlock attends to the raw input and norms after.
        h = block.norm1(x) if isinstance(block, Block) else x
        b, t, _ = h.shape
        qkv = attn.qkv(h).reshape(b, t, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
        q, k = attn.q_norm(qkv[0]), attn.k_norm(qkv[1])  # [B, H, T, d], per-head norms as timm applies them
        q = q[:, :, :q_rows].transpose(1, 2).reshape(b, q.shape[2] if q_rows is None else q_rows, -1)
        k = k.transpose(1, 2).reshape(b, t, -1)
        return q, k, attn.num_heads, attn.scale

    def block_parts(self, block: nn.Module) -> BlockParts:
        from timm.layers import Attention
        from timm.models.vision_transformer import Block

        attn = block.attn
        if type(block) is not Block or type(attn) is not Attention:
            raise InputError(f"{self.spec.name} uses {type(block).__name__}/{type(attn).__name__}; ToMe here takes "
                             "timm's pre-norm Block with its standard Attention",
                             "use a compression on the output tokens (pool, prune) with this model")

        def qkv(h):
            b, t, _ = h.shape
            q, k, v = attn.qkv(h).reshape(b, t, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
            # timm's per-head q/k norms (Identity in plain ViTs; ToMe's patch leaves them out).
            return attn.q_norm(q), attn.k_norm(k), v

        out = nn.Sequential(attn.norm, attn.proj)  # timm: attention output → optional norm → proj
        return BlockParts(norm1=block.norm1, qkv=qkv, out=out, scale=attn.scale, ls1=block.ls1, norm2=block.norm2,
                          mlp=block.mlp, ls2=block.ls2)

    def adapt_state_dict(self, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Drop the classifier head (the tower is built without one) and resample the position table."""
        from timm.layers import resample_abs_pos_embed

        target = self.timm.state_dict()
        sd = {k: v for k, v in sd.items() if k in target or not k.startswith("head.")}
        pe = sd.get("pos_embed")
        if pe is not None and "pos_embed" in target and pe.shape != target["pos_embed"].shape:
            prefix = 0 if self.timm.no_embed_class else self.timm.num_prefix_tokens
            if pe.dim() != 3 or pe.shape[-1] != target["pos_embed"].shape[-1]:
                return sd  # strict_load names the shape mismatch
            # timm's own checkpoint filter resamples this way (bicubic, antialiased).
            sd["pos_embed"] = resample_abs_pos_embed(pe, new_size=list(self.timm.patch_embed.grid_size),
                                                     num_prefix_tokens=prefix)
        return sd


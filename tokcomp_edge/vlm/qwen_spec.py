"""The Qwen-VL family's facts at one static tile: the tile rule, the tower's EncoderSpec, the LLM's grid.

Qwen2-VL, Qwen2.5-VL, Qwen3-VL and Qwen3.5 read any image the processor resizes to sides that are
multiples of patch × spatial_merge_size (28 or 32) with H·W in [min_pixels, max_pixels]; tokcomp exports
one such tile per bundle (--image-size H or HxW), so every grid-dependent table (rotary, window index,
interpolated position embedding) is a constant of its graph. The processor's settings come from the
folder (`size.shortest_edge/longest_edge` or the older `min_pixels/max_pixels`), else the class defaults
of transformers' Qwen2VLImageProcessor (Qwen2/2.5: 56², 28²·1280, CLIP mean/std) and of the published
Qwen3-VL processor config (256², 4096², mean/std 0.5).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..encoders.spec import EncoderSpec
from ..errors import InputError
from .tile_rule import TileRule

QWEN_TYPES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_5")

# Pixel limits of the processor when the folder records none: (shortest_edge, longest_edge) in pixels².
_PIXELS = {"qwen2_vl": (56 * 56, 28 * 28 * 1280), "qwen2_5_vl": (56 * 56, 28 * 28 * 1280),
           "qwen3_vl": (65536, 16777216), "qwen3_5": (65536, 16777216)}


@dataclass(frozen=True)
class QwenShape:
    """What the spec and the plan need of a Qwen vision config (the module itself reads the rest).

    Attributes:
        patch, temporal, merge: patch_size, temporal_patch_size, spatial_merge_size.
        width: the tower's channels (Qwen2-VL `embed_dim`, later `hidden_size`).
        depth, heads: blocks and heads per block.
        out: the merger's output channels (= the LLM's hidden size).
        deepstack: Qwen3-VL's deepstack_visual_indexes (() for the others).
    """

    patch: int
    temporal: int
    merge: int
    width: int
    depth: int
    heads: int
    out: int
    deepstack: tuple[int, ...]


def qwen_shape(model_type: str, vision) -> QwenShape:
    """The QwenShape of a vision config object (transformers' class, defaults completed)."""
    def one(v: Any, what: str) -> int:
        if isinstance(v, (list, tuple)):
            if len(set(v)) != 1:
                raise InputError(f"{what} {list(v)} is not square", "Qwen-VL checkpoints use square patches")
            v = v[0]
        return int(v)

    width = int(vision.embed_dim if model_type == "qwen2_vl" else vision.hidden_size)
    out = int(vision.hidden_size if model_type == "qwen2_vl" else vision.out_hidden_size)
    deep = tuple(int(i) for i in getattr(vision, "deepstack_visual_indexes", ()) or ()) if model_type == "qwen3_vl" else ()
    return QwenShape(patch=one(vision.patch_size, "patch_size"), temporal=one(vision.temporal_patch_size,
                     "temporal_patch_size"), merge=int(vision.spatial_merge_size), width=width,
                     depth=int(vision.depth), heads=int(vision.num_heads), out=out, deepstack=deep)


def qwen_rule(model_type: str, shape: QwenShape, preprocessor: dict[str, Any], cfg: dict[str, Any]) -> TileRule:
    """The processor's tile limits, in merged tokens of (patch·merge)² pixels each: the folder's processor
    settings, else `min_pixels`/`max_pixels` in the VLM config (how the tiny presets allow small tiles), else
    the family's defaults."""
    lo, hi = _PIXELS[model_type]
    size = preprocessor.get("size") if isinstance(preprocessor.get("size"), dict) else {}
    try:
        lo = int(preprocessor.get("min_pixels") or size.get("shortest_edge") or cfg.get("min_pixels") or lo)
        hi = int(preprocessor.get("max_pixels") or size.get("longest_edge") or cfg.get("max_pixels") or hi)
    except (TypeError, ValueError) as exc:
        raise InputError(f"the image processor's min/max pixels are not integers ({exc})",
                         "fix size.shortest_edge / size.longest_edge in preprocessor_config.json") from exc
    pre_patch = preprocessor.get("patch_size")
    if pre_patch is not None and int(pre_patch) != shape.patch:
        raise InputError(f"the image processor's patch_size {pre_patch} differs from the vision config's "
                         f"{shape.patch}", "use the preprocessor_config.json that came with this checkpoint")
    step = shape.patch * shape.merge
    default = 448 if shape.patch == 14 else 512
    return TileRule(step=step, min_tokens=-(-lo // (step * step)), max_tokens=hi // (step * step),
                    default=default, step_why="patch × spatial_merge_size",
                    limits_why=f"min/max pixels {lo}..{hi}")


def qwen_encoder_spec(name: str, source: str, model_type: str, shape: QwenShape, vision_dict: dict[str, Any],
                      tile: tuple[int, int], mean, std) -> EncoderSpec:
    """The tower's EncoderSpec at `tile`: no prefix tokens, the patch grid H/patch × W/patch."""
    return EncoderSpec(name=name, family="qwen", source=source, image_size=(int(tile[0]), int(tile[1])),
                       patch_size=shape.patch, prefix_tokens=0, has_cls=False, hidden_size=shape.width,
                       num_layers=shape.depth, num_heads=shape.heads, mean=tuple(float(v) for v in mean),
                       std=tuple(float(v) for v in std), default_prefix="drop",
                       config={"model_type": f"{model_type}_vision", "hf": vision_dict})


def image_grid_thw(grid_out: tuple[int, int]) -> list[int]:
    """What the LLM's get_rope_index must be given for one tile: [t=1, h, w] in patches of the grid the
    merger reads (after any extra grid compression), so M-RoPE places the (h/m)·(w/m) tokens."""
    return [1, int(grid_out[0]), int(grid_out[1])]


# Why each method that breaks the merger's 2×2 groups or the rotary positions is refused, and what could work later.
_REFUSED = {
    "prune": "keeps scattered tokens: the merger concatenates 2×2 neighbours and M-RoPE needs each token's grid "
             "position (pruning after the merger would need per-token positions the LLM side accepts)",
    "visionzip": "keeps scattered and merged tokens: the merger's 2×2 groups and M-RoPE's grid positions are lost",
    "tome": "merges tokens inside the blocks: the 2-D rotary positions and the merger's 2×2 groups are lost",
    "unshuffle": "widens the tokens, but the merger already concatenates the 2×2 neighbours its MLP was trained on",
}


def check_qwen_compression(name: str, method: str, text: str) -> None:
    """Only grid reductions on the patch grid (pool, bilinear) keep the merger and M-RoPE consistent.

    Raises:
        SpecError (exit 2), before anything is built.
    """
    from ..errors import SpecError

    if method in _REFUSED:
        raise SpecError(f"{text} cannot apply to {name} (Qwen-VL): it {_REFUSED[method]}",
                        "use a grid reduction on the patch grid: pool:F or bilinear:HxW (a multiple of 2 per side)")


def deepstack_outputs(indexes) -> tuple[str, ...]:
    """The bundle's extra outputs for Qwen3-VL's DeepStack features, in deepstack_visual_indexes order."""
    return tuple(f"deepstack_{i}" for i in range(len(tuple(indexes))))

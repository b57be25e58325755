"""VLM presets: the vision paths of published VLMs, with their configs' hyperparameters (random init).

Each preset is the subset of the checkpoint's config.json that defines the vision tower, the VLM's
transform and projector, and the LLM's shape (for token economics); transformers' config classes fill
in the rest. The weights stay random (seeded) unless `--weights` names the checkpoint's files.

| preset                | checkpoint                                   | tile | tokens per tile |
|-----------------------|----------------------------------------------|------|-----------------|
| llava-1.5-7b          | llava-hf/llava-1.5-7b-hf                     | 336  | 576 × 4096      |
| llava-onevision-0.5b  | llava-hf/llava-onevision-qwen2-0.5b-ov-hf    | 384  | 729 × 896       |
| internvl3-1b          | OpenGVLab/InternVL3-1B-hf                    | 448  | 256 × 896       |
| smolvlm-256m          | HuggingFaceTB/SmolVLM-256M-Instruct (Idefics3) | 512 | 64 × 576       |
| gemma3-4b             | google/gemma-3-4b-it                         | 896  | 256 × 2560      |
| paligemma2-3b-224     | google/paligemma2-3b-pt-224                  | 224  | 256 × 2304      |
| lfm2-vl-450m          | LiquidAI/LFM2-VL-450M                        | 512  | 256 × 1024      |
| lfm2-vl-1.6b          | LiquidAI/LFM2-VL-1.6B                        | 512  | 256 × 2048      |
| qwen2-vl-2b           | Qwen/Qwen2-VL-2B-Instruct                    | 448  | 256 × 1536      |
| qwen2.5-vl-3b         | Qwen/Qwen2.5-VL-3B-Instruct                  | 448  | 256 × 2048      |
| qwen2.5-vl-7b         | Qwen/Qwen2.5-VL-7B-Instruct                  | 448  | 256 × 3584      |
| qwen3-vl-2b           | Qwen/Qwen3-VL-2B-Instruct                    | 512  | 256 × 2048 + 3 DeepStack |

Values: the published config.json files (the defaults of transformers' config classes where a file leaves a
key out, as loading it would). LLaVA-OneVision's tower has 26 layers, not so400m's 27: its conversion drops
the last layer, so `vision_feature_layer=-1` reads the original model's penultimate layer.
LFM2-VL: SigLIP2 NaFlex base (86M: 768 wide, 12 layers) for 450M and shape-optimised so400m (1152 wide, 4304 MLP,
26 layers run: the penultimate of so400m's 27, which transformers' last_hidden_state then is) for 1.6B, patch 16,
a 16x16 position table (num_patches 256); projector 2560 wide without its LayerNorm (projector_use_layernorm
false); LFM2-350M / LFM2-1.2B text shapes (block_ff_dim 6656 / 12288, auto-adjusted to 4608 / 8192). The tile is
--image-size (512 by default, the processor's tile_size). These were not read from the Hub here: check
them against the checkpoints' config.json before relying on a random-init preset's sizes.
Qwen-VL: the vision_config / text_config values of the model cards' config.json as published (Qwen2-VL: 1280
wide, 32 blocks, merger to 1536; Qwen2.5-VL: 1280 wide, SwiGLU 3420, window 112 px, full attention in blocks
7/15/23/31; Qwen3-VL-2B: 1024 wide, 24 blocks, DeepStack after blocks 5/11/17, a 48×48 learned position table),
written from those files' published values, not read from the Hub here. The tile is --image-size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class VlmPreset:
    """A named VLM vision path: the VLM model_type, its config dict and the checkpoint it mirrors."""

    name: str
    model_type: str
    config: dict[str, Any]
    source: str = ""
    tiny: bool = False


def _clip(hidden, layers, heads, mlp, patch, image) -> dict[str, Any]:
    return dict(model_type="clip_vision_model", hidden_size=hidden, num_hidden_layers=layers,
                num_attention_heads=heads, intermediate_size=mlp, patch_size=patch, image_size=image,
                hidden_act="quick_gelu", layer_norm_eps=1e-5, projection_dim=768)


def _siglip(hidden, layers, heads, mlp, patch, image, model_type="siglip_vision_model") -> dict[str, Any]:
    return dict(model_type=model_type, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                intermediate_size=mlp, patch_size=patch, image_size=image, hidden_act="gelu_pytorch_tanh",
                layer_norm_eps=1e-6)


def _internvit(hidden, layers, heads, mlp, patch, image) -> dict[str, Any]:
    return dict(model_type="internvl_vision", hidden_size=hidden, num_hidden_layers=layers,
                num_attention_heads=heads, intermediate_size=mlp, patch_size=[patch, patch], image_size=[image, image],
                hidden_act="gelu", layer_norm_eps=1e-6, norm_type="layer_norm", use_qk_norm=False,
                layer_scale_init_value=0.1, use_mean_pooling=True, attention_bias=True,
                use_absolute_position_embeddings=True)


def _siglip2(hidden, layers, heads, mlp, patch, num_patches) -> dict[str, Any]:
    return dict(model_type="siglip2_vision_model", hidden_size=hidden, num_hidden_layers=layers,
                num_attention_heads=heads, intermediate_size=mlp, patch_size=patch, num_patches=num_patches,
                hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6, vision_use_head=False)


def _lfm2(hidden, heads, ff, tiny=False) -> dict[str, Any]:
    # LFM2: 16 layers, 6 of them attention (the rest short convolutions), 8 KV heads.
    if tiny:
        return _text("lfm2", hidden, 2, heads, 1, ff, 128, layer_types=["conv", "full_attention"])
    return _text("lfm2", hidden, 16, heads, 8, ff, 65536, full_attn_idxs=[2, 5, 8, 10, 12, 14])


def _qwen_vision(model_type, width, depth, heads, mlp, out, patch, **kw) -> dict[str, Any]:
    """A Qwen vision_config: Qwen2-VL names the tower width `embed_dim` (its `hidden_size` is the merger's
    output); the later ones call the width `hidden_size` and the output `out_hidden_size`."""
    if model_type == "qwen2_vl":
        return dict(depth=depth, embed_dim=width, num_heads=heads, mlp_ratio=mlp // width, hidden_size=out,
                    patch_size=patch, spatial_merge_size=2, temporal_patch_size=2, hidden_act="quick_gelu", **kw)
    act = "silu" if model_type == "qwen2_5_vl" else "gelu_pytorch_tanh"
    return dict(depth=depth, hidden_size=width, num_heads=heads, intermediate_size=mlp, out_hidden_size=out,
                patch_size=patch, spatial_merge_size=2, temporal_patch_size=2, hidden_act=act, **kw)


def _text(model_type, hidden, layers, heads, kv, mlp, vocab, **kw) -> dict[str, Any]:
    return dict(model_type=model_type, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                num_key_value_heads=kv, intermediate_size=mlp, vocab_size=vocab, **kw)


VLM_PRESETS: dict[str, VlmPreset] = {p.name: p for p in [
    VlmPreset("llava-1.5-7b", "llava", dict(
        vision_config=_clip(1024, 24, 16, 4096, 14, 336),
        text_config=_text("llama", 4096, 32, 32, 32, 11008, 32064),
        vision_feature_layer=-2, vision_feature_select_strategy="default", projector_hidden_act="gelu",
        image_token_index=32000), source="llava-hf/llava-1.5-7b-hf"),
    VlmPreset("llava-onevision-0.5b", "llava_onevision", dict(
        vision_config=_siglip(1152, 26, 16, 4304, 14, 384),
        text_config=_text("qwen2", 896, 24, 14, 2, 4864, 152000),
        vision_feature_layer=-1, vision_feature_select_strategy="full", projector_hidden_act="gelu",
        image_token_index=151646, vision_aspect_ratio="anyres_max_9"),
        source="llava-hf/llava-onevision-qwen2-0.5b-ov-hf"),
    VlmPreset("internvl3-1b", "internvl", dict(
        vision_config=_internvit(1024, 24, 16, 4096, 14, 448),
        text_config=_text("qwen2", 896, 24, 14, 2, 4864, 151674),
        vision_feature_layer=-1, vision_feature_select_strategy="default", downsample_ratio=0.5,
        projector_hidden_act="gelu", image_token_id=151667), source="OpenGVLab/InternVL3-1B-hf"),
    # SmolVLM-256M-Instruct is published in the Idefics3 format (SmolVLM2 repos use the smolvlm classes).
    VlmPreset("smolvlm-256m", "idefics3", dict(
        vision_config=_siglip(768, 12, 12, 3072, 16, 512, "idefics3_vision"),
        text_config=_text("llama", 576, 30, 9, 3, 1536, 49280),
        scale_factor=4, image_token_id=49190), source="HuggingFaceTB/SmolVLM-256M-Instruct"),
    VlmPreset("gemma3-4b", "gemma3", dict(
        vision_config={**_siglip(1152, 27, 16, 4304, 14, 896), "vision_use_head": False},
        text_config=_text("gemma3_text", 2560, 34, 8, 4, 10240, 262208, head_dim=256),
        mm_tokens_per_image=256, image_token_index=262144), source="google/gemma-3-4b-it"),
    VlmPreset("paligemma2-3b-224", "paligemma", dict(
        vision_config=_siglip(1152, 27, 16, 4304, 14, 224),
        text_config=_text("gemma2", 2304, 26, 8, 4, 9216, 257216, head_dim=256),
        projection_dim=2304, image_token_index=257152), source="google/paligemma2-3b-pt-224"),
    VlmPreset("lfm2-vl-450m", "lfm2_vl", dict(
        vision_config=_siglip2(768, 12, 12, 3072, 16, 256), text_config=_lfm2(1024, 16, 6656),
        downsample_factor=2, projector_hidden_size=2560, projector_use_layernorm=False, image_token_id=396),
        source="LiquidAI/LFM2-VL-450M"),
    VlmPreset("lfm2-vl-1.6b", "lfm2_vl", dict(
        vision_config=_siglip2(1152, 26, 16, 4304, 16, 256), text_config=_lfm2(2048, 32, 12288),
        downsample_factor=2, projector_hidden_size=2560, projector_use_layernorm=False, image_token_id=396),
        source="LiquidAI/LFM2-VL-1.6B"),
    # Qwen-VL: the tile is --image-size (448 for patch 14, 512 for patch 16 by default), 2×2 merger.
    VlmPreset("qwen2-vl-2b", "qwen2_vl", dict(
        vision_config=_qwen_vision("qwen2_vl", 1280, 32, 16, 5120, 1536, 14),
        text_config=_text("qwen2_vl_text", 1536, 28, 12, 2, 8960, 151936),
        image_token_id=151655, video_token_id=151656), source="Qwen/Qwen2-VL-2B-Instruct"),
    VlmPreset("qwen2.5-vl-3b", "qwen2_5_vl", dict(
        vision_config=_qwen_vision("qwen2_5_vl", 1280, 32, 16, 3420, 2048, 14, window_size=112,
                                   fullatt_block_indexes=[7, 15, 23, 31], tokens_per_second=2),
        text_config=_text("qwen2_5_vl_text", 2048, 36, 16, 2, 11008, 151936),
        image_token_id=151655, video_token_id=151656), source="Qwen/Qwen2.5-VL-3B-Instruct"),
    VlmPreset("qwen2.5-vl-7b", "qwen2_5_vl", dict(
        vision_config=_qwen_vision("qwen2_5_vl", 1280, 32, 16, 3420, 3584, 14, window_size=112,
                                   fullatt_block_indexes=[7, 15, 23, 31], tokens_per_second=2),
        text_config=_text("qwen2_5_vl_text", 3584, 28, 28, 4, 18944, 152064),
        image_token_id=151655, video_token_id=151656), source="Qwen/Qwen2.5-VL-7B-Instruct"),
    VlmPreset("qwen3-vl-2b", "qwen3_vl", dict(
        vision_config=_qwen_vision("qwen3_vl", 1024, 24, 16, 4096, 2048, 16, num_position_embeddings=2304,
                                   deepstack_visual_indexes=[5, 11, 17]),
        text_config=_text("qwen3_vl_text", 2048, 28, 16, 8, 6144, 151936, head_dim=128),
        image_token_id=151655, video_token_id=151656), source="Qwen/Qwen3-VL-2B-Instruct"),
    # Tiny: the same code paths, small enough to build, export and check in seconds (8x8 grids).
    VlmPreset("tiny-llava", "llava", dict(
        vision_config=_clip(32, 3, 2, 64, 16, 128), text_config=_text("llama", 48, 1, 2, 1, 64, 128),
        vision_feature_layer=-2, vision_feature_select_strategy="default", image_token_index=5), tiny=True),
    VlmPreset("tiny-llava-onevision", "llava_onevision", dict(
        vision_config=_siglip(32, 3, 2, 64, 16, 128), text_config=_text("qwen2", 48, 1, 2, 1, 64, 128),
        vision_feature_layer=-1, vision_feature_select_strategy="full", image_token_index=5), tiny=True),
    VlmPreset("tiny-internvl", "internvl", dict(
        vision_config=_internvit(32, 3, 2, 64, 16, 128), text_config=_text("qwen2", 48, 1, 2, 1, 64, 128),
        downsample_ratio=0.5, image_token_id=5), tiny=True),
    VlmPreset("tiny-smolvlm", "smolvlm", dict(
        vision_config=_siglip(32, 3, 2, 64, 16, 128, "smolvlm_vision"),
        text_config=_text("llama", 48, 1, 2, 1, 64, 128), scale_factor=2, image_token_id=5), tiny=True),
    VlmPreset("tiny-gemma3", "gemma3", dict(
        vision_config={**_siglip(32, 3, 2, 64, 16, 128), "vision_use_head": False},
        text_config=_text("gemma3_text", 48, 1, 2, 1, 64, 300, head_dim=16), mm_tokens_per_image=16,
        image_token_index=5, boi_token_index=6, eoi_token_index=7), tiny=True),
    VlmPreset("tiny-paligemma", "paligemma", dict(
        vision_config=_siglip(32, 3, 2, 64, 16, 128), text_config=_text("gemma", 48, 1, 2, 1, 64, 128, head_dim=16),
        projection_dim=48, image_token_index=5), tiny=True),
    # 128 px tile: 8x8 patches of 16 → unshuffle 2 → 4x4 = 16 tokens; its own min/max_image_tokens (the keys
    # older LFM2-VL config.json files carry, read by lfm2.py) let a tile this small through.
    VlmPreset("tiny-lfm2-vl", "lfm2_vl", dict(
        vision_config=_siglip2(32, 3, 2, 64, 16, 16), text_config=_lfm2(48, 2, 64, tiny=True),
        downsample_factor=2, projector_hidden_size=40, image_token_id=5,
        min_image_tokens=1, max_image_tokens=64, tile_size=128), tiny=True),
    # Qwen tiny: patch 16 (patch 14 for Qwen2/2.5 is kept, as the processor's step 28 is part of what is tested);
    # the default tile is 448 / 512, so tests pass --image-size (e.g. 112 → an 8×8 patch grid).
    VlmPreset("tiny-qwen2-vl", "qwen2_vl", dict(
        vision_config=_qwen_vision("qwen2_vl", 32, 2, 2, 64, 48, 14),
        text_config=_text("qwen2_vl_text", 48, 1, 2, 1, 64, 128, bos_token_id=None, eos_token_id=None),
        image_token_id=5, video_token_id=6, min_pixels=28 * 28), tiny=True),
    VlmPreset("tiny-qwen2.5-vl", "qwen2_5_vl", dict(
        vision_config=_qwen_vision("qwen2_5_vl", 32, 3, 2, 64, 48, 14, window_size=56, fullatt_block_indexes=[1]),
        text_config=_text("qwen2_5_vl_text", 48, 1, 2, 1, 64, 128, bos_token_id=None, eos_token_id=None),
        image_token_id=5, video_token_id=6, min_pixels=28 * 28), tiny=True),
    VlmPreset("tiny-qwen3-vl", "qwen3_vl", dict(
        vision_config=_qwen_vision("qwen3_vl", 32, 3, 2, 64, 48, 16, num_position_embeddings=16,
                                   deepstack_visual_indexes=[0, 1]),
        text_config=_text("qwen3_vl_text", 48, 1, 2, 1, 64, 128, head_dim=24, bos_token_id=None, eos_token_id=None),
        image_token_id=5, video_token_id=6, min_pixels=32 * 32), tiny=True),
    VlmPreset("tiny-qwen3.5", "qwen3_5", dict(
        vision_config=_qwen_vision("qwen3_5", 32, 2, 2, 64, 48, 16, num_position_embeddings=16),
        text_config=_text("qwen3_5_text", 48, 2, 2, 1, 64, 128, head_dim=24, bos_token_id=None, eos_token_id=None),
        image_token_id=5, video_token_id=6, min_pixels=32 * 32), tiny=True),
]}

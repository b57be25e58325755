"""The built-in encoder presets: real vision towers with their published hyperparameters, plus tiny ones.

A preset is data only (no module is built): the HF transformers config that rebuilds the architecture
and the pixel normalisation the checkpoint was trained with. `resolve_spec` turns it into an
`EncoderSpec` without importing torch, so `tokcomp models` stays instant.

The real presets reproduce the configs published with these checkpoints (config.json /
preprocessor_config.json on the Hugging Face Hub):

| preset                 | checkpoint                                  | grid   |
|------------------------|---------------------------------------------|--------|
| clip-b16-224           | openai/clip-vit-base-patch16                | 14x14  |
| clip-l14-336           | openai/clip-vit-large-patch14-336 (LLaVA-1.5) | 24x24 |
| siglip-b16-224         | google/siglip-base-patch16-224              | 14x14  |
| siglip-so400m-14-384   | google/siglip-so400m-patch14-384            | 27x27  |
| dinov2-s14-224         | facebook/dinov2-small (crop 224)            | 16x16  |
| dinov2-s14-reg-224     | facebook/dinov2-with-registers-small        | 16x16  |
| vit-b16-224            | google/vit-base-patch16-224                 | 14x14  |

DINOv2 checkpoints are trained at 518 px (37x37 positions) but their processors crop to 224; the
preset is built at 224 and `weights.load_weights` resamples the position table once, at load time,
exactly as HF's `interpolate_pos_encoding` would at every forward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF = (0.5, 0.5, 0.5)

# What happens to the prefix tokens (CLS, registers) unless `--prefix` says otherwise, and why:
# - clip: LLaVA-1.5 feeds the LLM only the patch tokens (mm_vision_select_feature='patch'); the CLS
#   token of CLIP's penultimate layer is not something a VLM projector was trained on.
# - siglip: has no prefix tokens at all ("drop" is then a no-op), kept explicit for the table.
# - dinov2: registers exist to absorb global "scratch" attention and are meant to be discarded; VLMs
#   built on DINOv2 consume the patch features.
# - vit: a classification ViT's CLS token is its summary of the image, so it is kept.
# - internvl / idefics3: the vision towers of InternVL and Idefics3/SmolVLM, reached through a VLM
#   folder; InternVL's projector reads patch tokens only, Idefics3's tower has no prefix at all.
DEFAULT_PREFIX = {"clip": "drop", "siglip": "drop", "dinov2": "drop", "vit": "keep", "internvl": "drop",
                  "idefics3": "drop"}

# Family defaults for the pixel normalisation (used by hf: folders that carry no preprocessor_config.json).
FAMILY_MEAN_STD = {
    "clip": (CLIP_MEAN, CLIP_STD),
    "siglip": (HALF, HALF),
    "dinov2": (IMAGENET_MEAN, IMAGENET_STD),
    "vit": (HALF, HALF),
    "internvl": (IMAGENET_MEAN, IMAGENET_STD),
    "idefics3": (HALF, HALF),
}

# HF `model_type` (of the vision config) → our family. `clip`/`siglip` full checkpoints are mapped to
# their vision config by the hf: loader before this table is consulted.
MODEL_TYPE_FAMILY = {
    "clip_vision_model": "clip",
    "siglip_vision_model": "siglip",
    "dinov2": "dinov2",
    "dinov2_with_registers": "dinov2",
    "vit": "vit",
    # Vision towers that exist inside VLM checkpoints (tokcomp_edge.vlm builds them from the VLM's config).
    "internvl_vision": "internvl",
    "idefics3_vision": "idefics3",
    "smolvlm_vision": "idefics3",
}


@dataclass(frozen=True)
class Preset:
    """One named encoder: HF vision config (model_type + kwargs) and its normalisation.

    Attributes:
        name: preset id (`clip-l14-336`).
        model_type: HF vision `model_type` (`clip_vision_model`, `dinov2_with_registers`, …).
        hf: config kwargs; everything the architecture depends on, spelled out (not HF's defaults).
        mean, std: per-channel normalisation of the checkpoint's processor.
        tiny: a test/demo preset (random init only, not a published model).
        source: the checkpoint this preset mirrors (for `tokcomp models`).
    """

    name: str
    model_type: str
    hf: dict[str, Any]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    tiny: bool = False
    source: str = ""

    @property
    def family(self) -> str:
        return MODEL_TYPE_FAMILY[self.model_type]


def _clip(hidden, layers, heads, mlp, patch, image, **kw) -> dict[str, Any]:
    return dict(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                intermediate_size=mlp, patch_size=patch, image_size=image, hidden_act="quick_gelu",
                layer_norm_eps=1e-5, num_channels=3, **kw)


def _siglip(hidden, layers, heads, mlp, patch, image) -> dict[str, Any]:
    # vision_use_head=False: the attention-pooling head only makes the pooled embedding; VLMs read tokens.
    return dict(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                intermediate_size=mlp, patch_size=patch, image_size=image, hidden_act="gelu_pytorch_tanh",
                layer_norm_eps=1e-6, num_channels=3, vision_use_head=False)


def _dinov2(hidden, layers, heads, patch, image, registers=None) -> dict[str, Any]:
    d = dict(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, mlp_ratio=4,
             patch_size=patch, image_size=image, hidden_act="gelu", layer_norm_eps=1e-6, qkv_bias=True,
             layerscale_value=1.0, use_swiglu_ffn=False, num_channels=3, drop_path_rate=0.0)
    if registers is not None:
        d["num_register_tokens"] = registers
    return d


def _vit(hidden, layers, heads, mlp, patch, image) -> dict[str, Any]:
    return dict(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                intermediate_size=mlp, patch_size=patch, image_size=image, hidden_act="gelu",
                layer_norm_eps=1e-12, qkv_bias=True, num_channels=3)


# Real presets first (the order of `tokcomp models`), tiny ones last.
PRESETS: dict[str, Preset] = {p.name: p for p in [
    Preset("clip-b16-224", "clip_vision_model", _clip(768, 12, 12, 3072, 16, 224), CLIP_MEAN, CLIP_STD,
           source="openai/clip-vit-base-patch16"),
    Preset("clip-l14-336", "clip_vision_model", _clip(1024, 24, 16, 4096, 14, 336), CLIP_MEAN, CLIP_STD,
           source="openai/clip-vit-large-patch14-336"),
    Preset("siglip-b16-224", "siglip_vision_model", _siglip(768, 12, 12, 3072, 16, 224), HALF, HALF,
           source="google/siglip-base-patch16-224"),
    Preset("siglip-so400m-14-384", "siglip_vision_model", _siglip(1152, 27, 16, 4304, 14, 384), HALF, HALF,
           source="google/siglip-so400m-patch14-384"),
    Preset("dinov2-s14-224", "dinov2", _dinov2(384, 12, 6, 14, 224), IMAGENET_MEAN, IMAGENET_STD,
           source="facebook/dinov2-small"),
    Preset("dinov2-s14-reg-224", "dinov2_with_registers", _dinov2(384, 12, 6, 14, 224, registers=4),
           IMAGENET_MEAN, IMAGENET_STD, source="facebook/dinov2-with-registers-small"),
    Preset("vit-b16-224", "vit", _vit(768, 12, 12, 3072, 16, 224), HALF, HALF,
           source="google/vit-base-patch16-224"),
    # Tiny: same code paths as the real ones, small enough that tests build and export them in seconds.
    Preset("tiny-clip", "clip_vision_model", _clip(64, 2, 4, 128, 16, 224), CLIP_MEAN, CLIP_STD, tiny=True),
    Preset("tiny-siglip", "siglip_vision_model", _siglip(64, 2, 4, 128, 16, 224), HALF, HALF, tiny=True),
    Preset("tiny-dinov2", "dinov2_with_registers", _dinov2(64, 2, 4, 16, 224, registers=4),
           IMAGENET_MEAN, IMAGENET_STD, tiny=True),
    Preset("tiny-vit", "vit", _vit(64, 2, 4, 128, 16, 224), HALF, HALF, tiny=True),
]}

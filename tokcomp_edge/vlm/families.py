"""The VLM families tokcomp exports, as data: which transformers classes hold the vision path and how
`get_image_features` turns the tower's hidden states into what the LLM reads (docs/vlm.md, "The families").

Each family is described by these facts; the arithmetic built on them is in plan.py, the module in path.py:

- feature: which hidden state feeds the projector — `hidden_states` (hidden_states[vision_feature_layer],
  raw: no final norm), `last` (last_hidden_state, with the tower's final norm; these families never select),
  or `internvl` (last_hidden_state when vision_feature_layer is −1, else hidden_states[layer], as InternVL's
  code does);
- select (read from the config, not stored here: spec.py): `vision_feature_select_strategy` `default` slices
  `[:, 1:]` off the selected features whatever row 0 is — a CLS, or SigLIP's first patch — and `full` keeps
  every row; when config.json has no key, the config class's own default applies (LlavaConfig: `default`);
- transform: the VLM's own token reduction — none, a pixel shuffle (LFM2-VL's pixel unshuffle is the same
  op), or a window average;
- where the transform runs: in `get_image_features` before the projector module (InternVL) or inside the
  projector module (Idefics3/SmolVLM's connector, Gemma 3's projector, LFM2-VL's projector);
- projector: the transformers module that maps vision features to LLM embeddings;
- mean_std: the pixel normalisation used when the folder records no image processor (neither
  processor_config.json's `image_processor` nor preprocessor_config.json); the manifest then says so.

What else a family refuses (LLaVA-OneVision's scattered-token methods, InternVL with `full`) is checked in
plan.py; how many tiles one request can produce (the default `--batch-max`) is computed in tiles.py.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VlmFamily:
    """One VLM architecture as transformers 5.x implements it.

    Attributes:
        model_type: the VLM config's `model_type` (`llava`, `internvl`, …).
        hf_class: the `…ForConditionalGeneration` class of a full checkpoint.
        module: the transformers module holding the projector class (`transformers.models.<module>`).
        vision_attr, projector_attr: attribute names inside the base model (`model.<attr>` in checkpoints).
        projector_class: the projector's class name in `module`.
        feature: `hidden_states` | `last` | `internvl` (see module docstring).
        transform: `none` | `pixel_shuffle` | `avg_pool` | `patch_merger` (Qwen-VL: 2×2 neighbours → MLP).
        transform_in_projector: True when the reduction is part of the projector module itself.
        mean_std: pixel normalisation when the folder records no image processor (see the module docstring).
        what: one line for `tokcomp models` and the manifest.
    """

    model_type: str
    hf_class: str
    module: str
    vision_attr: str
    projector_attr: str
    projector_class: str
    feature: str
    transform: str
    transform_in_projector: bool
    mean_std: tuple[tuple[float, float, float], tuple[float, float, float]]
    what: str

    @property
    def transformers_class(self) -> str:
        return f"transformers.{self.hf_class}"


_CLIP = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
_HALF = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))

FAMILIES: dict[str, VlmFamily] = {f.model_type: f for f in [
    VlmFamily("llava", "LlavaForConditionalGeneration", "llava", "vision_tower", "multi_modal_projector",
              "LlavaMultiModalProjector", "hidden_states", "none", False, _CLIP,
              "CLIP tower at vision_feature_layer (−2), CLS dropped, Linear–GELU–Linear projector"),
    VlmFamily("llava_onevision", "LlavaOnevisionForConditionalGeneration", "llava_onevision", "vision_tower",
              "multi_modal_projector", "LlavaOnevisionMultiModalProjector", "hidden_states", "none", False, _HALF,
              "SigLIP tower per crop → Linear–GELU–Linear (pack_image_features / newline tokens stay on the host)"),
    VlmFamily("internvl", "InternVLForConditionalGeneration", "internvl", "vision_tower", "multi_modal_projector",
              "InternVLMultiModalProjector", "internvl", "pixel_shuffle", False, _IMAGENET,
              "InternViT, CLS dropped, pixel shuffle (downsample_ratio 0.5), LayerNorm–Linear–GELU–Linear (mlp1)"),
    VlmFamily("idefics3", "Idefics3ForConditionalGeneration", "idefics3", "vision_model", "connector",
              "Idefics3Connector", "last", "pixel_shuffle", True, _HALF,
              "SigLIP-style tower (post-norm) → connector: pixel shuffle (scale_factor) + Linear"),
    VlmFamily("smolvlm", "SmolVLMForConditionalGeneration", "smolvlm", "vision_model", "connector",
              "SmolVLMConnector", "last", "pixel_shuffle", True, _HALF,
              "SigLIP-style tower (post-norm) → connector: pixel shuffle (scale_factor) + Linear"),
    VlmFamily("gemma3", "Gemma3ForConditionalGeneration", "gemma3", "vision_tower", "multi_modal_projector",
              "Gemma3MultiModalProjector", "last", "avg_pool", True, _HALF,
              "SigLIP (post-norm) → projector: k×k average pool to mm_tokens_per_image, RMSNorm, projection"),
    VlmFamily("paligemma", "PaliGemmaForConditionalGeneration", "paligemma", "vision_tower",
              "multi_modal_projector", "PaliGemmaMultiModalProjector", "last", "none", False, _HALF,
              "SigLIP (post-norm) → Linear to projection_dim (transformers 5.x applies no extra scaling here)"),
    VlmFamily("lfm2_vl", "Lfm2VlForConditionalGeneration", "lfm2_vl", "vision_tower", "multi_modal_projector",
              "Lfm2VlMultiModalProjector", "last", "pixel_shuffle", True, _HALF,
              "SigLIP2 NaFlex (post-norm) at a static tile → projector: pixel unshuffle (downsample_factor), "
              "LayerNorm, Linear–GELU–Linear"),
    # Qwen-VL: the whole vision path (patch embed, rotary blocks, merger) lives in `model.visual`; the
    # merger (2×2 neighbours concatenated → LayerNorm–MLP) is the projector, and the tile is chosen (qwen_spec.py).
    VlmFamily("qwen2_vl", "Qwen2VLForConditionalGeneration", "qwen2_vl", "visual", "visual.merger",
              "PatchMerger", "last", "patch_merger", True, _CLIP,
              "Qwen2-VL ViT (2-D rotary, Conv3d patches over 2 frames) at a static tile → merger: 2×2 → LayerNorm–MLP"),
    VlmFamily("qwen2_5_vl", "Qwen2_5_VLForConditionalGeneration", "qwen2_5_vl", "visual", "visual.merger",
              "Qwen2_5_VLPatchMerger", "last", "patch_merger", True, _CLIP,
              "Qwen2.5-VL ViT (window attention, RMSNorm, SwiGLU) at a static tile → merger: 2×2 → RMSNorm–MLP"),
    VlmFamily("qwen3_vl", "Qwen3VLForConditionalGeneration", "qwen3_vl", "visual", "visual.merger",
              "Qwen3VLVisionPatchMerger", "last", "patch_merger", True, _HALF,
              "Qwen3-VL ViT (interpolated learned positions + rotary) → merger 2×2 → MLP, + DeepStack features"),
    VlmFamily("qwen3_5", "Qwen3_5ForConditionalGeneration", "qwen3_5", "visual", "visual.merger",
              "Qwen3_5VisionPatchMerger", "last", "patch_merger", True, _HALF,
              "Qwen3.5 ViT (interpolated learned positions + rotary) → merger 2×2 → MLP (no DeepStack)"),
]}

# Text model types whose MLP is not gated (two matrices); every other decoder we know of is SwiGLU/GeGLU.
UNGATED_TEXT = {"gpt2", "opt", "phi", "gpt_neox", "falcon", "bloom"}

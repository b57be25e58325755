"""Tiny random VLMs built from transformers configs and saved with save_pretrained (nothing downloads),
and the transformers reference for one tile: what `get_image_features` computes."""

from __future__ import annotations

from pathlib import Path

import torch

TEXT = dict(hidden_size=48, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
            intermediate_size=64, vocab_size=300)
SIGLIP = dict(model_type="siglip_vision_model", hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
              intermediate_size=64, patch_size=16, image_size=128)
CLASSES = {
    "llava": "LlavaForConditionalGeneration",
    "llava_onevision": "LlavaOnevisionForConditionalGeneration",
    "internvl": "InternVLForConditionalGeneration",
    "idefics3": "Idefics3ForConditionalGeneration",
    "smolvlm": "SmolVLMForConditionalGeneration",
    "gemma3": "Gemma3ForConditionalGeneration",
    "paligemma": "PaliGemmaForConditionalGeneration",
}
FAMILIES = list(CLASSES)


def vlm_config(family: str, **over):
    """A transformers config of a tiny VLM (8x8 patch grid at 128 px)."""
    import transformers as T

    vis = {k: v for k, v in SIGLIP.items() if k != "model_type"}
    if family == "llava":
        kw = {"text_config": dict(model_type="llama", **TEXT), "image_token_index": 5, **over}
        return T.LlavaConfig(vision_config=dict(model_type="clip_vision_model", **vis), **kw)
    if family == "llava_onevision":
        return T.LlavaOnevisionConfig(vision_config=SIGLIP, text_config=dict(model_type="qwen2", **TEXT),
                                      image_token_index=5, video_token_index=6, **over)
    if family == "internvl":
        return T.InternVLConfig(vision_config=dict(attention_bias=True, use_qk_norm=True, **vis),
                                text_config=dict(model_type="qwen2", **TEXT), image_token_id=5, **over)
    if family in ("idefics3", "smolvlm"):
        cls = T.Idefics3Config if family == "idefics3" else T.SmolVLMConfig
        return cls(vision_config=vis, text_config=dict(model_type="llama", **TEXT), scale_factor=2,
                   image_token_id=5, **over)
    if family == "gemma3":
        return T.Gemma3Config(vision_config=SIGLIP, text_config=dict(model_type="gemma3_text", head_dim=16, **TEXT),
                              mm_tokens_per_image=16, image_token_index=5, boi_token_index=6, eoi_token_index=7,
                              **over)
    if family == "paligemma":
        return T.PaliGemmaConfig(vision_config=SIGLIP, text_config=dict(model_type="gemma", head_dim=16, **TEXT),
                                 projection_dim=48, image_token_index=5, **over)
    raise KeyError(family)


def build_vlm(family: str, seed: int = 0, **over):
    """The full tiny VLM with every parameter perturbed: transformers zero-initialises some (Gemma 3's
    projection, InternViT's position table), and a zero path would make every comparison trivial."""
    import transformers as T

    torch.manual_seed(seed)
    model = getattr(T, CLASSES[family])(vlm_config(family, **over)).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model


def build_lfm2_vl(vision_layers: int, seed: int = 0):
    """A tiny random Lfm2VlForConditionalGeneration: a SigLIP2 tower of `vision_layers` layers (6×6 position
    table, patch 16), pixel unshuffle 2, an LFM2 text model of one conv and one attention layer; every
    parameter perturbed, as in build_vlm (LayerNorms at 1/0 would hide a wrong order)."""
    import transformers as T

    cfg = T.Lfm2VlConfig(
        vision_config=dict(model_type="siglip2_vision_model", hidden_size=32, num_hidden_layers=vision_layers,
                           num_attention_heads=2, intermediate_size=64, patch_size=16, num_patches=36,
                           vision_use_head=False),
        text_config=dict(model_type="lfm2", hidden_size=48, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=1, intermediate_size=64, vocab_size=300,
                         layer_types=["conv", "full_attention"]),
        downsample_factor=2, projector_hidden_size=40, image_token_id=5)
    torch.manual_seed(seed)
    model = T.Lfm2VlForConditionalGeneration(cfg).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model


def save_vlm(model, folder: Path, **kw) -> Path:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # its bars would land in the stderr the CLI tests read
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, **kw)
    return folder


def hf_features(model, family: str, x: torch.Tensor) -> torch.Tensor:
    """transformers' own image features for a batch of single tiles [B, 3, H, W] → [B, T, D]."""
    captured = {}
    inner = model.model
    proj = inner.multi_modal_projector if hasattr(inner, "multi_modal_projector") else inner.connector
    with torch.no_grad():
        if family == "llava_onevision":
            # get_image_features packs crops with newline tokens after the projector (host-side work):
            # the per-crop features are the projector's output inside that very call.
            # batch_num_images > 1 skips the anyres split (one crop per image); a single tile is run beside
            # a copy of itself for that reason.
            run = torch.cat([x, x]) if len(x) == 1 else x
            hook = proj.register_forward_hook(lambda m, i, o: captured.__setitem__("out", o))
            try:
                model.get_image_features(run, image_sizes=torch.tensor([list(x.shape[-2:])] * len(run)),
                                         batch_num_images=torch.tensor([len(run)]))
            finally:
                hook.remove()
            return captured["out"][:len(x)]
        if family in ("idefics3", "smolvlm"):
            out = model.get_image_features(x.unsqueeze(1)).pooler_output
        else:
            out = model.get_image_features(x).pooler_output
    return torch.stack(list(out)) if isinstance(out, (list, tuple)) else out


def run_main(capsys, *argv):
    """Run the tokcomp CLI in-process: (exit code, stdout, stderr)."""
    import pytest

    from tokcomp_edge.cli.app import main

    with pytest.raises(SystemExit) as ex:
        main([str(a) for a in argv])
        raise SystemExit(0)
    cap = capsys.readouterr()
    return ex.value.code, cap.out, cap.err


def tile_pixels(batch: int, seed: int = 0, size: int = 128) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, size, size, generator=g)

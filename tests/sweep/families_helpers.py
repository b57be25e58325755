"""Tiny random VLM folders of every family the sweep lays out, each with its LLM, image processor and a
tokenizer holding the family's special tokens (saved with save_pretrained: nothing downloads), and the family's
transformers Processor built over the folder's PIL-backend image processor — the reference the sweep's splice
and layout must reproduce: processor(images, text) → model(**inputs).

The builders are the runtime tests' (tests/runtime: rt_helpers' tokenizers, runtime_helpers' image processors
and model overrides, test_runtime_qwen's Qwen-VL / LFM2-VL folders) so the sweep is checked on the very
checkpoints the device runtime is checked on.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for sub in ("runtime", "vlm"):
    if str(ROOT / sub) not in sys.path:
        sys.path.insert(0, str(ROOT / sub))

import rt_helpers  # noqa: E402
import runtime_helpers  # noqa: E402
from vlm_helpers import CLASSES, save_vlm, vlm_config  # noqa: E402

QWEN = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_5")
# Per-tile tokens each classic family's Processor is told (the tiny towers' 8×8 grid after the VLM's reduction).
NATIVE = {"llava": 64, "llava_onevision": 64, "internvl": 16, "idefics3": 16, "smolvlm": 16, "gemma3": 16,
          "paligemma": 64}


def _ids(family: str, tok) -> dict[str, int]:
    ids = {k: tok.convert_tokens_to_ids(v) for k, v in rt_helpers.SPECIAL[family].items()}
    key = {"internvl": "context_image_token"}.get(family, "image_token")
    name = "image_token_id" if family in ("internvl", "idefics3", "smolvlm") else "image_token_index"
    cfg = {name: ids[key]}
    if family == "gemma3":
        cfg.update(boi_token_index=ids["boi_token"], eoi_token_index=ids["eoi_token"])
    return cfg


def _processor(family: str, folder: Path, tok):
    """The family's Processor over the folder's PIL-backend image processor (the runtime tiles as that one)."""
    import transformers as T

    ip = T.AutoImageProcessor.from_pretrained(folder, backend="pil")
    n = NATIVE[family]
    if family == "internvl":
        from transformers.models.internvl.video_processing_internvl import InternVLVideoProcessor

        return T.InternVLProcessor(image_processor=ip, tokenizer=tok, video_processor=InternVLVideoProcessor(),
                                   image_seq_length=n)
    if family in ("idefics3", "smolvlm"):
        import importlib.util

        # SmolVLMProcessor needs num2words (for its video prompts); its image expansion is Idefics3's, which
        # stands in for it where num2words is not installed.
        if family == "smolvlm" and importlib.util.find_spec("num2words") is not None:
            from transformers.models.smolvlm.video_processing_smolvlm import SmolVLMVideoProcessor

            return T.SmolVLMProcessor(image_processor=ip, tokenizer=tok, video_processor=SmolVLMVideoProcessor(),
                                      image_seq_len=n)
        return T.Idefics3Processor(image_processor=ip, tokenizer=tok, image_seq_len=n)
    if family == "gemma3":
        return T.Gemma3Processor(image_processor=ip, tokenizer=tok, image_seq_length=n)
    if family == "paligemma":
        ip.image_seq_length = n
        return T.PaliGemmaProcessor(image_processor=ip, tokenizer=tok)
    if family == "llava_onevision":
        from transformers.models.llava_onevision.video_processing_llava_onevision import (
            LlavaOnevisionVideoProcessor,
        )

        return T.LlavaOnevisionProcessor(image_processor=ip, tokenizer=tok, num_image_tokens=n,
                                         video_processor=LlavaOnevisionVideoProcessor(),
                                         vision_feature_select_strategy="full",
                                         vision_aspect_ratio=runtime_helpers.CONFIG_OVER[family]["vision_aspect_ratio"])
    if family == "llava":
        return T.LlavaProcessor(image_processor=ip, tokenizer=tok, patch_size=16, num_additional_image_tokens=1,
                                vision_feature_select_strategy="default")
    raise KeyError(family)


def _static_folder(family: str, root: Path):
    """Qwen-VL / LFM2-VL: test_runtime_qwen's folders (Qwen with a 2-layer LLM, below)."""
    import test_runtime_qwen as Q

    if family in QWEN:
        return _qwen_folder(family, root)
    return Q._folder(family, root)  # LFM2-VL: no PIL backend; the torchvision one keeps a tile-sized image


def _qwen_folder(family: str, root: Path):
    """test_runtime_qwen's Qwen-VL folder with a 2-layer LLM: with one layer, Qwen3-VL's DeepStack (added to
    the image positions' hidden states after each LLM layer) could not reach the text positions; Qwen3.5 needs
    a full-attention layer besides its linear one (transformers' mask code asks the cache for a length only
    attention layers hold). Its Processor over the folder's PIL-backend image processor."""
    import torch
    import transformers as T
    import test_runtime_qwen as Q

    from tokcomp_edge.vlm.families import FAMILIES as FAM
    from tokcomp_edge.vlm.presets import VLM_PRESETS
    from tokcomp_edge.vlm.spec import hf_config_object

    preset = VLM_PRESETS[Q.QWEN[family][0]]
    torch.manual_seed(0)
    conf = hf_config_object(family, preset.config, preset.name)
    conf.vision_start_token_id, conf.vision_end_token_id = 7, 8  # inside the tiny vocabulary
    text = conf.text_config
    text.num_hidden_layers = 2
    if family == "qwen3_5":
        text.layer_types = ["linear_attention", "full_attention"]
    else:
        text.rope_parameters = {**text.rope_parameters, "mrope_section": [4, 4, 4]}  # fits the tiny head
        if getattr(text, "layer_types", None):
            text.layer_types = [text.layer_types[0]] * 2
    model = getattr(T, FAM[family].hf_class)(conf).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # transformers zero-initialises some parameters: perturb all
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    v = conf.vision_config
    half = {"image_mean": [0.5] * 3, "image_std": [0.5] * 3} if family.startswith("qwen3") else {}
    image = T.Qwen2VLImageProcessor(patch_size=v.patch_size, merge_size=v.spatial_merge_size,
                                    temporal_patch_size=v.temporal_patch_size,
                                    size={"shortest_edge": 16 * 16, "longest_edge": 1024 * 1024}, **half)
    folder = save_vlm(model, root / family)
    image.save_pretrained(folder)
    special = {"<|image_pad|>": conf.image_token_id, "<|vision_start|>": 7, "<|vision_end|>": 8,
               "<|video_pad|>": conf.video_token_id}
    tok = _qwen3_5_tokenizer(conf) if family == "qwen3_5" else Q._tokenizer(special)
    tok.save_pretrained(folder)
    ip = T.AutoImageProcessor.from_pretrained(folder, backend="pil")
    cls = T.Qwen2VLProcessor if family.startswith("qwen2") else T.Qwen3VLProcessor
    return folder, model, cls(image_processor=ip, tokenizer=tok, video_processor=Q._video_processor(family, image))


def _qwen3_5_tokenizer(c):
    """transformers loads every qwen3_5 folder's tokenizer as Qwen3_5Tokenizer (a byte-level BPE), whatever
    the file says; the word-level fixture would lose its special tokens there, so this one is that class, with
    the special tokens at config.json's ids."""
    import transformers as T

    special = {"<|image_pad|>": c.image_token_id, "<|vision_start|>": c.vision_start_token_id,
               "<|vision_end|>": c.vision_end_token_id, "<|video_pad|>": c.video_token_id}
    at = {v: k for k, v in special.items()}
    letters = iter("abcdefghijklmnopqrstuvwxyz")
    vocab = {at.get(i) or ("<|endoftext|>" if i == 0 else next(letters)): i for i in range(max(at) + 1)}
    tok = T.Qwen3_5Tokenizer(vocab=vocab, merges=[])
    tok.add_special_tokens({"additional_special_tokens": list(special)})
    return tok


def _two_layer_vlm(family: str, seed: int = 0, **over):
    """vlm_helpers.build_vlm with a 2-layer LLM: with one layer the text positions read only the layer's input
    at the image positions, so the image's attention mask (Gemma 3's bidirectional image blocks, PaliGemma's
    bidirectional prefix) and any second-layer effect of the splice would go unseen."""
    import torch
    import transformers as T

    config = vlm_config(family, **over)
    text = config.get_text_config()
    text.num_hidden_layers = 2
    if getattr(text, "layer_types", None):
        text.layer_types = (["sliding_attention", "full_attention"] if family == "gemma3"
                            else [text.layer_types[0]] * 2)
    torch.manual_seed(seed)
    model = getattr(T, CLASSES[family])(config).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # transformers zero-initialises some parameters: perturb all
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model


def make_family(family: str, root: Path):
    """(folder, transformers model, Processor) of a tiny random VLM of `family`, saved whole under root."""
    if family in QWEN or family == "lfm2_vl":
        return _static_folder(family, root)
    tok = rt_helpers.tokenizer(family)
    model = _two_layer_vlm(family, **runtime_helpers.CONFIG_OVER.get(family, {}))
    for k, v in _ids(family, tok).items():  # the ids the tokenizer gives the family's special tokens
        setattr(model.config, k, v)
    folder = save_vlm(model, root / family)
    runtime_helpers.image_processor(family).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder, model, _processor(family, folder, tok)


def at_tile(image, tile: tuple[int, int], family: str):
    """Qwen-VL / LFM2-VL take one static tile: the photo resized to it with the family's filter, so the stock
    processor (smart_resize) keeps it and sees what the runtime's tiling feeds the engine."""
    from PIL import Image

    return image.resize((tile[1], tile[0]), Image.BILINEAR if family == "lfm2_vl" else Image.BICUBIC)

"""Tiny VLM checkpoint folders for the runtime's processor-side tests: config.json, the family's image
processor (transformers' PIL backend, saved with save_pretrained) and a small word-level tokenizer that holds
the family's special tokens — no weights (the processor record is config work only)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "vlm"))

from vlm_helpers import vlm_config  # noqa: E402

PHOTOS = sorted((Path(__file__).resolve().parents[1] / "calibration" / "photos").glob("*.jpg"))
TILE = 128  # the tiny towers' image size (vlm_helpers.SIGLIP)
WORDS = ["[UNK]", "\n", "\n\n", " ", "Here", "is", "the", "original", "image", "and", "here", "are", "some",
         "crops", "to", "help", "you", "see", "better", "hello"]
# The special tokens of each family's tokenizer (attribute name → text), as the published checkpoints name them.
SPECIAL = {
    "internvl": {"start_image_token": "<img>", "end_image_token": "</img>", "context_image_token": "<IMG_CONTEXT>",
                 "video_token": "<video>"},
    "idefics3": {"image_token": "<image>", "fake_image_token": "<fake_token_around_image>",
                 "global_image_token": "<global-img>", "end_of_utterance_token": "<end_of_utterance>"},
    "smolvlm": {"image_token": "<image>", "fake_image_token": "<fake_token_around_image>",
                "global_image_token": "<global-img>", "end_of_utterance_token": "<end_of_utterance>",
                "video_token": "<video>"},
    "gemma3": {"image_token": "<image_soft_token>", "boi_token": "<start_of_image>", "eoi_token": "<end_of_image>"},
    "paligemma": {"image_token": "<image>"},
    "llava": {"image_token": "<image>"},
    "llava_onevision": {"image_token": "<image>", "video_token": "<video>"},
}
GRID_TOKENS = {"idefics3": [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)],
               "smolvlm": [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]}


def image_processor(family: str, **over):
    """The family's transformers PIL-backend image processor at the tiny tile."""
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil
    from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil
    from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
        LlavaOnevisionImageProcessorPil,
    )
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil
    from transformers.models.smolvlm.image_processing_pil_smolvlm import SmolVLMImageProcessorPil

    t = TILE
    square = {"height": t, "width": t}
    kw = {
        # -hf InternVL checkpoints save crop_to_patches false; InternVLProcessor turns it on.
        "internvl": (GotOcr2ImageProcessorPil, dict(size=square, crop_to_patches=False, max_patches=6)),
        "idefics3": (Idefics3ImageProcessorPil, dict(size={"longest_edge": 3 * t}, max_image_size={"longest_edge": t})),
        "smolvlm": (SmolVLMImageProcessorPil, dict(size={"longest_edge": 3 * t}, max_image_size={"longest_edge": t})),
        "llava_onevision": (LlavaOnevisionImageProcessorPil,
                            dict(size=square, image_grid_pinpoints=[[i * t, j * t] for i in (1, 2, 3) for j in (1, 2, 3)])),
        "llava": (CLIPImageProcessorPil, dict(size={"shortest_edge": t}, crop_size=square)),
        "paligemma": (SiglipImageProcessorPil, dict(size=square, resample=3, image_seq_length=64,
                                                    image_mean=[0.5] * 3, image_std=[0.5] * 3)),
        "gemma3": (Gemma3ImageProcessorPil, dict(size=square)),
    }[family]
    return kw[0](**{**kw[1], **over})


def tokenizer(family: str):
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("\n+| +|[^\n ]+"), behavior="isolated")
    t = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", bos_token="[UNK]",
                                extra_special_tokens=SPECIAL[family])
    if family in GRID_TOKENS:
        t.add_tokens(GRID_TOKENS[family], special_tokens=True)
    return t


def make_folder(root: Path, family: str, save_tokenizer: bool = True, **over) -> Path:
    """config.json (+ image processor, + tokenizer) of a tiny VLM; image-token ids as the tokenizer has them."""
    folder = root / family
    folder.mkdir(parents=True, exist_ok=True)
    tok = tokenizer(family)
    ids = {k: tok.convert_tokens_to_ids(v) for k, v in SPECIAL[family].items()}
    key = {"internvl": "context_image_token"}.get(family, "image_token")
    name = "image_token_id" if family in ("internvl", "idefics3", "smolvlm") else "image_token_index"
    cfg = {name: ids[key]}
    if family == "gemma3":
        cfg.update(boi_token_index=ids["boi_token"], eoi_token_index=ids["eoi_token"])
    config = vlm_config(family)
    for k, v in cfg.items():
        setattr(config, k, v)
    config.save_pretrained(folder)
    image_processor(family, **over).save_pretrained(folder)
    if save_tokenizer:
        tok.save_pretrained(folder)
    return folder


def manifest_vlm(folder: Path, compress: str = "none") -> dict:
    """manifest["vlm"] as export writes it (VlmPlan.to_dict), without building the model."""
    from tokcomp_edge.compression.spec import parse_spec
    from tokcomp_edge.vlm.build import resolve_vlm
    from tokcomp_edge.vlm.plan import plan_vlm

    return plan_vlm(resolve_vlm(f"hf:{folder}"), parse_spec(compress), None).to_dict()


def photo(path: Path):
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        return im.copy()

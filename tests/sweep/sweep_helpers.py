"""A tiny LLaVA folder a sweep can run: random transformers weights (LLM included, tests/vlm/vlm_helpers.py),
a word-level tokenizer whose ids fit the tiny vocabulary (id 5 = `<image>`, as the config says), and a
LlavaProcessor with a chat template, all saved with save_pretrained (nothing downloads)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "vlm"))

from vlm_helpers import build_vlm, save_vlm  # noqa: E402

SPECIAL = ["<pad>", "<s>", "</s>", "<unk>", "<sep>", "<image>"]
WORDS = ("what colour is the shape left right top bottom how many shapes are there red green blue yellow one two "
         "three four square circle triangle small large user assistant : ? . a of in and it").split()
TEMPLATE = ("{% for m in messages %}{{ m['role'] }} :{% for c in m['content'] %}"
            "{% if c['type'] == 'image' %} <image>{% else %} {{ c['text'] }}{% endif %}{% endfor %} "
            "{% endfor %}{% if add_generation_prompt %}assistant :{% endif %}")


def word_tokenizer():
    """A PreTrainedTokenizerFast over SPECIAL + WORDS + filler words up to the model's 300 ids."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIAL + WORDS)}
    for i in range(len(vocab), 300):
        vocab[f"w{i}"] = i
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>")
    fast.add_special_tokens({"additional_special_tokens": ["<image>"]})
    return fast


def save_llava_folder(folder: Path, seed: int = 0, processor: bool = True, **over) -> tuple[Path, object]:
    """Save a tiny random LLaVA (vision tower, projector and LLM) with its tokenizer (+ processor)."""
    from transformers import CLIPImageProcessor, LlavaProcessor

    model = build_vlm("llava", seed=seed, **over)
    save_vlm(model, folder)
    tok = word_tokenizer()
    if processor:
        ip = CLIPImageProcessor(size={"shortest_edge": 128}, crop_size={"height": 128, "width": 128})
        LlavaProcessor(image_processor=ip, tokenizer=tok, patch_size=16, vision_feature_select_strategy="default",
                       num_additional_image_tokens=1,  # the CLIP CLS, as llava-hf processors record it
                       chat_template=TEMPLATE).save_pretrained(folder)
    else:
        tok.save_pretrained(folder)
    return folder, model

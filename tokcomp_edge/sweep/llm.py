"""The VLM's own LLM, run in PyTorch: the checkpoint loaded whole (transformers' class), prompts built with
the processor's chat template, image features spliced at the image-token positions, greedy decoding.

One function, `steps`, computes every answer distribution: the reference's greedy decode and a candidate's
teacher-forced pass are the same loop (prefill, then one token at a time through the KV cache), differing
only in which token is fed next. Given the same features, the two are the same computation bit for bit,
which is why `none` comes out at exactly top1 = 1, kl = 0, match = 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError, UnsupportedModelType, WeightsError

# Families the sweep splices features into; the others are refused until their LLM-side layout is in.
SWEEP_FAMILIES = ("llava",)
DEFAULT_TEMPLATE = "USER: {image}\n{prompt} ASSISTANT:"
# The LLM's weights as loaded (the vision path stays float32, as exported; its features are cast at the splice).
LLM_DTYPES = ("float32", "bfloat16", "float16")


@dataclass
class LanguageModel:
    """The full VLM, its tokenizer and how a prompt is laid out.

    Attributes:
        model: transformers' `…ForConditionalGeneration` (eval, float32).
        tokenizer: the folder's tokenizer.
        image_token, image_token_id: the placeholder the processor expands to one token per image feature.
        template: `processor chat template` or the fallback text with `{image}` / `{prompt}`.
        processor: the folder's processor when it has one (its chat template is used).
        eos_ids: tokens that end an answer.
    """

    model: Any
    tokenizer: Any
    image_token: str
    image_token_id: int
    template: str
    processor: Any = None
    eos_ids: frozenset[int] = field(default_factory=frozenset)

    def render(self, prompt: str) -> str:
        """The prompt text with one image placeholder, as the processor's chat template renders it."""
        if self.processor is not None and getattr(self.processor, "chat_template", None):
            msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
            return self.processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        if getattr(self.tokenizer, "chat_template", None):
            msgs = [{"role": "user", "content": f"{self.image_token}\n{prompt}"}]
            return self.tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        return DEFAULT_TEMPLATE.format(image=self.image_token, prompt=prompt)

    def prompt_ids(self, prompt: str, n_image_tokens: int) -> list[int]:
        """Token ids of the rendered prompt with the placeholder expanded to `n_image_tokens` copies (what the
        processor does when its image-token count is the candidate's)."""
        ids = list(self.tokenizer(self.render(prompt))["input_ids"])
        at = [i for i, t in enumerate(ids) if t == self.image_token_id]
        if len(at) != 1:
            raise InputError(f"the rendered prompt holds {len(at)} image tokens ({self.image_token!r}, id "
                             f"{self.image_token_id}), expected one", "check the folder's chat template and tokenizer")
        return ids[:at[0]] + [self.image_token_id] * n_image_tokens + ids[at[0] + 1:]

    def embeds(self, ids: list[int], features):
        """inputs_embeds [1, L, D]: the token embeddings with `features` [T, D] at the image-token positions
        (transformers' get_placeholder_mask + masked_scatter, in order)."""
        import torch

        t = torch.tensor([ids])
        emb = self.model.get_input_embeddings()(t)
        mask = t[0] == self.image_token_id
        if int(mask.sum()) != features.shape[0]:
            raise ValueError(f"{int(mask.sum())} image tokens for {features.shape[0]} features")
        emb = emb.clone()
        emb[0, mask] = features.to(emb.dtype)
        return emb

    def steps(self, embeds, k: int, forced: list[int] | None = None):
        """Greedy decode of up to `k` tokens (stop after an eos), or a teacher-forced pass feeding `forced`.

        Returns:
            (tokens, logits [len(tokens), V] float32): the token at each answer position and the logits it
            was predicted from (with `forced`, the tokens are `forced`).
        """
        import torch
        from transformers import DynamicCache

        n = k if forced is None else len(forced)
        out_tokens, rows = [], []
        with torch.no_grad():
            cache = DynamicCache(config=self.model.config.get_text_config())
            out = self.model(inputs_embeds=embeds, cache=cache, use_cache=True, logits_to_keep=1)
            for i in range(n):
                logits = out.logits[0, -1].float()
                rows.append(logits)
                tok = int(forced[i]) if forced is not None else int(torch.argmax(logits))
                out_tokens.append(tok)
                if i == n - 1 or (forced is None and tok in self.eos_ids):
                    break
                nxt = self.model.get_input_embeddings()(torch.tensor([[tok]]))
                out = self.model(inputs_embeds=nxt, cache=cache, use_cache=True)  # the cache grows in place
        return out_tokens, torch.stack(rows)

    def text(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=False)


def _llm_tensor_names(spec, names: list[str]) -> list[str]:
    from ..vlm.build import checkpoint_names

    vision = checkpoint_names(spec, names)
    return [n for n in names if n not in vision]


def load_language_model(model_id: str, dtype: str = "float32") -> LanguageModel:
    """Load the whole VLM of an `hf:` folder (LLM included) with its tokenizer and processor.

    Args:
        model_id: `hf:<folder>`.
        dtype: an LLM_DTYPES entry (bfloat16 halves the memory of a 7B LLM; the comparison stays exact for
            `none`, since reference and candidates run in the same dtype).

    Raises:
        InputError (exit 2): not an hf: folder, a family the sweep does not support, no tokenizer;
        WeightsError (exit 2): a folder without the LLM's weights (export needs only the vision path).
    """
    import torch
    import transformers
    from transformers.utils import logging as hf_logging

    from ..vlm import resolve_vlm
    from ..vlm.checkpoint import find_weights

    if dtype not in LLM_DTYPES:
        raise InputError(f"--llm-dtype {dtype!r} is not one of {', '.join(LLM_DTYPES)}", "use float32 or bfloat16")
    if not (isinstance(model_id, str) and model_id.startswith("hf:") and model_id[3:]):
        raise InputError(f"{model_id!r} is not an hf: folder; the sweep runs the VLM's own LLM from its checkpoint",
                         "give hf:<folder> holding config.json, the weights (LLM included) and the tokenizer")
    folder = Path(model_id[3:]).expanduser()
    spec = resolve_vlm(model_id)
    fam = spec.family.model_type
    if fam not in SWEEP_FAMILIES:
        raise UnsupportedModelType(
            f"tokcomp sweep supports {', '.join(SWEEP_FAMILIES)} folders so far; {folder} is {fam}, whose "
            "LLM-side image-token layout the sweep does not build yet", "export it with `tokcomp export` "
            "(no sweep), or sweep a LLaVA checkpoint")
    src = find_weights(folder)
    if not _llm_tensor_names(spec, src.names):
        raise WeightsError(f"{src.path} holds the vision path only, no LLM tensors; the sweep runs the VLM's "
                           "own LLM (export does not need it)",
                           "copy the full checkpoint (language_model and lm_head weights) into the folder")
    cls = getattr(transformers, spec.family.hf_class)
    was = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        model, info = cls.from_pretrained(folder, dtype=getattr(torch, dtype), output_loading_info=True)
        tokenizer = _load(transformers.AutoTokenizer, folder)
        processor = _load(transformers.AutoProcessor, folder, required=False)
    finally:
        hf_logging.set_verbosity(was)
    missing = [k for k in info.get("missing_keys", []) if "vision_tower" not in k and "projector" not in k]
    if missing:
        raise WeightsError(f"{src.path} lacks {len(missing)} LLM tensors (e.g. {missing[0]})",
                           "copy every shard of the checkpoint into the folder")
    model.eval()
    image_id = int(getattr(model.config, "image_token_id", None) or model.config.image_token_index)
    image_token = getattr(processor, "image_token", None) or tokenizer.convert_ids_to_tokens(image_id)
    eos = getattr(model.generation_config, "eos_token_id", None)
    eos = {eos} if isinstance(eos, int) else set(eos or [])
    if tokenizer.eos_token_id is not None:
        eos.add(int(tokenizer.eos_token_id))
    if processor is not None and not hasattr(processor, "apply_chat_template"):
        processor = None
    return LanguageModel(model=model, tokenizer=tokenizer, image_token=str(image_token), image_token_id=image_id,
                         template="processor chat template" if getattr(processor, "chat_template", None) else
                         ("tokenizer chat template" if getattr(tokenizer, "chat_template", None) else DEFAULT_TEMPLATE),
                         processor=processor, eos_ids=frozenset(eos))


def _load(cls, folder: Path, required: bool = True):
    try:
        return cls.from_pretrained(folder)
    except Exception as exc:  # noqa: BLE001 - transformers raises OSError, ValueError, KeyError, TypeError
        if not required:
            return None
        raise InputError(f"{folder} has no usable tokenizer ({str(exc).strip().splitlines()[0][:120]})",
                         "copy the checkpoint's tokenizer files (tokenizer.json, tokenizer_config.json) into it") from exc

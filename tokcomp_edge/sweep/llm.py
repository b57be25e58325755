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

# Qwen-VL families: M-RoPE positions from the layout's image_grid_thw (get_rope_index), Qwen3-VL's DeepStack.
QWEN = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_5")
# Families the sweep lays out and splices (every family `tokcomp export hf:` handles; layout.py knows each).
SWEEP_FAMILIES = ("llava", "llava_onevision", "internvl", "idefics3", "smolvlm", "gemma3", "paligemma",
                  "lfm2_vl", *QWEN)
DEFAULT_TEMPLATE = "USER: {image}\n{prompt} ASSISTANT:"
# The LLM's weights as loaded (the vision path stays float32, as exported; its features are cast at the splice).
LLM_DTYPES = ("float32", "bfloat16", "float16")


@dataclass
class LlmInput:
    """A prompt ready for `steps`: the embeddings and what the family's LLM needs besides them.

    Attributes:
        embeds: inputs_embeds [1, L, D].
        prefill: keyword arguments of the prefill call only (Qwen: position_ids [3, 1, L] from get_rope_index,
            + visual_pos_masks / deepstack_visual_embeds for Qwen3-VL; Gemma 3 / PaliGemma: token_type_ids,
            which make the image (PaliGemma: the whole prefix) attend bidirectionally, as the model's own
            prefill does).
        rope_delta: Qwen: M-RoPE's offset of the text positions after the image (the cached decode steps
            sit at cache length + delta on all three axes, as transformers' compute_3d_position_ids places them).
    """

    embeds: Any
    prefill: dict[str, Any] = field(default_factory=dict)
    rope_delta: Any = None


@dataclass
class LanguageModel:
    """The full VLM, its tokenizer and how a prompt is laid out.

    Attributes:
        model: transformers' `…ForConditionalGeneration` (eval, float32).
        tokenizer: the folder's tokenizer.
        image_token, image_token_id: the placeholder token, one per image feature.
        template: `processor chat template` or the fallback text with `{image}` / `{prompt}`.
        processor: the folder's processor when it has one (its chat template is used).
        eos_ids: tokens that end an answer.
        family: the VLM's model_type.
        marker: the text that stands for one image in the rendered prompt and that the family's processor
            replaces with the image's layout (Gemma 3: `<start_of_image>`, Qwen: vision_start + image_pad +
            vision_end, InternVL: `<IMG_CONTEXT>`; the image token elsewhere). Empty: the image token.
    """

    model: Any
    tokenizer: Any
    image_token: str
    image_token_id: int
    template: str
    processor: Any = None
    eos_ids: frozenset[int] = field(default_factory=frozenset)
    family: str = "llava"
    marker: str = ""

    @property
    def image_marker(self) -> str:
        return self.marker or self.image_token

    def render(self, prompt: str) -> str:
        """The prompt text with one image marker, as the processor's chat template renders it (PaliGemma, which
        has none: the processor's own prefix layout, image + bos + prompt + newline)."""
        marker = self.image_marker
        if self.processor is not None and getattr(self.processor, "chat_template", None):
            msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
            return self.processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        if self.family == "paligemma":
            return f"{marker}{self.tokenizer.bos_token or ''}{prompt}\n"
        if getattr(self.tokenizer, "chat_template", None):
            msgs = [{"role": "user", "content": f"{marker}\n{prompt}"}]
            return self.tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        return DEFAULT_TEMPLATE.format(image=marker, prompt=prompt)

    def prompt_ids(self, prompt: str, image) -> list[int]:
        """Token ids of the rendered prompt with the image marker replaced by the image's layout text and the
        whole tokenized, as the family's processor does it when its image-token count is the candidate's.

        Args:
            image: the runtime's ImageLayout for the candidate (its `prompt` text, `tokens` count), or a plain
                count `n` (the image token n times: LLaVA's layout).
        Raises:
            InputError: the rendered prompt does not hold the marker exactly once;
            InputError: the tokenized prompt holds another number of image tokens than the layout says.
        """
        text = self.render(prompt)
        marker = self.image_marker
        if text.count(marker) != 1:
            raise InputError(f"the rendered prompt holds {text.count(marker)} image markers ({marker!r}), expected one",
                             "check the folder's chat template and tokenizer")
        if isinstance(image, int):
            piece, n = self.image_token * image, image
        else:
            piece, n = image.prompt, int(image.tokens)
        ids = list(self.tokenizer(text.replace(marker, piece))["input_ids"])
        got = sum(1 for t in ids if t == self.image_token_id)
        if got != n:
            raise InputError(f"the prompt tokenizes to {got} image tokens ({self.image_token!r}, id "
                              f"{self.image_token_id}) for a layout of {n}", "check the folder's tokenizer: the "
                              "image placeholders must be special tokens")
        return ids

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

    def inputs(self, ids: list[int], image) -> LlmInput:
        """`steps`' input for a prompt and one image (a sweep ImageInput: features, layout, DeepStack; or bare
        features [T, D] for the families that need nothing else)."""
        import torch

        feats = getattr(image, "features", image)
        emb = self.embeds(ids, feats)
        t = torch.tensor([ids])
        mask = t == self.image_token_id
        if self.family in QWEN:
            grid = getattr(getattr(image, "layout", None), "image_grid_thw", None)
            if grid is None:
                raise ValueError("a Qwen prompt needs the layout's image_grid_thw for its M-RoPE positions")
            # The LLM's own rule: the grid (the reduced one under compression) / merge² tokens, M-RoPE positions.
            pos, delta = self.model.model.get_rope_index(t, mask.int(), image_grid_thw=torch.tensor([grid]))
            kw: dict[str, Any] = {"position_ids": pos}
            deep = getattr(image, "deepstack", None) or []
            if deep:
                kw.update(visual_pos_masks=mask, deepstack_visual_embeds=[d.to(emb.dtype) for d in deep])
            return LlmInput(emb, kw, delta)
        if self.family == "gemma3":  # what Gemma3Processor returns as token_type_ids: 1 at the image tokens
            return LlmInput(emb, {"token_type_ids": mask.long()})
        if self.family == "paligemma":  # PaliGemmaProcessor: 0 over the whole prefix (no suffix)
            return LlmInput(emb, {"token_type_ids": torch.zeros_like(t)})
        return LlmInput(emb)

    def _forward(self, embeds, cache, kw: dict[str, Any]):
        if self.family in QWEN:
            # The text model itself: the VLM's forward derives DeepStack from pixel_values only.
            out = self.model.model.language_model(inputs_embeds=embeds, cache=cache, use_cache=True, **kw)
            return self.model.lm_head(out.last_hidden_state[:, -1:])
        return self.model(inputs_embeds=embeds, cache=cache, use_cache=True, logits_to_keep=1, **kw).logits

    def steps(self, inp, k: int, forced: list[int] | None = None):
        """Greedy decode of up to `k` tokens (stop after an eos), or a teacher-forced pass feeding `forced`.

        Args:
            inp: an LlmInput (`inputs`), or bare inputs_embeds [1, L, D] for families with 1-D positions.
        Returns:
            (tokens, logits [len(tokens), V] float32): the token at each answer position and the logits it
            was predicted from (with `forced`, the tokens are `forced`).
        """
        import torch
        from transformers import DynamicCache

        if not isinstance(inp, LlmInput):
            inp = LlmInput(inp)
        n = k if forced is None else len(forced)
        length = int(inp.embeds.shape[1])
        out_tokens, rows = [], []
        with torch.no_grad():
            cache = DynamicCache(config=self.model.config.get_text_config())
            logits = self._forward(inp.embeds, cache, inp.prefill)
            for i in range(n):
                row = logits[0, -1].float()
                rows.append(row)
                tok = int(forced[i]) if forced is not None else int(torch.argmax(row))
                out_tokens.append(tok)
                if i == n - 1 or (forced is None and tok in self.eos_ids):
                    break
                nxt = self.model.get_input_embeddings()(torch.tensor([[tok]]))
                kw = {}
                if inp.rope_delta is not None:  # the next token's M-RoPE position on all three axes
                    at = torch.tensor(length + i).view(1, 1, 1) + inp.rope_delta.view(1, -1, 1)
                    kw["position_ids"] = at.expand(3, 1, 1)
                logits = self._forward(nxt, cache, kw)  # the cache grows in place
        return out_tokens, torch.stack(rows)

    def text(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=False)


def _llm_tensor_names(spec, names: list[str]) -> list[str]:
    from ..vlm.build import checkpoint_names

    vision = checkpoint_names(spec, names)
    return [n for n in names if n not in vision]


def check_family(model_id: str) -> str:
    """The folder's config.json model_type, refused in one line (UnsupportedModelType, exit 2) unless the
    sweep lays its images out — before any model is built or the VLM spec is read."""
    from ..core.hf_files import read_json

    folder = Path(model_id[3:]).expanduser()
    fam = read_json(folder / "config.json").get("model_type")
    if fam not in SWEEP_FAMILIES:
        raise UnsupportedModelType(
            f"tokcomp sweep supports {', '.join(SWEEP_FAMILIES)} folders; {folder} is {fam!r}, whose LLM-side "
            "image-token layout the sweep does not build", "sweep a VLM checkpoint of one of those families "
            "(`tokcomp models` lists them)")
    return str(fam)


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
    check_family(model_id)
    spec = resolve_vlm(model_id)
    fam = spec.family.model_type
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
    vision = (spec.family.vision_attr, spec.family.projector_attr, "vision_tower", "projector")
    missing = [k for k in info.get("missing_keys", []) if not any(v in k for v in vision)]
    if missing:
        raise WeightsError(f"{src.path} lacks {len(missing)} LLM tensors (e.g. {missing[0]})",
                           "copy every shard of the checkpoint into the folder")
    model.eval()
    image_id = int(getattr(model.config, "image_token_id", None) or model.config.image_token_index)
    image_token, marker = _placeholders(spec, image_id, tokenizer, processor)
    eos = getattr(model.generation_config, "eos_token_id", None)
    eos = {eos} if isinstance(eos, int) else set(eos or [])
    if tokenizer.eos_token_id is not None:
        eos.add(int(tokenizer.eos_token_id))
    if processor is not None and not hasattr(processor, "apply_chat_template"):
        processor = None
    return LanguageModel(model=model, tokenizer=tokenizer, image_token=str(image_token), image_token_id=image_id,
                         template=_template_name(fam, processor, tokenizer),
                         processor=processor, eos_ids=frozenset(eos), family=fam, marker=marker)


def _template_name(fam: str, processor, tokenizer) -> str:
    if getattr(processor, "chat_template", None):
        return "processor chat template"
    if fam == "paligemma":
        return "PaliGemma prefix: {image}<bos>{prompt}\\n"
    return "tokenizer chat template" if getattr(tokenizer, "chat_template", None) else DEFAULT_TEMPLATE


def _placeholders(spec, image_id: int, tokenizer, processor) -> tuple[str, str]:
    """(image token text, the marker the family's processor replaces): from the prompt record the export
    writes (vlm/processor_record.py: the tokenizer's own names, the processor's fallbacks)."""
    from ..vlm.processor_record import prompt_record

    toks = prompt_record(spec, 0)["tokens"]
    image = (toks.get("image") or {}).get("text") or getattr(processor, "image_token", None) \
        or tokenizer.convert_ids_to_tokens(image_id)
    fam = spec.family.model_type
    if fam == "gemma3":
        return str(image), str(toks["boi"]["text"])
    if fam in QWEN:
        return str(image), f"{toks['start']['text']}{image}{toks['end']['text']}"
    return str(image), str(image)


def _load(cls, folder: Path, required: bool = True):
    try:
        return cls.from_pretrained(folder)
    except Exception as exc:  # noqa: BLE001 - transformers raises OSError, ValueError, KeyError, TypeError
        if not required:
            return None
        raise InputError(f"{folder} has no usable tokenizer ({str(exc).strip().splitlines()[0][:120]})",
                         "copy the checkpoint's tokenizer files (tokenizer.json, tokenizer_config.json) into it") from exc

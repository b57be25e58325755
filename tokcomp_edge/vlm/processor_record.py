"""What the device needs to tile images and write prompts exactly as the VLM's transformers processor does.

Recorded at export in manifest["vlm"]["processor"] and manifest["vlm"]["prompt"], so that the torch-free
runtime (tokcomp_edge/runtime/) needs only the bundle. The values follow what the *processor* does, which is
not always what its saved image-processor file says (transformers 5.24):

- InternVLProcessor passes `crop_to_patches=True` to GotOcr2ImageProcessor whatever the file says (-hf
  checkpoints save `false`): tiles of `size`, min/max_patches, a thumbnail whenever there is more than one.
- Gemma3Processor passes `do_pan_and_scan=False` (and its other pan-and-scan defaults) unless the caller
  asks: the saved flag is ignored, so pan-and-scan is recorded off.
- Idefics3/SmolVLM: `size.longest_edge` (first resize), `max_image_size.longest_edge` (the tile), Lanczos.
- LLaVA-OneVision: the image processor's `image_grid_pinpoints` choose the crops; config.json's pinpoints and
  `vision_aspect_ratio` drive the feature packing (pack_image_features), recorded beside them.

Fields a folder does not give take transformers' class defaults, expressed at the exported tile (the class
defaults assume the published tile: InternVL 448, SmolVLM 512…), and `source` says so.

The prompt section holds the placeholder strings the processor inserts, their ids (config.json's
`image_token_id` & co., tokenizer.json / tokenizer_config.json read as JSON), and the ids of the short text
pieces between special tokens (Idefics3's newlines, Gemma 3's "\\n\\n"), tokenized here once with the
folder's tokenizer.json so the device needs no tokenizer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .spec import FAMILY_DEFAULT, VlmSpec

# GotOcr2ImageProcessor / Idefics3ImageProcessor / LlavaOnevisionImageProcessor class defaults (transformers 5).
_RESAMPLE = {"internvl": 3, "idefics3": 1, "smolvlm": 1, "llava_onevision": 3}
_PROCESSOR_CLASS = {"internvl": "GotOcr2ImageProcessor", "idefics3": "Idefics3ImageProcessor",
                    "smolvlm": "SmolVLMImageProcessor", "llava_onevision": "LlavaOnevisionImageProcessor"}
# Gemma3Processor's images_kwargs (processing_gemma3.py): passed on every call, so they win over the file.
_GEMMA3_PAS = {"do_pan_and_scan": False, "pan_and_scan_min_crop_size": 256, "pan_and_scan_max_num_crops": 4,
               "pan_and_scan_min_ratio_to_activate": 1.2}

# The placeholder strings each processor inserts, as its __init__ reads them from the tokenizer (an attribute
# from tokenizer_config.json's extra_special_tokens) with the processor's own fallback; and the config.json key
# of each one's id where the model reads it.
_TOKENS = {
    "internvl": {"start": ("start_image_token", "<img>", None), "end": ("end_image_token", "</img>", None),
                 "image": ("context_image_token", "<IMG_CONTEXT>", "image_token_id")},
    "idefics3": {"fake": (None, "<fake_token_around_image>", None), "image": (None, "<image>", "image_token_id"),
                 "global": (None, "<global-img>", None)},
    "smolvlm": {"fake": ("fake_image_token", "<fake_token_around_image>", None),
                "image": ("image_token", "<image>", "image_token_id"),
                "global": ("global_image_token", "<global-img>", None)},
    "gemma3": {"boi": ("boi_token", "<start_of_image>", "boi_token_index"),
               "image": ("image_token", "<image_soft_token>", "image_token_index"),
               "eoi": ("eoi_token", "<end_of_image>", "eoi_token_index")},
    "paligemma": {"image": ("image_token", "<image>", "image_token_index")},
    "llava": {"image": ("image_token", "<image>", "image_token_index")},
    "llava_onevision": {"image": ("image_token", "<image>", "image_token_index")},
    "lfm2_vl": {"start": ("image_start_token", "<|image_start|>", None),
                "image": ("image_token", "<image>", "image_token_id"),
                "end": ("image_end_token", "<|image_end|>", None)},
}
for _q in ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_5"):
    _TOKENS[_q] = {"start": ("vision_start_token", "<|vision_start|>", "vision_start_token_id"),
                   "image": ("image_token", "<|image_pad|>", "image_token_id"),
                   "end": ("vision_end_token", "<|vision_end|>", "vision_end_token_id")}
# Text between special tokens that a family's layout can contain (tokenized here, looked up on the device).
_TEXT = {"idefics3": ("\n", "\n\n"), "smolvlm": ("\n", "\n\n"),
         "gemma3": ("\n\n", "Here is the original image \n\n",
                    "\n\n and here are some crops to help you see better \n\n", "\n\n \n\n")}
# The processor's own per-tile count key in processor_config.json (what the stock processor inserts).
_STOCK_KEY = {"internvl": "image_seq_length", "gemma3": "image_seq_length", "idefics3": "image_seq_len",
              "smolvlm": "image_seq_len", "llava_onevision": "num_image_tokens"}


def folder_of(vlm: VlmSpec) -> Path | None:
    """The checkpoint folder of an `hf:` VLM (presets have none)."""
    return Path(vlm.name[3:]).expanduser() if vlm.name.startswith("hf:") else None


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _edge(value: Any, default: int) -> int:
    if isinstance(value, dict):
        return int(value.get("longest_edge") or value.get("height") or value.get("shortest_edge") or default)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return default


def _hw(value: Any, default: tuple[int, int]) -> list[int]:
    if isinstance(value, dict) and value.get("height") and value.get("width"):
        return [int(value["height"]), int(value["width"])]
    if isinstance(value, dict) and value.get("shortest_edge"):
        return [int(value["shortest_edge"])] * 2
    if isinstance(value, int) and not isinstance(value, bool):
        return [value, value]
    return list(default)


def processor_record(vlm: VlmSpec) -> dict[str, Any]:
    """manifest["vlm"]["processor"]: how one image becomes the engine's tiles (runtime/processor.py reads it).

    Common keys: family, processor_class, source, tile [H, W], mean, std, rescale_factor (null: no rescale),
    do_normalize, do_convert_rgb, resample (PIL number), rule (`single`, `crop_to_patches`, `split`,
    `anyres`), frame (the one-tile policy of manifest["preprocess"], for `single` tiles and Gemma 3's crops),
    and the rule's own fields.
    """
    from ..image_policy import INTERPOLATIONS, policy_for_spec

    fam = vlm.family.model_type
    pre = vlm.preprocessor
    tile = [int(s) for s in vlm.tower.image_size]
    source = vlm.preprocessor_source
    if source != FAMILY_DEFAULT:
        source += "; fields it lacks: transformers' class defaults at the exported tile"
    else:
        source = f"{FAMILY_DEFAULT}: transformers' class defaults at the exported tile {tile[1]}x{tile[0]}"
    policy = policy_for_spec(vlm.tower, fam)
    frame = {"image_size": tile, "mean": list(vlm.tower.mean), "std": list(vlm.tower.std), **policy.to_dict()}
    rescale = float(pre.get("rescale_factor", 1 / 255)) if pre.get("do_rescale", True) else None
    rec: dict[str, Any] = {
        "family": fam, "processor_class": str(pre.get("image_processor_type") or _PROCESSOR_CLASS.get(fam)
                                              or policy.processor),
        "source": source, "tile": tile, "mean": list(vlm.tower.mean), "std": list(vlm.tower.std),
        "rescale_factor": rescale, "do_normalize": bool(pre.get("do_normalize", True)),
        "do_convert_rgb": bool(pre.get("do_convert_rgb", True) if fam != "gemma3" else True),
        "resample": int(pre.get("resample", _RESAMPLE.get(fam, INTERPOLATIONS[policy.interpolation]))),
        "rule": "single", "frame": frame}
    if fam == "internvl":
        rec.update(rule="crop_to_patches", crop_to_patches=True, saved_crop_to_patches=pre.get("crop_to_patches"),
                   size=_hw(pre.get("size"), tuple(tile)), min_patches=int(pre.get("min_patches", 1)),
                   max_patches=int(pre.get("max_patches", 12)), use_thumbnail=True)
    elif fam in ("idefics3", "smolvlm"):
        edge = _edge(pre.get("max_image_size"), tile[0])
        rec.update(rule="split", do_resize=bool(pre.get("do_resize", True)),
                   longest_edge=_edge(pre.get("size"), 4 * edge), max_image_size=edge,
                   do_image_splitting=bool(pre.get("do_image_splitting", True)))
    elif fam == "llava_onevision":
        size = _hw(pre.get("size"), tuple(tile))
        crop = pre.get("crop_size")
        patch = _edge(crop, 0) if isinstance(crop, dict) and crop.get("height") else size[0]
        cfg = vlm.config
        default_pins = [[i * size[0], j * size[1]] for i in range(1, 7) for j in range(1, 7)]
        pins = pre.get("image_grid_pinpoints") or cfg.get("image_grid_pinpoints") or default_pins
        rec.update(rule="anyres", size=size, patch_size=patch, image_grid_pinpoints=[list(map(int, p)) for p in pins],
                   model_grid_pinpoints=[list(map(int, p)) for p in (cfg.get("image_grid_pinpoints") or pins)],
                   vision_aspect_ratio=str(cfg.get("vision_aspect_ratio") or "anyres_max_9"),
                   do_pad=True, pad_background=[int(x * 255) for x in vlm.tower.mean])
    elif fam == "gemma3":
        rec.update(_GEMMA3_PAS, saved_do_pan_and_scan=pre.get("do_pan_and_scan"))
    elif fam == "llava":
        rec.update(do_pad=bool(pre.get("do_pad", False)),
                   pad_background=[int(x * 255) for x in vlm.tower.mean])
    return rec


def _vocab(folder: Path) -> tuple[dict[str, int], dict[str, Any]]:
    """(token → id from tokenizer.json's vocab and added tokens and tokenizer_config.json's
    added_tokens_decoder, tokenizer_config.json)."""
    tj, tc = _json(folder / "tokenizer.json"), _json(folder / "tokenizer_config.json")
    vocab: dict[str, int] = {}
    model_vocab = (tj.get("model") or {}).get("vocab")
    if isinstance(model_vocab, dict):
        vocab.update({str(k): int(v) for k, v in model_vocab.items() if isinstance(v, int)})
    elif isinstance(model_vocab, list):  # Unigram: [[piece, score], …], the id is the position
        vocab.update({str(p[0]): i for i, p in enumerate(model_vocab) if isinstance(p, list) and p})
    for entry in tj.get("added_tokens") or []:
        if isinstance(entry, dict) and "content" in entry and "id" in entry:
            vocab[str(entry["content"])] = int(entry["id"])
    for key, entry in (tc.get("added_tokens_decoder") or {}).items():
        if isinstance(entry, dict) and "content" in entry and str(key).isdigit():
            vocab.setdefault(str(entry["content"]), int(key))
    return vocab, tc


def _text_ids(folder: Path, pieces: tuple[str, ...]) -> dict[str, list[int]]:
    """Each piece tokenized alone with the folder's tokenizer.json (special tokens split the text there too)."""
    path = folder / "tokenizer.json"
    if not pieces or not path.is_file():
        return {}
    try:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(path))
        return {p: list(tok.encode(p, add_special_tokens=False).ids) for p in pieces}
    except Exception:  # noqa: BLE001 - a tokenizer file the library cannot load leaves the ids unrecorded
        return {}


def prompt_record(vlm: VlmSpec, native_tokens: int) -> dict[str, Any]:
    """manifest["vlm"]["prompt"]: the placeholder strings, their ids (null where the folder gives none), the
    ids of the text pieces between them, and the per-tile count the stock processor would insert."""
    fam = vlm.family.model_type
    folder = folder_of(vlm)
    vocab, tc = _vocab(folder) if folder is not None else ({}, {})
    extra = tc.get("extra_special_tokens") if isinstance(tc.get("extra_special_tokens"), dict) else {}
    pc = _json(folder / "processor_config.json") if folder is not None else {}
    tokens: dict[str, dict[str, Any]] = {}
    for role, (attr, default, cfg_key) in _TOKENS.get(fam, {}).items():
        text = str(extra.get(attr) or tc.get(attr) or default) if attr else default
        tid = vlm.config.get(cfg_key) if cfg_key else None
        if tid is None and cfg_key == "image_token_id":
            tid = vlm.config.get("image_token_index")
        if tid is None:
            tid = vocab.get(text)
        tokens[role] = {"text": text, "id": int(tid) if isinstance(tid, int) and not isinstance(tid, bool) else None}
    grid_ids = {}
    if fam in ("idefics3", "smolvlm"):
        grid_ids = {f"<row_{i}_col_{j}>": vocab.get(f"<row_{i}_col_{j}>") for i in range(1, 7) for j in range(1, 7)}
    elif fam == "lfm2_vl":
        grid_ids = {"<|img_thumbnail|>": vocab.get("<|img_thumbnail|>")}
    stock = pc.get(_STOCK_KEY.get(fam, ""))
    if fam == "paligemma":
        stock = (vlm.preprocessor or {}).get("image_seq_length")
    return {"tokens": tokens, "grid_tokens": grid_ids,
            "text_ids": _text_ids(folder, _TEXT.get(fam, ())) if folder is not None else {},
            "stock_tokens_per_tile": int(stock) if isinstance(stock, int) else native_tokens,
            "stock_source": f"processor_config.json {_STOCK_KEY[fam]}" if isinstance(stock, int) and fam in _STOCK_KEY
            else "the VLM's native tokens per tile"}

"""The prompt layout of one image: the placeholder text / ids its processor inserts, with the bundle's counts.

The stock transformers processor inserts the VLM's *native* image-token count (InternVL 256 per tile); a bundle
with extra compression emits fewer (64 with pool:2), so the LLM input would no longer line up. This module
builds the same strings the processor builds (each family's `replace_image_token`, transformers 5.24) with
the bundle's compressed tokens per tile (manifest["vlm"]["tokens_per_tile"]), and their ids from
manifest["vlm"]["prompt"] (recorded at export; None where the folder had no tokenizer files).

| family | one image becomes |
|---|---|
| internvl | `<img>` + tiles·n `<IMG_CONTEXT>` + `</img>` |
| idefics3, smolvlm | per crop `<fake_token_around_image><row_r_col_c>` + n `<image>`, `\\n` after each row, then `\\n<fake_token_around_image><global-img>` + n `<image>` + `<fake_token_around_image>`; one tile: `<fake_token_around_image><global-img>` + n `<image>` + `<fake_token_around_image>` |
| llava_onevision | (packed count) `<image>`: base n + unpadded crops + one newline per row (`tokens`, `newline_positions`) |
| gemma3 | `\\n\\n<start_of_image>` + n `<image_soft_token>` + `<end_of_image>\\n\\n` (pan-and-scan: Gemma3Processor's sentence around the image and its crops) |
| paligemma, llava | n `<image>` (PaliGemma's processor adds `<bos>` after the last image of the prompt: prompt-level, not here) |
| qwen2_vl, qwen2_5_vl, qwen3_vl, qwen3_5 | `<\\|vision_start\\|>` + n `<\\|image_pad\\|>` + `<\\|vision_end\\|>` (the start/end come from the chat template); `image_grid_thw` = manifest vlm.qwen's, the grid M-RoPE needs |
| lfm2_vl | `<\\|image_start\\|>` + n `<image>` + `<\\|image_end\\|>` (one static tile) |

token_ids are the ids of exactly this text, tokenized alone: special tokens split the text there, but text
the user writes right before or after the placeholder can merge with a leading / trailing newline piece in a
BPE tokenizer — splice ids at the placeholder, or tokenize the whole prompt with the returned text.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import BundleError
from .processor import REEXPORT
from .tiling import TiledImage


@dataclass(frozen=True)
class ImageLayout:
    """Where one image's embeddings go in the LLM's input.

    Attributes:
        family: the VLM's model_type.
        rows, cols: the crop grid ((1, 1) for one tile).
        thumbnail: a thumbnail / global view / base image is among the tiles (TiledImage.thumbnail).
        tiles: tiles the engine ran for this image.
        tokens_per_tile: per tile, the tokens the bundle emits (compressed), in tile order.
        tokens: image tokens the LLM reads for this image (= placeholder count = embeddings rows).
        newline_positions: OneVision: rows of the embeddings that are the learned image_newline; [] elsewhere.
        prompt: the text the processor inserts for this image, with the compressed counts.
        token_ids: its ids, or None when the bundle records no tokenizer ids for some piece.
        bundle: the bundle's name (which bundle a routed request used).
        image_grid_thw: Qwen-VL: [1, h, w], the patch grid the merger read (after any extra compression), which
            the LLM's get_rope_index needs to place the image's tokens with M-RoPE (manifest vlm.qwen); the
            stock processor computes it from the image, a compressed bundle's is smaller. None elsewhere.
    """

    family: str
    rows: int
    cols: int
    thumbnail: bool
    tiles: int
    tokens_per_tile: list[int]
    tokens: int
    newline_positions: list[int] = field(default_factory=list)
    prompt: str = ""
    token_ids: list[int] | None = None
    bundle: str = ""
    image_grid_thw: list[int] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Pieces:
    """The layout as special tokens and text pieces, so the ids follow the text exactly."""

    def __init__(self, prompt: dict[str, Any]):
        self.tokens = prompt.get("tokens") or {}
        self.grid = prompt.get("grid_tokens") or {}
        self.text_ids = prompt.get("text_ids") or {}
        self.texts: list[str] = []
        self.ids: list[int] | None = []

    def _add(self, text: str, ids: list[int] | None) -> None:
        self.texts.append(text)
        if ids is None:
            self.ids = None  # one piece without ids: the bundle cannot say the ids of the whole
        elif self.ids is not None:
            self.ids.extend(ids)

    def special(self, role: str, times: int = 1) -> None:
        tok = self.tokens.get(role)
        if tok is None:
            raise BundleError(f"the manifest's vlm.prompt has no {role!r} token", REEXPORT)
        self._add(tok["text"] * times, [tok["id"]] * times if tok.get("id") is not None else None)

    def grid_token(self, text: str) -> None:
        tid = self.grid.get(text)
        self._add(text, [tid] if tid is not None else None)

    def text(self, text: str) -> None:
        self._add(text, self.text_ids.get(text))

    def result(self) -> tuple[str, list[int] | None]:
        return "".join(self.texts), (list(self.ids) if self.ids is not None else None)


def onevision_count(tiled: TiledImage, grid_out: tuple[int, int],
                    vision_aspect_ratio: str = "anyres_max_9") -> tuple[int, list[int]]:
    """LLaVA-OneVision's packed token count and newline rows for one image (LlavaOnevisionProcessor
    _get_number_of_features, as pack_image_features lays the features out), on the bundle's per-crop grid.

    Returns:
        (tokens, newline_positions): the base image's grid first, then the unpadded crops row by row, each row
        followed by one image_newline (rows and columns shrunk by the bilinear downscale above ratio 1.1).
        An image that shared its sample (one tile, no base): the tile's grid + one newline.
    """
    ph, pw = grid_out
    base = ph * pw
    if not tiled.thumbnail:
        return base + 1, [base]
    rows, cols = tiled.grid
    oh, ow = tiled.size
    cur_h, cur_w = ph * rows, pw * cols
    if ow / oh > cur_w / cur_h:
        new_h = int(round(oh * (cur_w / ow), 7))
        cur_h -= ((cur_h - new_h) // 2) * 2
    else:
        new_w = int(round(ow * (cur_h / oh), 7))
        cur_w -= ((cur_w - new_w) // 2) * 2
    max_patches = int(vision_aspect_ratio.strip("anyres_max_") or 9)
    ratio = math.sqrt(cur_h * cur_w / (max_patches * ph * pw))
    if ratio > 1.1:
        cur_h, cur_w = int(cur_h // ratio), int(cur_w // ratio)
    return base + cur_h * (cur_w + 1), [base + (r + 1) * (cur_w + 1) - 1 for r in range(cur_h)]


def image_layout(tiled: TiledImage, manifest: dict[str, Any], tokens: int | None = None,
                 newline_positions=()) -> ImageLayout:
    """The layout of one tiled image in a bundle's LLM prompt.

    Args:
        tiled: tile_image's result for the image.
        manifest: the bundle's manifest (vlm.tokens_per_tile, vlm.prompt, vlm.processor).
        tokens: OneVision: the packed count from packing the features (runtime/packing.py); computed from
            the tiling when None. Other families: must equal tiles × tokens_per_tile when given.
        newline_positions: OneVision: the packing's newline rows (computed when empty).
    Raises:
        BundleError: a bundle without the vlm.prompt section (exported before it existed), or a count that
            contradicts the bundle.
    """
    vlm = manifest.get("vlm") or {}
    prompt = vlm.get("prompt")
    if not prompt:
        raise BundleError(f"{manifest.get('name', 'the bundle')} records no vlm.prompt section", REEXPORT)
    fam = vlm.get("family", tiled.family)
    n = int(vlm.get("tokens_per_tile") or manifest["tokens_out"])
    rows, cols = tiled.grid
    per_tile = [n] * tiled.tiles
    total = n * tiled.tiles
    newlines: list[int] = list(newline_positions)
    grid_thw: list[int] | None = None
    p = _Pieces(prompt)
    if fam == "internvl":
        p.special("start")
        p.special("image", total)
        p.special("end")
    elif fam in ("idefics3", "smolvlm"):
        if tiled.thumbnail:
            for r in range(rows):
                for c in range(cols):
                    p.special("fake")
                    p.grid_token(f"<row_{r + 1}_col_{c + 1}>")
                    p.special("image", n)
                p.text("\n" if r < rows - 1 else "\n\n")
        p.special("fake")
        p.special("global")
        p.special("image", n)
        p.special("fake")
    elif fam == "gemma3":
        def full(before: str) -> None:
            p.text(before)
            p.special("boi")
            p.special("image", n)
            p.special("eoi")

        if tiled.tiles == 1:
            full("\n\n")
            p.text("\n\n")
        else:  # Gemma3Processor: the original image, then its crops
            full("Here is the original image \n\n")
            full("\n\n and here are some crops to help you see better \n\n")
            for _ in range(tiled.tiles - 2):
                full("\n\n \n\n")
            p.text("\n\n")
    elif fam == "llava_onevision":
        if tokens is None:
            grid = vlm.get("grid_out") or [int(math.isqrt(n))] * 2
            proc = vlm.get("processor") or {}
            tokens, newlines = onevision_count(tiled, tuple(grid), proc.get("vision_aspect_ratio") or "anyres_max_9")
        total = int(tokens)
        p.special("image", total)
    elif fam in ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_5", "lfm2_vl"):
        if fam != "lfm2_vl":
            grid_thw = _qwen_grid(vlm, manifest, n)
        p.special("start")
        p.special("image", total)
        p.special("end")
    else:  # llava, paligemma
        p.special("image", total)
    if tokens is not None and fam != "llava_onevision" and int(tokens) != total:
        raise BundleError(f"{tokens} image tokens given for a {fam} image of {tiled.tiles} tile(s) × {n}",
                          "pass the engine's own output count, or re-export")
    text, ids = p.result()
    return ImageLayout(family=fam, rows=rows, cols=cols, thumbnail=tiled.thumbnail, tiles=tiled.tiles,
                       tokens_per_tile=per_tile, tokens=total, newline_positions=newlines, prompt=text,
                       token_ids=ids, bundle=str(manifest.get("name", "")), image_grid_thw=grid_thw)


def _qwen_grid(vlm: dict[str, Any], manifest: dict[str, Any], n: int) -> list[int]:
    """manifest vlm.qwen.image_grid_thw, checked against the tokens per tile it must give (t·h·w / merge²)."""
    q = vlm.get("qwen") or {}
    thw, merge = q.get("image_grid_thw"), int(q.get("merge_size") or 2)
    if not thw or len(thw) != 3:
        raise BundleError(f"{manifest.get('name', 'the bundle')} records no vlm.qwen.image_grid_thw "
                          "(the LLM's M-RoPE needs it)", REEXPORT)
    thw = [int(v) for v in thw]
    if thw[0] * thw[1] * thw[2] != n * merge * merge:
        raise BundleError(f"vlm.qwen.image_grid_thw {thw} gives {thw[0] * thw[1] * thw[2] // (merge * merge)} "
                          f"tokens, the bundle emits {n} per tile", REEXPORT)
    return thw

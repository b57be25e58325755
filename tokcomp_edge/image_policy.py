"""Preprocessing policies: how each model family's own image processor frames a photo.

The processors differ, and int8 ranges or accuracy measured on differently framed pixels are wrong for
the deployed model, so the bundle records the policy of its encoder (manifest `preprocess`) and every
consumer — `validate --images`, `calibrate`, `preprocess` — applies that one (calibration/images.py):

| family | mirrors | resize | interpolation | crop |
|---|---|---|---|---|
| clip | CLIPImageProcessor | shortest edge → image size | bicubic | centre, image size |
| siglip | SiglipImageProcessor | to image size × image size | bicubic | none |
| dinov2 | BitImageProcessor (facebook/dinov2-*) | shortest edge → 256/224 · image size | bicubic | centre |
| vit | ViTImageProcessor | to image size × image size | bilinear | none |
| qwen | Qwen2VLImageProcessor, one tile | to the tile (H × W) | bicubic | none |
| lfm2_vl | Lfm2VlImageProcessor, one tile | to the tile (H × W) | bilinear | none |
| timm | timm's eval transform | shortest edge → ⌊image size / crop_pct⌋ | the model's | centre |
| legacy | bundles exported before policies existed | shorter side to cover the crop | bicubic | centre |
| generic | py: modules (no processor known) | the same as legacy, recorded | bicubic | centre |

`hf:` folders take the policy from their `preprocessor_config.json` (size, resample, crop, rescale
factor). A VLM family is added by one entry in FAMILY_RULES (and, for a framing none of RESIZE_RULES
describes — InternVL / SmolVLM tiles, Gemma 3 pan-and-scan — a new rule here and its implementation in
calibration/images.py `frame`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .errors import InputError

# shortest_edge: scale so the shorter side is `resize_size` (long side truncated, as transformers and
#   torchvision compute it), then centre-crop; square: resize to `resize_size` (H, W), aspect ratio not
#   kept; cover: scale so the image just covers the crop (ceil), then centre-crop (the legacy rule).
RESIZE_RULES = ("shortest_edge", "square", "cover")
# PIL's resampling filters by name; the numbers are PIL's, which transformers' `resample` field uses too.
INTERPOLATIONS = {"nearest": 0, "lanczos": 1, "bilinear": 2, "bicubic": 3, "box": 4, "hamming": 5}
RESCALE = 1 / 255
CONVERT_RGB = "alpha composited over white, then RGB (transformers' convert_to_rgb)"
LEGACY_SOURCE = ("legacy: the bundle records no preprocessing policy (exported before policies existed); "
                 "resize shorter side + centre crop, bicubic")


@dataclass(frozen=True)
class FamilyRule:
    """One family's processor, relative to the encoder's input size.

    Attributes:
        processor: the class it mirrors (recorded in the manifest).
        resize: a RESIZE_RULES entry.
        interpolation: an INTERPOLATIONS name.
        crop: centre-crop to the input size after resizing.
        resize_ratio: shortest-edge target / input size (DINOv2: 256 / 224).
        crop_offset: `floor` (transformers: ⌊(side − crop) / 2⌋) or `round` (torchvision's CenterCrop).
    """

    processor: str
    resize: str
    interpolation: str
    crop: bool
    resize_ratio: float = 1.0
    crop_offset: str = "floor"


FAMILY_RULES = {
    "clip": FamilyRule("CLIPImageProcessor", "shortest_edge", "bicubic", crop=True),
    "siglip": FamilyRule("SiglipImageProcessor", "square", "bicubic", crop=False),
    "dinov2": FamilyRule("BitImageProcessor", "shortest_edge", "bicubic", crop=True, resize_ratio=256 / 224),
    "vit": FamilyRule("ViTImageProcessor", "square", "bilinear", crop=False),
    # VLM towers whose processors cut images into tiles of the tower's size (InternVL's crop_to_patches,
    # Idefics3/SmolVLM's image splitting): the bundle sees one tile, i.e. a region resized to the tile.
    # The splitting itself is host-side; --images frames each photo as one tile (the thumbnail / global view).
    "internvl": FamilyRule("GotOcr2ImageProcessor (one tile)", "square", "bicubic", crop=False),
    "idefics3": FamilyRule("Idefics3ImageProcessor (one tile)", "square", "lanczos", crop=False),
    # A VLM whose processor frames differently from its tower family's: Gemma 3 resizes bilinearly where
    # SigLIP's processor is bicubic (transformers' Gemma3ImageProcessor; pan-and-scan is off by default).
    "gemma3": FamilyRule("Gemma3ImageProcessor", "square", "bilinear", crop=False),
    # Qwen-VL resizes each image to a grid of its own (smart_resize); a static-tile bundle is given the image
    # resized to its tile, which smart_resize then leaves as it is (sides already multiples of 28/32).
    "qwen": FamilyRule("Qwen2VLImageProcessor (one tile)", "square", "bicubic", crop=False),
    # LFM2-VL's processor resizes bilinearly where its SigLIP2 tower family's would be bicubic.
    "lfm2_vl": FamilyRule("Lfm2VlImageProcessor (one tile)", "square", "bilinear", crop=False),
}
# VLM model types whose own processor rule replaces the tower family's (policy_for_spec's `vlm_type`).
VLM_RULES = {"gemma3", "lfm2_vl"}
# Families whose processor's size fields describe the whole-image tiling (or Qwen's min/max pixel counts),
# not the tile: only the resampling and rescaling are taken from their preprocessor_config.json.
TILE_FAMILIES = {"internvl", "idefics3", "qwen"}
_TILE_KEYS = ("resample", "do_rescale", "rescale_factor", "image_processor_type")


@dataclass(frozen=True)
class PreprocessPolicy:
    """How a decoded image becomes the encoder's input; the defaults are the legacy policy.

    Attributes:
        image_size: (H, W) of the encoder input — what every policy ends at.
        mean, std: per-channel RGB normalisation on the rescaled (0–1) scale.
        resize: a RESIZE_RULES entry.
        resize_size: shortest_edge: the shorter side's target (int); square: (H, W); cover: None (the crop).
        interpolation: an INTERPOLATIONS name.
        crop: (H, W) of the centre crop, or None for no crop (cover always crops to image_size).
        rescale_factor: pixel values are multiplied by it before normalisation (1/255).
        crop_offset: how the centre crop's top-left is rounded: `floor` (transformers) or `round`
            (torchvision's CenterCrop, which timm uses) — one pixel of shift on odd margins.
        processor: the processor it mirrors (`CLIPImageProcessor`, …, or `legacy`).
        source: where the policy came from (preset family, preprocessor_config.json, legacy fallback).
    """

    image_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize: str = "cover"
    resize_size: int | tuple[int, int] | None = None
    interpolation: str = "bicubic"
    crop: tuple[int, int] | None = None
    rescale_factor: float = RESCALE
    crop_offset: str = "floor"
    processor: str = "legacy"
    source: str = LEGACY_SOURCE

    @property
    def legacy(self) -> bool:
        """True for a bundle without a recorded policy (today's resize + crop is applied)."""
        return self.processor == "legacy"

    def describe(self) -> str:
        """One line for the CLI and the report, e.g. `CLIPImageProcessor: shortest edge 224 bicubic, …`."""
        if self.resize == "shortest_edge":
            how = f"shortest edge {self.resize_size} {self.interpolation}"
        elif self.resize == "square":
            how = f"resize to {self.resize_size[1]}x{self.resize_size[0]} {self.interpolation}"
        else:
            how = f"shorter side to cover {self.image_size[1]}x{self.image_size[0]} {self.interpolation}"
        crop = f", centre crop {self.crop[1]}x{self.crop[0]}" if self.crop else ", no crop"
        scale = "x/255" if math.isclose(self.rescale_factor, RESCALE) else f"x·{self.rescale_factor:g}"
        return f"{self.processor}: {how}{crop}, {scale}, (x − mean) / std"

    def to_dict(self) -> dict[str, Any]:
        """The keys added to the manifest's `preprocess` entry (next to image_size, mean, std)."""
        size = self.resize_size
        return {"processor": self.processor, "resize": self.resize,
                "resize_size": list(size) if isinstance(size, tuple) else size,
                "interpolation": self.interpolation, "crop": list(self.crop) if self.crop else None,
                "rescale_factor": self.rescale_factor, "crop_offset": self.crop_offset, "convert_rgb": CONVERT_RGB,
                "policy_source": self.source}

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> PreprocessPolicy:
        """The policy a bundle recorded, or the legacy policy for a bundle from before policies.

        Raises:
            BundleError: the recorded policy names an unknown resize rule or interpolation.
        """
        from .errors import BundleError

        enc = manifest["encoder"]
        pre = manifest.get("preprocess") or {}
        h, w = pre.get("image_size") or enc["image_size"]
        base = dict(image_size=(int(h), int(w)), mean=_three(pre.get("mean") or enc["mean"]),
                    std=_three(pre.get("std") or enc["std"]))
        if "resize" not in pre:
            return cls(**base)
        if (pre["resize"] not in RESIZE_RULES or pre.get("interpolation") not in INTERPOLATIONS
                or pre.get("crop_offset", "floor") not in ("floor", "round")):
            raise BundleError(f"the manifest's preprocessing policy ({pre['resize']!r}, "
                              f"{pre.get('interpolation')!r}) is not one this tokcomp-edge knows",
                              "upgrade tokcomp-edge to the version that exported the bundle")
        size = pre.get("resize_size")
        return cls(**base, resize=pre["resize"], resize_size=tuple(size) if isinstance(size, list) else size,
                   interpolation=pre["interpolation"], crop=tuple(pre["crop"]) if pre.get("crop") else None,
                   rescale_factor=float(pre.get("rescale_factor", RESCALE)),
                   crop_offset=pre.get("crop_offset", "floor"), processor=pre.get("processor", "?"),
                   source=pre.get("policy_source", ""))


def _three(values) -> tuple[float, float, float]:
    return tuple(float(v) for v in values)


def policy_for(family: str, image_size: tuple[int, int], mean, std,
               processor_config: dict[str, Any] | None = None, *, timm_name: str | None = None,
               config_file: str = "preprocessor_config.json") -> PreprocessPolicy:
    """Derive the policy of an encoder.

    Args:
        family: the encoder family (`clip`, `siglip`, `dinov2`, `vit`, `timm`, `user`).
        image_size: (H, W) the encoder is exported at; the policy always ends at it.
        mean, std: the normalisation the bundle records.
        processor_config: an hf: folder's preprocessor_config.json; its size, resample, crop and rescale
            factor override the family's defaults (scaled when the export size differs from its size).
        timm_name: for family `timm`, the timm model name (its pretrained cfg gives crop_pct/interpolation).
        config_file: the file `processor_config` came from, as the policy's source names it.
    Returns:
        The policy; the legacy one, saying why, for families without a known processor (py: modules).
    Raises:
        InputError: a preprocessor_config.json this module cannot follow (non-square shortest/longest
            edge pairs, unknown resample), naming the field.
    """
    size = (int(image_size[0]), int(image_size[1]))
    base = dict(image_size=size, mean=_three(mean), std=_three(std))
    rule = FAMILY_RULES.get(family)
    if processor_config is not None and family in TILE_FAMILIES:
        processor_config = {k: processor_config[k] for k in _TILE_KEYS if k in processor_config}
    if processor_config is not None and rule is not None:
        return _from_processor_config(rule, base, processor_config, config_file)
    if rule is not None:
        return _from_rule(rule, base, f"{family} family default ({rule.processor})")
    if family == "timm" and timm_name:
        timm_rule = _timm_rule(timm_name)
        if timm_rule is not None:
            return _from_rule(timm_rule, base, f"timm pretrained cfg of {timm_name} (eval transform)")
    # Recorded as "generic", not "legacy": the bundle does have a policy, re-exporting would not change it.
    return PreprocessPolicy(**base, processor="generic",
                            source=f"{family}: no processor known for this family; resize shorter side + centre "
                                   "crop, bicubic")


def _from_rule(rule: FamilyRule, base: dict[str, Any], source: str) -> PreprocessPolicy:
    h, w = base["image_size"]
    if rule.resize == "shortest_edge":
        # DINOv2's 256 for a 224 crop; at other export sizes the same ratio frames the same way. Floor, as
        # timm computes ⌊size / crop_pct⌋ (the epsilon keeps 224 · 256/224 at 256).
        resize_size: Any = math.floor(min(h, w) * rule.resize_ratio + 1e-9)
    else:
        resize_size = (h, w)
    return PreprocessPolicy(**base, resize=rule.resize, resize_size=resize_size, interpolation=rule.interpolation,
                            crop=(h, w) if rule.crop else None, crop_offset=rule.crop_offset,
                            processor=rule.processor, source=source)


def _timm_rule(name: str) -> FamilyRule | None:
    """timm's eval transform for `name`: Resize(⌊size / crop_pct⌋) + CenterCrop (crop_mode `center`)."""
    try:
        import timm
    except ImportError:
        return None
    try:
        cfg = timm.models.get_pretrained_cfg(name.split(".")[0])
    except Exception:  # noqa: BLE001 - timm raises RuntimeError/KeyError for unknown names across versions
        return None
    if cfg is None or getattr(cfg, "crop_mode", "center") != "center" or cfg.interpolation not in INTERPOLATIONS:
        return None
    crop_pct = float(cfg.crop_pct or 0.875)
    return FamilyRule(f"timm eval transform (crop_pct {crop_pct:g})", "shortest_edge", cfg.interpolation,
                      crop=True, resize_ratio=1.0 / crop_pct, crop_offset="round")


def _side(value: Any, field: str) -> int:
    """One side of a size field: a positive int (not a bool, not a float), else one InputError line."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"preprocessor_config.json {field} {value!r} is not a size tokcomp-edge can follow",
                         "use {\"shortest_edge\": N} or {\"height\": H, \"width\": W} with positive integers")
    return value


def _hf_size(value: Any, square_default: bool, field: str) -> tuple[str, Any]:
    """(rule, size) of a transformers `size` / `crop_size` field (int, {shortest_edge}, {height, width})."""
    if isinstance(value, int) and not isinstance(value, bool):
        side = _side(value, field)
        return ("square", (side, side)) if square_default else ("shortest_edge", side)
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return "square", (_side(value[0], field), _side(value[1], field))
    if isinstance(value, dict):
        if set(value) == {"shortest_edge"}:
            return "shortest_edge", _side(value["shortest_edge"], field)
        if "height" in value and "width" in value:
            return "square", (_side(value["height"], field), _side(value["width"], field))
    raise InputError(f"preprocessor_config.json {field} {value!r} is not a size tokcomp-edge can follow",
                     "use {\"shortest_edge\": N} or {\"height\": H, \"width\": W}")


def _rescale(value: Any) -> float:
    """rescale_factor: a finite positive number (1/255 for 8-bit images), else one InputError line."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    if not ok:
        raise InputError(f"preprocessor_config.json rescale_factor {value!r} is not a positive number",
                         "use 0.00392156862745098 (1/255) for 8-bit images")
    return float(value)


def _from_processor_config(rule: FamilyRule, base: dict[str, Any], pc: dict[str, Any],
                           config_file: str = "preprocessor_config.json") -> PreprocessPolicy:
    h, w = base["image_size"]
    resize, resize_size = rule.resize, None
    if pc.get("size") is not None:
        resize, resize_size = _hf_size(pc["size"], rule.resize == "square", "size")
    resample = pc.get("resample", INTERPOLATIONS[rule.interpolation])
    names = {v: k for k, v in INTERPOLATIONS.items()}
    if isinstance(resample, bool) or not isinstance(resample, int) or resample not in names:
        raise InputError(f"preprocessor_config.json resample {resample!r} is not a PIL filter number (0–5)",
                         "fix preprocessor_config.json")
    do_crop = bool(pc.get("do_center_crop", rule.crop))
    crop = None
    if do_crop:
        crop_rule, crop = _hf_size(pc.get("crop_size", [h, w]), True, "crop_size")
        if crop_rule != "square":
            raise InputError(f"preprocessor_config.json crop_size {pc.get('crop_size')!r} has no height/width",
                             "fix preprocessor_config.json")
    rescale = _rescale(pc.get("rescale_factor", RESCALE)) if pc.get("do_rescale", True) else 1.0
    source = config_file
    if resize_size is None:  # no size field: the family default at the export size
        resize_size = _from_rule(rule, base, "").resize_size
    out = crop if crop else (resize_size if resize == "square" else None)
    if out is not None and tuple(out) != (h, w):
        # Exported at another --image-size than the processor's: frame the image the same way, scaled.
        source += f", scaled from {out[1]}x{out[0]} to the export size {w}x{h}"
        if resize == "shortest_edge":
            resize_size = round(resize_size * h / out[0])
        else:
            resize_size = (round(resize_size[0] * h / out[0]), round(resize_size[1] * w / out[1]))
        crop = (h, w) if crop else None
    if crop is None and resize != "square":
        raise InputError("preprocessor_config.json resizes the shortest edge without a centre crop, so the "
                         f"output size depends on each image, not the export size {w}x{h}",
                         "set do_center_crop with crop_size, or use a square size")
    return PreprocessPolicy(**base, resize=resize, resize_size=resize_size, interpolation=names[resample],
                            crop=crop, rescale_factor=rescale,
                            processor=str(pc.get("image_processor_type") or rule.processor), source=source)


def policy_for_spec(spec, vlm_type: str | None = None) -> PreprocessPolicy:
    """The policy of an EncoderSpec: its hf: folder's image-processor settings (processor_config.json's
    `image_processor` entry, else preprocessor_config.json, as transformers reads them), else its family's rule.

    Args:
        spec: the (tower's) EncoderSpec.
        vlm_type: the VLM's model_type when the tower is part of one; a VLM_RULES type frames with its own
            processor's rule instead of the tower family's.
    Returns:
        The policy; its `source` names the file, or says that the family default was used for an hf:
        folder that records no image processor (its mean/std are then the family's too).
    """
    from .core.hf_files import read_image_processor_config

    config, config_file = None, ""
    folder = None
    if spec.source == "hf-local" and spec.name.startswith("hf:"):
        folder = Path(spec.name[3:]).expanduser()
        config, config_file = read_image_processor_config(folder)
    timm_name = spec.name[5:] if spec.name.startswith("timm:") else None
    family = vlm_type if vlm_type in VLM_RULES else spec.family
    policy = policy_for(family, spec.image_size, spec.mean, spec.std, config, timm_name=timm_name,
                        config_file=config_file or "preprocessor_config.json")
    if folder is not None and config is None:
        # Said out loud: a checkpoint trained with other mean/std would get wrong pixels (and an nhwc
        # variant bakes these values into its graph).
        policy = replace(policy, source=f"family default: {folder} has no processor_config.json "
                                        f"image_processor entry and no preprocessor_config.json, so mean/std, "
                                        f"size and resampling are the {vlm_type or spec.family} family's "
                                        f"({policy.source})")
    return policy

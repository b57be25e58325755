"""EncoderSpecs for the HF transformers families, from a preset or a local checkpoint folder.

For presets this is arithmetic on dicts, so `resolve_spec(preset)` and `tokcomp models` import neither
torch nor transformers. An hf: folder's config.json is completed with transformers' own config class
(which imports torch, ~2 s), because the defaults it leaves out are the library's to define.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError, UnsupportedModelType
from ..core.hf_files import mean_std, read_image_processor_config, read_json
from .presets import DEFAULT_PREFIX, FAMILY_MEAN_STD, MODEL_TYPE_FAMILY
from .spec import EncoderSpec

# Full (two-tower) checkpoints whose vision tower we take, and the model_type of that tower.
FULL_MODEL_VISION = {"clip": "clip_vision_model", "siglip": "siglip_vision_model"}
# Files of a local folder, in the order they are tried.
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
# config.json keys that describe the file, not the architecture; dropped so spec.config stays small.
META_KEYS = {"architectures", "transformers_version", "_name_or_path", "torch_dtype", "dtype",
              "id2label", "label2id", "_commit_hash", "auto_map"}


def square_size(value: Any, what: str, where: str) -> int:
    """An HF size field (int or [h, w]) as one int; InputError for non-square sizes."""
    if isinstance(value, (list, tuple)):
        if len(value) != 2 or value[0] != value[1]:
            raise InputError(f"{what} {value} in {where} is not square",
                             "tokcomp exports square inputs; pass a checkpoint with a square image size")
        value = value[0]
    if not isinstance(value, int) or value <= 0:
        raise InputError(f"{what} {value!r} in {where} is not a positive integer", "fix the config")
    return value


def check_image_size(name: str, image_size: int, patch_size: int) -> None:
    """InputError unless image_size is a positive multiple of the patch size."""
    if image_size <= 0 or image_size % patch_size:
        lo = max(patch_size, image_size // patch_size * patch_size)
        raise InputError(
            f"image size {image_size} for {name} is not a multiple of its patch size {patch_size}",
            f"use a multiple of {patch_size}, e.g. {lo} or {lo + patch_size}")


def prefix_tokens(model_type: str, hf: dict[str, Any]) -> tuple[int, bool]:
    """(prefix token count, has_cls) of an HF vision family."""
    if model_type in ("siglip_vision_model", "idefics3_vision", "smolvlm_vision"):
        return 0, False
    if model_type == "dinov2_with_registers":
        return 1 + int(hf.get("num_register_tokens", 4)), True
    return 1, True


def hf_spec(name: str, source: str, model_type: str, hf: dict[str, Any],
            mean: tuple[float, ...], std: tuple[float, ...], image_size: int | None = None) -> EncoderSpec:
    """Build the EncoderSpec of an HF vision config (optionally at another square image size).

    Args:
        name: the model id the user gave.
        source: `transformers` (preset) or `hf-local`.
        model_type: HF vision model_type (a key of MODEL_TYPE_FAMILY).
        hf: the config kwargs; `image_size` is replaced when `image_size` is given.
        mean, std: pixel normalisation.
        image_size: square override; must be a multiple of the patch size.
    Returns:
        The spec; `spec.config` = {"model_type": …, "hf": {…}} rebuilds the module.
    """
    family = MODEL_TYPE_FAMILY[model_type]
    patch = square_size(hf["patch_size"], "patch_size", name)
    if image_size is None:
        # The model's own size is taken as published even when it is not a multiple of the patch:
        # siglip-so400m-patch14-384 sees 384 px through a stride-14 conv, i.e. a 27x27 grid that
        # ignores the last 6 pixel rows/columns. Overrides must be exact multiples.
        size = square_size(hf["image_size"], "image_size", name)
    else:
        size = int(image_size)
        check_image_size(name, size, patch)
    hf = {**hf, "image_size": size, "patch_size": patch}
    prefix, has_cls = prefix_tokens(model_type, hf)
    return EncoderSpec(
        name=name, family=family, source=source, image_size=(size, size), patch_size=patch,
        prefix_tokens=prefix, has_cls=has_cls, hidden_size=int(hf["hidden_size"]),
        num_layers=int(hf["num_hidden_layers"]), num_heads=int(hf["num_attention_heads"]),
        mean=tuple(float(v) for v in mean), std=tuple(float(v) for v in std),
        default_prefix=DEFAULT_PREFIX[family], config={"model_type": model_type, "hf": hf})


@dataclass(frozen=True)
class LocalCheckpoint:
    """What an `hf:<dir>` folder holds, as far as building the tower needs.

    Attributes:
        model_type: the vision tower's model_type.
        hf: its config kwargs.
        mean, std: from preprocessor_config.json, else the family defaults.
        weights: the folder's weight file, or None when it has none.
        full_model: True for a two-tower CLIP/SigLIP checkpoint (the vision subset is taken).
    """

    model_type: str
    hf: dict[str, Any]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    weights: Path | None
    full_model: bool


# The fields an EncoderSpec is computed from; filled from transformers' defaults when a config omits them.
_SPEC_FIELDS = ("patch_size", "image_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                "num_register_tokens")


def with_hf_defaults(model_type: str, hf: dict[str, Any], where: str) -> dict[str, Any]:
    """Fill the spec fields a config.json left at their defaults from transformers' own config class.

    A vision config saved inside a full CLIP/SigLIP checkpoint only lists what differs from the
    defaults (and CLIP's default patch size is 32, not 16), so guessing them here would be wrong.
    The config is also validated (e.g. hidden size divisible by the head count).
    """
    from transformers import AutoConfig

    try:
        cfg = AutoConfig.for_model(model_type, **hf)
    except Exception as exc:  # noqa: BLE001 - HF raises ValueError, TypeError or its own dataclass errors
        raise InputError(f"the {model_type} config in {where} is invalid ({str(exc).strip().splitlines()[-1]})",
                         "fix config.json") from exc
    out = dict(hf)
    for key in _SPEC_FIELDS:
        if key not in out and hasattr(cfg, key):
            out[key] = getattr(cfg, key)
    return out


def supported_model_types(vlm_families: tuple[str, ...] = ()) -> str:
    """The hint for an unsupported hf: folder: the VLM families (whole checkpoints, named by the vlm layer
    above, which re-raises with them) and the tower types."""
    towers = sorted(set(MODEL_TYPE_FAMILY) | set(FULL_MODEL_VISION))
    vlms = f"VLMs {', '.join(vlm_families)}; " if vlm_families else "whole VLM checkpoints (docs/vlm.md); "
    return (f"supported model_type values: {vlms}vision towers {', '.join(towers)} "
            "(docs/vlm.md, 'Next families', lists what is planned); or wrap it as py:module:factory")


def read_local_checkpoint(folder: Path) -> LocalCheckpoint:
    """Parse an HF checkpoint folder (config.json, optional preprocessor_config.json and weights).

    Raises:
        InputError: no such folder, no config.json, or a model_type tokcomp does not adapt.
    """
    if not folder.is_dir():
        raise InputError(f"hf: folder {folder} does not exist",
                         "give a local folder written by `save_pretrained` (nothing is downloaded)")
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise InputError(f"{folder} has no config.json, so it is not an HF checkpoint folder",
                         "point hf: at the folder that holds config.json")
    cfg = read_json(cfg_path)
    model_type = cfg.get("model_type")
    full = model_type in FULL_MODEL_VISION
    if full:
        vision = cfg.get("vision_config") or {}
        model_type = FULL_MODEL_VISION[model_type]
        hf = dict(vision)
    else:
        hf = dict(cfg)
    if model_type not in MODEL_TYPE_FAMILY:
        raise UnsupportedModelType(f"{cfg_path} has model_type {cfg.get('model_type')!r}, which tokcomp does "
                                   "not adapt", supported_model_types())
    hf = {k: v for k, v in hf.items() if k not in META_KEYS and k != "model_type"}
    hf = with_hf_defaults(model_type, hf, str(cfg_path))
    if model_type == "siglip_vision_model":
        hf["vision_use_head"] = False
    family = MODEL_TYPE_FAMILY[model_type]
    mean, std = FAMILY_MEAN_STD[family]
    pre, pre_file = read_image_processor_config(folder)
    if pre is not None:
        mean, std = mean_std(pre, mean, std, str(folder / pre_file.split()[0]))
    weights = next((folder / f for f in WEIGHT_FILES if (folder / f).is_file()), None)
    return LocalCheckpoint(model_type=model_type, hf=hf, mean=mean, std=std, weights=weights, full_model=full)

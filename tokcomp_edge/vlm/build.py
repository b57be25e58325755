"""Model ids → VlmSpec, and the vision path's modules built from transformers' own classes.

Only the vision tower and the projector are constructed: the LLM is neither built nor read. Checkpoint
names are mapped the way `from_pretrained` maps them (transformers' conversion mapping, applied to a
copy of the full VLM on the `meta` device, which costs no memory), so pre-5.0 layouts load too.
"""

from __future__ import annotations

import hashlib
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..encoders.spec import WeightsOrigin
from ..errors import InputError, UnsupportedModelType, WeightsError
from ..core.hf_files import read_image_processor_config, read_json
from .checkpoint import ReadLog, WeightSource, find_weights, folder_model_type, read_tensors, weight_source
from .families import FAMILIES
from .presets import VLM_PRESETS
from .spec import VlmSpec, hf_config_object, vlm_spec

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn


def is_vlm(model: str) -> bool:
    """True for a VLM preset or an `hf:` folder whose config.json is one of the VLM families."""
    if not isinstance(model, str):
        return False
    if model in VLM_PRESETS:
        return True
    if model.startswith("hf:") and model[3:]:
        return folder_model_type(Path(model[3:]).expanduser()) in FAMILIES
    return False


def naming_vlm_families(exc: UnsupportedModelType) -> UnsupportedModelType:
    """The tower layer's unsupported-model_type error with the VLM families in its hint: a user with an
    unsupported VLM folder (qwen2_vl, llava_next) must not read that only vision towers are supported."""
    from ..encoders.hf_config import supported_model_types

    return UnsupportedModelType(exc.message, supported_model_types(tuple(FAMILIES)))


def resolve_vlm(model: str, image_size: tuple[int, int] | None = None) -> VlmSpec:
    """The VlmSpec of a VLM preset or `hf:<dir>` (config work only: no module is built).

    image_size: the tile for families whose tile is chosen (LFM2-VL), or None for the default.
    """
    if model in VLM_PRESETS:
        p = VLM_PRESETS[model]
        return vlm_spec(model, p.model_type, p.config, None, "transformers", f"preset {model}",
                        image_size=image_size)
    folder = Path(model[3:]).expanduser()
    cfg_path = folder / "config.json"
    cfg = read_json(cfg_path)
    pre, pre_file = read_image_processor_config(folder)
    return vlm_spec(model, cfg["model_type"], cfg, pre, "hf-local", str(cfg_path), pre_file, image_size=image_size)


@dataclass
class LoadedVlm:
    """The vision path's modules: the tower (at the feature layer), the projector, and the weights' origin."""

    spec: VlmSpec
    tower: Any  # VisionTower
    projector: Any  # nn.Module
    weights: WeightsOrigin
    read: ReadLog | None = None


def _projector(spec: VlmSpec):
    fam = spec.family
    module = importlib.import_module(f"transformers.models.{fam.module}.modeling_{fam.module}")
    conf = hf_config_object(fam.model_type, spec.config, spec.name)
    return getattr(module, fam.projector_class)(conf).eval()


def _qwen_modules(spec: VlmSpec):
    """Qwen-VL's vision module (transformers' own class: blocks, merger, DeepStack mergers) wrapped as the
    static-tile QwenTower; the projector is its merger, which the tower module already holds."""
    from .qwen_tower import QwenTower, build_visual, qwen_facts

    conf = hf_config_object(spec.family.model_type, spec.config, spec.name)
    visual = build_visual(spec.family.model_type, conf)
    tower = QwenTower(spec.tower, visual, qwen_facts(spec.family.model_type, conf), spec.tower.image_size)
    return tower, visual.merger


def _spread_random(module: nn.Module, seed: int) -> None:
    """Random init without degenerate parameters: transformers zero-initialises some (Gemma 3's
    projection, InternViT's CLS and position table), and a path whose output is identically zero would
    pass every parity check without proving anything. Those get N(0, 0.02) from their own generator."""
    import torch

    gen = torch.Generator().manual_seed(seed + 104729)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.is_floating_point() and p.numel() > 1 and not name.endswith("bias") and not bool(p.any()):
                p.copy_(0.02 * torch.randn(p.shape, generator=gen))


def load_vlm(model: str, weights: Path | None = None, seed: int = 0,
             image_size: tuple[int, int] | None = None) -> LoadedVlm:
    """Build a VLM's vision tower and projector: random (seeded) or from the checkpoint's own tensors.

    Args:
        model: VLM preset or `hf:<dir>`.
        weights: a weights file or index JSON for a preset (an hf: folder's own weights are used otherwise).
        seed: random-init seed (presets without weights).
        image_size: the tile, as resolve_vlm takes it.
    Raises:
        InputError, WeightsError (exit 2): bad config, a folder without weights, tensors that do not fit.
    """
    import torch

    from ..encoders.hf_towers import TOWERS, build_hf_model
    from ..encoders.registry import freeze, spread_norm_affines

    if not isinstance(seed, int) or isinstance(seed, bool):
        raise InputError(f"seed {seed!r} is not an integer", "e.g. --seed 0")
    spec = resolve_vlm(model, image_size)
    src: WeightSource | None = None
    if weights is not None:
        src = weight_source(Path(weights))
    elif model.startswith("hf:"):
        src = find_weights(Path(model[3:]).expanduser())
    tspec = spec.tower
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if spec.family.transform == "patch_merger":
            tower, projector = _qwen_modules(spec)
        else:
            hf_vision = build_hf_model(tspec.config["model_type"], tspec.config["hf"])
            tower = TOWERS[tspec.config["model_type"]](tspec, hf_vision, spec.tower_layer, spec.final_norm)
            projector = _projector(spec)
        if src is None:
            # Qwen's merger is inside its tower module: spread once.
            for part in (tower,) if spec.family.transform == "patch_merger" else (tower, projector):
                spread_norm_affines(part, seed)
                _spread_random(part, seed)
    read = None
    if src is not None:
        read = ReadLog()
        digest = _load_checkpoint(spec, src, tower, projector, read)
        origin = WeightsOrigin(kind="file", path=str(src.path), sha256=digest, covers="vision-path tensors")
    else:
        origin = WeightsOrigin(kind="random", seed=seed)
    # Blocks after the feature layer are never run (LLaVA's last CLIP block): drop them from memory too.
    del tower.blocks[tower.num_used:]
    freeze(tower)
    freeze(projector)
    return LoadedVlm(spec=spec, tower=tower, projector=projector, weights=origin, read=read)


def checkpoint_names(spec: VlmSpec, names: list[str]) -> dict[str, tuple[str, str]]:
    """Map checkpoint tensor names onto the vision path: {stored name: (part, name inside the part)}.

    Names are first renamed as `from_pretrained` would (pre-5.0 `vision_tower.…` → `model.vision_tower.…`),
    then the ones under `model.<vision>.` and `model.<projector>.` are kept; everything else (the LLM,
    lm_head, OneVision's image_newline) is left unread.
    """
    import torch
    import transformers

    fam = spec.family
    conf = hf_config_object(fam.model_type, spec.config, spec.name)
    with torch.device("meta"):
        full = getattr(transformers, fam.hf_class)(conf)
    meta_sd = full.state_dict()
    try:
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import WeightConverter, rename_source_key

        transforms = get_model_conversion_mapping(full)
        renamings = [t for t in transforms if not isinstance(t, WeightConverter)]
        converters = [t for t in transforms if isinstance(t, WeightConverter)]
    except ImportError:  # pragma: no cover - an older transformers loads its own names natively
        renamings = converters = None
    parts = {f"model.{fam.vision_attr}.": "vision", f"model.{fam.projector_attr}.": "projector"}
    out: dict[str, tuple[str, str]] = {}
    for name in names:
        new = name
        if renamings is not None and name not in meta_sd:
            new, _ = rename_source_key(name, renamings, converters, base_model_prefix=full.base_model_prefix,
                                       meta_state_dict=meta_sd)
        for prefix, part in parts.items():
            if new.startswith(prefix):
                # The first match: Qwen's merger (`model.visual.merger.`) is read with the rest of `model.visual`.
                out[name] = (part, new[len(prefix):])
                break
    return out


def _load_checkpoint(spec: VlmSpec, src: WeightSource, tower, projector, log: ReadLog) -> str:
    from ..encoders.weights import strict_load

    mapping = checkpoint_names(spec, src.names)
    if not any(part == "vision" for part, _ in mapping.values()):
        shown = ", ".join(src.names[:4])
        raise WeightsError(
            f"{src.path} holds no tensors of {spec.family.hf_class}'s vision tower (looked for "
            f"model.{spec.family.vision_attr}.* or the pre-5.0 names; found e.g. {shown})",
            "point at the VLM checkpoint this config belongs to")
    wanted = sorted(mapping)
    tensors = read_tensors(src, wanted, log)
    digest = tensor_digest(tensors)
    vision = {mapping[k][1]: v for k, v in tensors.items() if mapping[k][0] == "vision"}
    proj = {mapping[k][1]: v for k, v in tensors.items() if mapping[k][0] == "projector"}
    if spec.family.transform == "patch_merger":
        # One module holds Qwen's whole vision path (blocks, merger, DeepStack mergers); any grid fits it.
        strict_load(tower.visual, vision, src.path, f"{spec.name} vision path ({spec.family.hf_class}.visual)")
        return digest
    _check_position_table(spec, src, tower, vision)
    vision = tower.adapt_state_dict(vision)
    target = tower.core.state_dict()
    # Non-persistent buffers that older checkpoints stored (position_ids) are ignored, as from_pretrained does.
    vision = {k: v for k, v in vision.items() if k in target or not k.endswith("position_ids")}
    strict_load(tower.core, vision, src.path, f"{spec.name} vision tower")
    strict_load(projector, proj, src.path, f"{spec.name} {spec.family.projector_class}")
    return digest


def _check_position_table(spec: VlmSpec, src: WeightSource, tower, vision: dict[str, Any]) -> None:
    """A VLM's tile size is its config's: a position table for another grid is refused, not resampled.

    A bare tower's adapt_state_dict resamples the table bicubically (what --image-size asks for); a VLM's
    projector and transform were trained at one tile, --image-size is refused for it, and a table of another
    size means config.json and the weights belong to different checkpoints.
    """
    from ..encoders.hf_towers import POS_EMBED

    key, prefix, _ = POS_EMBED[tower.model_type]
    target = tower.core.state_dict().get(key)
    stored = next((n for n in (key, f"vision_model.{key}") if n in vision), None)
    if target is None or stored is None or tuple(vision[stored].shape) == tuple(target.shape):
        return
    got, want = tuple(vision[stored].shape), tuple(target.shape)
    side = round(max(got[-2] - prefix, 0) ** 0.5)
    patch, (h, w) = spec.tower.patch_size, spec.tower.grid
    raise WeightsError(
        f"{src.path}: the vision tower's position table ({stored}) is {list(got)} — a {side}x{side} patch grid, "
        f"a {side * patch} px tile — but {spec.name}'s config.json implies {list(want)} ({h}x{w} patches at "
        f"{spec.tower.image_size[0]} px); a VLM's tile size is not resampled",
        f"use the config.json that came with these weights (vision_config.image_size {side * patch}), or the "
        "weights of this config")


def tensor_digest(tensors: dict[str, Any]) -> str:
    """sha256 over the tensors read (name, dtype, shape, bytes in name order): what a rebuild re-checks."""
    import torch

    h = hashlib.sha256()
    for k in sorted(tensors):
        t = tensors[k].contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()

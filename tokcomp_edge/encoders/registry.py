"""Model ids → EncoderSpec and built towers: presets, `timm:<name>`, `hf:<dir>`, `py:<module>:<factory>`."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InputError, UnknownModelError
from .config import EncoderConfig, LoadedEncoder
from .hf_config import hf_spec, read_local_checkpoint
from .presets import PRESETS
from .spec import EncoderSpec, WeightsOrigin

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

FORMS = "timm:<name>, hf:<local dir>, py:<module>:<factory>"


def list_presets() -> list[EncoderSpec]:
    """The built-in presets' specs, real models first, tiny test models last (no module is built)."""
    return [_preset_spec(name) for name in PRESETS]


def _preset_spec(name: str, image_size: int | None = None) -> EncoderSpec:
    p = PRESETS[name]
    spec = hf_spec(name, "transformers", p.model_type, p.hf, p.mean, p.std, image_size)
    if p.source:  # which published checkpoint the preset's weights file should come from
        spec.config["checkpoint"] = p.source
    return spec


def _unknown(model: str) -> UnknownModelError:
    return UnknownModelError(
        f"unknown model {model!r}",
        f"use a preset ({', '.join(PRESETS)}), a VLM preset, or one of {FORMS} (hf: also takes a whole VLM "
        "folder); `tokcomp models` lists the presets")


def _split(model: str) -> tuple[str, str]:
    """(kind, rest) of a model id: kind is preset | timm | hf | py."""
    if not isinstance(model, str) or not model.strip():
        raise _unknown(str(model))
    for kind in ("timm", "hf", "py"):
        if model.startswith(kind + ":"):
            rest = model[len(kind) + 1:]
            if not rest:
                raise InputError(f"model {model!r} names no {kind} model after the colon", f"forms: {FORMS}")
            return kind, rest
    if model in PRESETS:
        return "preset", model
    raise _unknown(model)


def _check_image_size(image_size: int | None) -> None:
    if image_size is not None and (not isinstance(image_size, int) or isinstance(image_size, bool)
                                   or image_size <= 0):
        raise InputError(f"image size {image_size!r} is not a positive integer", "e.g. --image-size 224")


@contextmanager
def seeded(seed: int):
    """Torch's RNG seeded with `seed` inside the block and the caller's RNG untouched outside it, so that
    building a module is reproducible whatever ran before in the process."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def resolve_spec(model: str, image_size: int | None = None, seed: int = 0) -> EncoderSpec:
    """The EncoderSpec of a model id, at `image_size` when given.

    Cheap for presets and hf: folders (JSON only, no module is built); timm: and py: ids build the
    module, since only the module knows its facts, with torch seeded by `seed` as `build_encoder` seeds it
    (a factory's own checks then see the same initialisation in both, and in every process).

    Raises:
        UnknownModelError: not a preset and not one of the timm:/hf:/py: forms.
        InputError: image size not a multiple of the patch size, or a bad hf:/py: target.
    """
    _check_image_size(image_size)
    kind, rest = _split(model)
    if kind == "preset":
        return _preset_spec(rest, image_size)
    if kind == "hf":
        ck = read_local_checkpoint(Path(rest).expanduser())
        return hf_spec(model, "hf-local", ck.model_type, ck.hf, ck.mean, ck.std, image_size)
    if kind == "timm":
        from .timm_tower import build_timm_model, timm_spec

        with seeded(seed):
            return timm_spec(rest, build_timm_model(rest, image_size), image_size)
    from .user_tower import load_factory_module, user_spec

    with seeded(seed):
        return user_spec(rest, load_factory_module(rest), image_size)


def _check_layer(spec: EncoderSpec, layer: int) -> None:
    from .tower import resolve_layer

    if not isinstance(layer, int) or isinstance(layer, bool):
        raise InputError(f"layer {layer!r} is not an integer", "e.g. --layer -1 (last) or -2 (penultimate)")
    try:
        resolve_layer(layer, spec.num_layers)
    except ValueError as exc:
        n = spec.num_layers
        raise InputError(f"layer {layer} is out of range for {spec.name}, which has {n} layers",
                         f"use 1..{n} or -{n}..-1 (-1 = last, -2 = penultimate)") from exc


def spread_norm_affines(tower: nn.Module, seed: int) -> None:
    """Give a randomly initialised tower's norm layers non-trivial scales and shifts.

    HF and timm initialise every LayerNorm to weight 1, bias 0. A final-normed random tower then emits
    tokens whose L2 norms all equal √C to within 1e-6, which makes `prune:K:norm` a pure tie-break that
    two runtimes resolve differently — no trained checkpoint looks like that. Scales 1 ± 0.25 and shifts
    ± 0.1 (from their own generator, so the rest of the init is unchanged) keep random-weight bundles
    representative. Loaded weights overwrite all of it.
    """
    import torch
    from torch import nn

    gen = torch.Generator().manual_seed(seed + 7919)
    for module in tower.modules():
        if isinstance(module, (nn.LayerNorm, nn.GroupNorm)) or type(module).__name__.endswith(("LayerNorm", "RMSNorm")):
            w, b = getattr(module, "weight", None), getattr(module, "bias", None)
            with torch.no_grad():
                if isinstance(w, torch.Tensor):
                    w.copy_(1.0 + 0.25 * torch.randn(w.shape, generator=gen))
                if isinstance(b, torch.Tensor):
                    b.copy_(0.1 * torch.randn(b.shape, generator=gen))


def freeze(tower: nn.Module) -> None:
    tower.float().eval()
    for p in tower.parameters():
        p.requires_grad_(False)


def build_encoder(cfg: EncoderConfig) -> LoadedEncoder:
    """Build the encoder a config names: the module (random with `seed`, or loaded weights) and its spec.

    Args:
        cfg: which model, image size, weights, seed and hidden layer.
    Returns:
        LoadedEncoder(spec, tower (eval, float32, requires_grad False), weights origin).
    Raises:
        UnknownModelError, InputError (image size, layer, bad hf:/py: target), WeightsError.
    """
    _check_image_size(cfg.image_size)
    if not isinstance(cfg.seed, int) or isinstance(cfg.seed, bool):
        raise InputError(f"seed {cfg.seed!r} is not an integer", "e.g. --seed 0")
    kind, rest = _split(cfg.model)
    weights = Path(cfg.weights) if cfg.weights is not None else None
    if kind == "py" and cfg.layer != -1:
        raise InputError(f"--layer {cfg.layer} cannot apply to {cfg.model}: a py: module returns its own tokens",
                         "leave --layer at -1 and select the layer inside the module")
    with seeded(cfg.seed):
        if kind in ("preset", "hf"):
            from .hf_towers import build_hf_tower

            if kind == "hf":
                ck = read_local_checkpoint(Path(rest).expanduser())
                spec = hf_spec(cfg.model, "hf-local", ck.model_type, ck.hf, ck.mean, ck.std, cfg.image_size)
                weights = weights or ck.weights
            else:
                spec = _preset_spec(rest, cfg.image_size)
            _check_layer(spec, cfg.layer)
            tower = build_hf_tower(spec, cfg.layer)
        elif kind == "timm":
            from .timm_tower import TimmTower, build_timm_model, timm_spec

            model = build_timm_model(rest, cfg.image_size)
            spec = timm_spec(rest, model, cfg.image_size)
            _check_layer(spec, cfg.layer)
            tower = TimmTower(spec, model, cfg.layer)
        else:
            from .user_tower import UserTower, load_factory_module, user_spec

            module = load_factory_module(rest)
            spec = user_spec(rest, module, cfg.image_size)
            tower = UserTower(spec, module)
        if weights is None and kind != "py":
            spread_norm_affines(tower, cfg.seed)
    if weights is not None:
        from .weights import apply_weights

        origin = apply_weights(tower, weights)
    else:
        origin = WeightsOrigin(kind="random", seed=cfg.seed)
    freeze(tower)
    if kind == "py":
        from .user_tower import check_user_output

        check_user_output(tower)
    return LoadedEncoder(spec=spec, tower=tower, weights=origin)

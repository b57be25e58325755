"""`py:<module>:<factory>`: bring your own encoder.

Contract (copied into the README):

    `<module>` must be importable (from the current directory or sys.path); `<factory>()` is called
    with no arguments and returns a `torch.nn.Module` that maps pixel_values [B, 3, H, W] (float32,
    normalised with the mean/std below) to tokens [B, prefix_tokens + (H/patch)*(W/patch), hidden_size],
    prefix tokens first, patch tokens in row-major order. The module carries an attribute

        tokcomp_facts = dict(
            image_size=224,          # int (square) or (H, W); the input size it is exported at
            patch_size=16,           # pixels per patch side; H and W must be multiples of it
            prefix_tokens=0,         # CLS / register tokens before the patch tokens
            hidden_size=768,         # channels of each output token
            mean=(0.5, 0.5, 0.5),    # RGB normalisation on the 0-1 scale
            std=(0.5, 0.5, 0.5),
            has_cls=False,           # optional: the first prefix token is a CLS token
            num_layers=1,            # optional, informational
            num_heads=1,             # optional, informational
        )

    and, only if has_cls is True and `prune:…:cls-attn` is wanted, a method
    `cls_attention(pixel_values) -> [B, T]` (the CLS token's attention over all T tokens, mean over
    heads). The module must export with `torch.onnx.export(..., dynamo=True)`: no Python branching on
    tensor values. Layer selection is the module's business: `--layer` must stay -1. `--weights` loads a
    state dict of the module strictly; without it the factory's own initialisation is used, after
    seeding torch with `--seed`.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import torch
from torch import nn

from ..errors import InputError
from .spec import EncoderSpec
from .tower import VisionTower

REQUIRED = ("image_size", "patch_size", "prefix_tokens", "hidden_size", "mean", "std")
HINT = "see the py:<module>:<factory> contract in the README (tokcomp_edge/encoders/user_tower.py)"


def load_factory_module(ref: str) -> nn.Module:
    """Import `<module>` and call `<factory>()` for `ref` = "<module>:<factory>".

    Raises:
        InputError: malformed ref, module not importable, no such factory, or the factory fails or
            returns something other than an nn.Module.
    """
    mod_name, sep, fn_name = ref.rpartition(":")
    if not sep or not mod_name or not fn_name:
        raise InputError(f"py:{ref} is not of the form py:<module>:<factory>",
                         "e.g. py:my_encoders:build (my_encoders.py in the current directory)")
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:  # console scripts do not put the current directory on sys.path; `python -m` does
        sys.path.append(cwd)
    try:
        try:
            module = importlib.import_module(mod_name)
        except ImportError as exc:
            raise InputError(f"cannot import module {mod_name!r} for py:{ref} ({exc})",
                             "run from the folder that holds it, or add it to PYTHONPATH") from exc
        factory = getattr(module, fn_name, None)
        if not callable(factory):
            raise InputError(f"module {mod_name!r} has no callable {fn_name!r}",
                             f"define def {fn_name}() -> torch.nn.Module in {mod_name}")
        try:
            obj = factory()
        except Exception as exc:  # noqa: BLE001 - user code: report it as bad input, one line
            raise InputError(f"py:{ref} factory raised {type(exc).__name__}: {exc}", HINT) from exc
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)
    if not isinstance(obj, nn.Module):
        raise InputError(f"py:{ref} returned {type(obj).__name__}, expected a torch.nn.Module", HINT)
    return obj


def _int_pair(value: Any, key: str, ref: str) -> tuple[int, int]:
    vals = list(value) if isinstance(value, (list, tuple)) else [value, value]
    if len(vals) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in vals):
        raise InputError(f"tokcomp_facts[{key!r}] of py:{ref} is {value!r}, expected a positive int or (H, W)",
                         HINT)
    return vals[0], vals[1]


def _count(facts: dict[str, Any], key: str, ref: str, default: int | None = None, minimum: int = 0) -> int:
    value = facts.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise InputError(f"tokcomp_facts[{key!r}] of py:{ref} is {value!r}, expected an int >= {minimum}", HINT)
    return value


def _triple(facts: dict[str, Any], key: str, ref: str) -> tuple[float, float, float]:
    value = facts.get(key)
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        out = ()
    if len(out) != 3:
        raise InputError(f"tokcomp_facts[{key!r}] of py:{ref} is {value!r}, expected 3 floats (RGB)", HINT)
    return out  # type: ignore[return-value]


def user_spec(ref: str, module: nn.Module, image_size: int | None) -> EncoderSpec:
    """The EncoderSpec declared by a py: module's `tokcomp_facts`."""
    facts = getattr(module, "tokcomp_facts", None)
    if not isinstance(facts, dict):
        raise InputError(f"py:{ref} returned a {type(module).__name__} without a tokcomp_facts dict", HINT)
    missing = [k for k in REQUIRED if k not in facts]
    if missing:
        raise InputError(f"tokcomp_facts of py:{ref} lacks {', '.join(missing)}", HINT)
    h, w = _int_pair(facts["image_size"], "image_size", ref)
    patch = _count(facts, "patch_size", ref, minimum=1)
    if image_size is not None and (image_size, image_size) != (h, w):
        raise InputError(f"--image-size {image_size} differs from the {h}x{w} that py:{ref} declares",
                         "a py: module fixes its own input size; change its tokcomp_facts instead")
    if h % patch or w % patch:
        raise InputError(f"image size {h}x{w} of py:{ref} is not a multiple of its patch size {patch}", HINT)
    has_cls = facts.get("has_cls", False)
    if not isinstance(has_cls, bool):
        raise InputError(f"tokcomp_facts['has_cls'] of py:{ref} is {has_cls!r}, expected True or False", HINT)
    prefix = _count(facts, "prefix_tokens", ref)
    if has_cls and prefix < 1:
        raise InputError(f"py:{ref} declares has_cls but prefix_tokens=0", "a CLS token is a prefix token")
    return EncoderSpec(
        name=f"py:{ref}", family="user", source="python", image_size=(h, w), patch_size=patch,
        prefix_tokens=prefix, has_cls=has_cls, hidden_size=_count(facts, "hidden_size", ref, minimum=1),
        num_layers=_count(facts, "num_layers", ref, default=1, minimum=1),
        num_heads=_count(facts, "num_heads", ref, default=1, minimum=1),
        mean=_triple(facts, "mean", ref), std=_triple(facts, "std", ref),
        # A user module's prefix tokens are whatever its author put there; keep them unless told.
        default_prefix="keep" if prefix else "drop",
        config={"module": ref})


class UserTower(VisionTower):
    """Wraps a py: module; forward calls it as is (no layer selection)."""

    def __init__(self, spec: EncoderSpec, module: nn.Module):
        # num_layers is informational for py: modules: the tower is always "the module's output".
        super().__init__(spec, layer=-1)
        self.user = module

    @property
    def core(self) -> nn.Module:
        return self.user

    def forward(self, pixel_values: torch.Tensor, with_cls_attention: bool = False):
        """Returns (tokens [B, T, C], cls_attn [B, T] or None)."""
        tokens = self.user(pixel_values)
        attn = None
        if with_cls_attention:
            if not self.spec.has_cls or not callable(getattr(self.user, "cls_attention", None)):
                raise InputError(f"{self.spec.name} offers no CLS attention",
                                 "declare has_cls=True and define cls_attention(pixel_values) -> [B, T], "
                                 "or use a pruning score that does not need CLS (e.g. norm)")
            attn = self.user.cls_attention(pixel_values)
        return tokens, attn

    def adapt_state_dict(self, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return sd


def check_user_output(tower: UserTower) -> None:
    """Run one zero image through the module and check the token shape its facts promise."""
    spec = tower.spec
    x = torch.zeros(1, 3, *spec.image_size)
    try:
        with torch.no_grad():
            out, _ = tower(x)
    except Exception as exc:  # noqa: BLE001 - user code
        raise InputError(f"{spec.name} failed on a [1, 3, {spec.image_size[0]}, {spec.image_size[1]}] input "
                         f"({type(exc).__name__}: {exc})", HINT) from exc
    want = (1, spec.prefix_tokens + spec.patch_tokens, spec.hidden_size)
    got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    if got != want:
        gh, gw = spec.grid
        raise InputError(f"{spec.name} returned {got}, but its tokcomp_facts promise {want} "
                         f"(prefix {spec.prefix_tokens} + grid {gh}x{gw}, width {spec.hidden_size})", HINT)


def user_blocks(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """The transformer blocks of a py: module as (path inside it, module): the children of the longest
    nn.ModuleList / nn.Sequential whose children (two or more) are all of one class that holds parameters
    (timm's `blocks`, a hand-written `nn.ModuleList(Block() …)`); [] when it has none. The exporter checks
    that each ran exactly once, in order (export/block_taps.py)."""
    best: list[tuple[str, nn.Module]] = []
    for path, mod in module.named_modules():
        if not isinstance(mod, (nn.ModuleList, nn.Sequential)):
            continue
        kids = list(mod.named_children())
        if len(kids) < 2 or len({type(k) for _, k in kids}) != 1:
            continue
        if not any(True for _ in kids[0][1].parameters()) or len(kids) <= len(best):
            continue
        best = [(f"{path}.{name}" if path else name, k) for name, k in kids]
    return best

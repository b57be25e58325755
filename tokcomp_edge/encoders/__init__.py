"""Vision encoders: presets, HF transformers / timm / py: adapters, weight loading.

Importing this package is cheap (no torch, transformers or timm): they are imported by the
functions that build modules or read weights.
"""

from __future__ import annotations

from .config import EncoderConfig, LoadedEncoder
from .registry import build_encoder, list_presets, resolve_spec
from .spec import EncoderSpec, WeightsOrigin
from .weights import load_state_dict

__all__ = [
    "EncoderConfig",
    "EncoderSpec",
    "LoadedEncoder",
    "WeightsOrigin",
    "build_encoder",
    "list_presets",
    "load_state_dict",
    "resolve_spec",
]

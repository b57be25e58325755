"""VLM vision paths: the tower at the VLM's feature layer, its own token transform and its projector,
exported as one graph whose output is what the VLM's LLM reads.

Importing this package is cheap: torch and transformers are imported by the functions that need them.
"""

from __future__ import annotations

from .build import LoadedVlm, is_vlm, load_vlm, resolve_vlm
from .families import FAMILIES, VlmFamily
from .plan import VlmPlan, plan_vlm
from .presets import VLM_PRESETS
from .spec import VlmSpec

__all__ = ["FAMILIES", "VLM_PRESETS", "LoadedVlm", "VlmFamily", "VlmPlan", "VlmSpec", "is_vlm", "load_vlm",
           "plan_vlm", "resolve_vlm"]

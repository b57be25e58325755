"""The JSON files of a Hugging Face folder: read once, one error line when they are not JSON objects.

Shared by the tower layer (encoders/hf_config.py), the VLM layer and the preprocessing policy
(image_policy.py), which sits below both and must not import them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ..errors import InputError


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path} cannot be read as JSON ({exc})", "fix or replace the file") from exc
    if not isinstance(data, dict):
        raise InputError(f"{path} holds {type(data).__name__}, expected a JSON object", "fix the file")
    return data


def read_image_processor_config(folder: Path) -> tuple[dict[str, Any] | None, str]:
    """A folder's image-processor settings, found where transformers' own loader looks for them.

    transformers 5's `ProcessorMixin.save_pretrained` writes the image processor nested in
    processor_config.json (key `image_processor`) and no preprocessor_config.json; an image processor saved
    alone writes preprocessor_config.json. `ImageProcessingMixin.get_image_processor_dict`
    (transformers/image_processing_base.py) reads the nested entry first, then preprocessor_config.json: so
    does this.

    Returns:
        (settings, file they came from), or (None, "") when the folder records neither.
    """
    nested = folder / "processor_config.json"
    if nested.is_file():
        entry = read_json(nested).get("image_processor")
        if isinstance(entry, dict):
            return entry, "processor_config.json (image_processor)"
    flat = folder / "preprocessor_config.json"
    if flat.is_file():
        return read_json(flat), "preprocessor_config.json"
    return None, ""


def mean_std(pre: dict[str, Any], mean: tuple, std: tuple, where: str) -> tuple[tuple, tuple]:
    """image_mean / image_std of an image-processor config (the given defaults when absent): three finite
    numbers each, std positive — else one InputError line (a null or a string reached a TypeError)."""
    got = []
    for key, default in (("image_mean", mean), ("image_std", std)):
        value = pre.get(key, default)
        ok = (isinstance(value, (list, tuple)) and len(value) == 3
              and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
              and (key == "image_mean" or all(v > 0 for v in value)))
        if not ok:
            raise InputError(f"{where} {key} {value!r} is not 3 finite numbers" + (", all positive" if
                             key == "image_std" else ""), f"fix {where} (RGB mean and std on the 0-1 scale)")
        got.append(tuple(float(v) for v in value))
    return got[0], got[1]

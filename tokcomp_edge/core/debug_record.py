"""Reading a stored `tokcomp debug` result (debug/store.py writes it): in core because `validate`, a stage
below debug, shows it in its report. A result counts only when its JSON (the commit marker) exists and the
HTML beside it is the one the JSON names by sha256.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from .bundle import debug_record_paths


def read_result(bundle_path: Path, variant: str) -> dict[str, Any] | None:
    """The committed result for `variant` (its JSON, whose HTML beside it is the one it names), or None."""
    jpath, hpath = debug_record_paths(bundle_path, variant)
    try:
        data = json.loads(jpath.read_text())
        html = hpath.read_bytes()
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("html_sha256") != hashlib.sha256(html).hexdigest():
        return None
    return data

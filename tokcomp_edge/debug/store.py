"""Where a debug result is kept: `<bundle>/debug/<variant>.json` and `.html`, each written atomically.

The folder is not part of the bundle's checksummed contents (like `reports/`): a result describes one
variant file, whose sha256 it records, and `validate`'s HTML report shows the "Precision debug" section
only while that sha256 is still the variant's (validation/target.py `stored_debug` reads it). The
naming lives in core/bundle.py `debug_record_paths`, shared by both sides.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..atomic import write_text_atomic
from ..core.bundle import debug_record_paths
from .result import DebugResult


def write_result(bundle_path: Path, result: DebugResult) -> tuple[Path, Path]:
    """Write the result's JSON and its self-contained HTML page into the bundle's debug/ folder."""
    from ..validation.report_html import render_debug_html

    jpath, hpath = debug_record_paths(bundle_path, result.variant)
    jpath.parent.mkdir(exist_ok=True)
    data = result.to_dict()
    write_text_atomic(jpath, json.dumps(data, indent=2) + "\n")
    write_text_atomic(hpath, render_debug_html(data))
    return jpath, hpath

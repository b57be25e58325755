"""Where a debug result is kept: `<bundle>/debug/<variant>.json` and `.html`, committed as one step.

The folder is not part of the bundle's checksummed contents (like `reports/`): a result describes one
variant file, whose sha256 it records, and `validate`'s HTML report shows the "Precision debug" section
only while that sha256 is still the variant's (validation/target.py `stored_debug` reads it through
`read_result`). The naming lives in core/bundle.py `debug_record_paths`, shared by both sides.

Two files cannot be renamed into place together, so the JSON is the commit marker: the old JSON goes
first, then the HTML is written, then the JSON, which records the HTML's sha256. A result counts only
when its JSON exists and the HTML beside it is the one it names — an interruption anywhere leaves either
the previous result or none, never a new page beside an old JSON (or the reverse). A folder swap would
do the same, but the paths users open (`debug/fp16.html`) would then move.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..atomic import write_text_atomic
from ..core.bundle import debug_record_paths
from ..core.debug_record import read_result
from .result import DebugResult

__all__ = ["read_result", "write_result"]  # the reader lives in core (validate, below debug, uses it)


def write_result(bundle_path: Path, result: DebugResult) -> tuple[Path, Path]:
    """Write the result's self-contained HTML page, then its JSON (the commit marker), into debug/."""
    from ..validation.report_html import render_debug_html

    jpath, hpath = debug_record_paths(bundle_path, result.variant)
    jpath.parent.mkdir(exist_ok=True)
    data = result.to_dict()
    html = render_debug_html(data)
    # Uncommit the previous result before its page is replaced.
    jpath.unlink(missing_ok=True)
    write_text_atomic(hpath, html)
    data["html_sha256"] = hashlib.sha256(html.encode("utf-8")).hexdigest()
    write_text_atomic(jpath, json.dumps(data, indent=2) + "\n")
    return jpath, hpath

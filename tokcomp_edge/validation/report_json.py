"""The report as JSON (the source of truth) and the files rendered from it.

`<bundle>/reports/<UTC timestamp>-<target>.json|.md|.html`. The reports folder is not part of the
bundle's checksummed files, so writing reports never "changes" a bundle. Markdown and HTML are pure
functions of the JSON: `tokcomp report X.json` re-renders them identically.

Schema history:
    1 — first version.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import write_text_atomic
from ..errors import InputError

REPORT_SCHEMA = "tokcomp-edge/validation-report"
REPORT_VERSION = 1


def sanitize(obj: Any) -> Any:
    """Make `obj` strict-JSON: NaN/Inf → null, numpy scalars/arrays → Python, Paths → str."""
    if isinstance(obj, dict):
        return {str(k): sanitize(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [sanitize(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return sanitize(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def dumps(report: dict[str, Any]) -> str:
    return json.dumps(sanitize(report), indent=2, allow_nan=False, ensure_ascii=False) + "\n"


def _stem(out_dir: Path, created: _dt.datetime, label: str) -> str:
    base = f"{created.strftime('%Y%m%dT%H%M%SZ')}-{label}"
    stem, n = base, 2
    while (out_dir / f"{stem}.json").exists():  # two runs in the same second keep both reports
        stem, n = f"{base}-{n}", n + 1
    return stem


def render_files(report: dict[str, Any], json_path: Path, out_dir: Path | None = None) -> dict[str, Path]:
    """Write the .md and .html renderings of `report` beside `json_path` (or into out_dir)."""
    from .report_html import render_html
    from .report_md import render_markdown

    out_dir = Path(out_dir) if out_dir else json_path.parent
    md = out_dir / (json_path.stem + ".md")
    html = out_dir / (json_path.stem + ".html")
    write_text_atomic(md, render_markdown(report))
    write_text_atomic(html, render_html(report))
    return {"md": md, "html": html}


def write_report(report: dict[str, Any], out_dir: Path, created: _dt.datetime, label: str) -> dict[str, Path]:
    """Write JSON, Markdown and HTML (each atomically) and return their paths.

    Args:
        report: the report dict (sanitised here).
        out_dir: reports folder (created when missing).
        created: run start time (UTC), used in the file name.
        label: target label used in the file name.
    Returns:
        {"json": …, "md": …, "html": …}
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = _stem(out_dir, created, label)
    jpath = out_dir / f"{stem}.json"
    clean = sanitize(report)
    write_text_atomic(jpath, dumps(clean))
    return {"json": jpath, **render_files(clean, jpath)}


def load_report(path: str | Path) -> dict[str, Any]:
    """Read a report JSON and check its schema.

    Raises:
        InputError: missing file, invalid JSON, another schema, or a newer schema version.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"report {path} does not exist", "pass a .json file from <bundle>/reports/")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"report {path} is not valid JSON ({exc})", "pass a .json file written by `tokcomp validate`") from exc
    if not isinstance(data, dict) or data.get("schema") != REPORT_SCHEMA:
        got = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise InputError(f"{path} has schema {got!r}, expected {REPORT_SCHEMA!r}",
                         "pass a .json file written by `tokcomp validate`")
    version = data.get("schema_version")
    if not isinstance(version, int) or version > REPORT_VERSION:
        raise InputError(f"{path} has report schema_version {version!r}; this tokcomp renders up to {REPORT_VERSION}",
                         "upgrade tokcomp-edge to render it")
    return data


def render_report(path: str | Path, out_dir: str | Path | None = None) -> dict[str, Path]:
    """Re-render Markdown and HTML from a report JSON (`tokcomp report`).

    Args:
        path: the report .json.
        out_dir: where to write (default: beside the JSON).
    Returns:
        {"md": …, "html": …}
    """
    path = Path(path)
    return render_files(load_report(path), path, Path(out_dir) if out_dir else None)

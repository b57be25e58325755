"""The report as one self-contained HTML file: inline CSS, inline SVG plots, images as data: URIs.

Nothing is fetched when it opens (no scripts, fonts, stylesheets or images from the network), so the
file can be attached to a ticket or opened on an air-gapped Jetson.
"""

from __future__ import annotations

from html import escape
from typing import Any

from . import plots
from . import report_tables as T

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px;color:#1f2328;max-width:1150px}
h1{font-size:22px;margin:0 0 12px}h2{font-size:17px;margin:26px 0 8px;border-bottom:1px solid #d0d7de;padding-bottom:4px}
table{border-collapse:collapse;font-size:12.5px;margin:6px 0}td,th{border:1px solid #d0d7de;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#f6f8fa}.badge{display:inline-block;padding:3px 12px;border-radius:12px;font-weight:700;font-size:15px}
.pass{background:#dafbe1;color:#116329}.fail{background:#ffebe9;color:#a40e26}
.warn{background:#fff8c5;border:1px solid #d4a72c;padding:8px 12px;margin:8px 0;font-weight:600}
.failures li{color:#a40e26}.plots{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start}
code{background:#f6f8fa;padding:1px 4px}.muted{color:#57606a;font-size:12px}td.FAIL{color:#a40e26;font-weight:700}
"""


def _table(head: list[str] | None, rows: list[list[str]]) -> str:
    h = "<tr>" + "".join(f"<th>{escape(x)}</th>" for x in head) + "</tr>" if head else ""
    body = "".join("<tr>" + "".join(f"<td class='{escape(c) if c in ('FAIL', 'pass') else ''}'>{escape(c)}</td>"
                                    for c in r) + "</tr>" for r in rows)
    return f"<table>{h}{body}</table>"


def _kv(rows: list[list[str]]) -> str:
    return "<table>" + "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in rows) + "</table>"


def latency_plots(report: dict[str, Any]) -> list[str]:
    """One strip plot per batch size (target and PyTorch side by side)."""
    runs = report["latency"]["runs"]
    out = []
    for b in sorted({r["batch"] for r in runs}):
        rs = sorted((r for r in runs if r["batch"] == b), key=lambda r: r["runner"] != "target")
        out.append(plots.latency_strip(rs, f"latency, batch {b} ({rs[0]['iterations']} calls each)"))
    return out


def accuracy_plots(report: dict[str, Any]) -> list[str]:
    """Cosine heat-maps per token output; for prune, the kept-token masks; for visionzip also the merge map."""
    acc = report["accuracy"]
    lay = acc.get("layout") or {}
    out = []
    for name, grid in (acc.get("cosine_grid") or {}).items():
        if grid:
            over = "input grid, cells both runtimes kept" if acc.get("prune") else "output grid"
            out.append(plots.cosine_heatmap(grid, f"{name}: worst per-token 1 − cos ({over})",
                                            (report["tolerances"].get(name) or {}).get("min_cosine")))
    prune = acc.get("prune")
    if prune and prune.get("keep_frequency_golden"):
        out.append(plots.mask_grid(prune["keep_frequency_golden"], "kept tokens, golden inputs (target)"))
    if prune and prune.get("merge_map_golden"):
        first = int(prune.get("kept", 0)) + int(lay.get("prefix_out", 0))
        out.append(plots.merge_map_grid(prune["merge_map_golden"], first, int(prune.get("merged", 0)),
                                        "merge map, first golden image (target)", method=lay.get("method", "visionzip")))
    imgs = report.get("images") or {}
    enc = report["bundle"].get("encoder") or {}
    if prune and imgs.get("panels"):
        size = tuple(enc.get("image_size") or (224, 224))
        for p in imgs["panels"]:
            if "kept_indices" in p:
                out.append(plots.mask_over_image(p["png_base64"], p["kept_indices"], tuple(lay["grid_in"]), size,
                                                 p["file"]))
    return out


def links_line(links: list[dict[str, str]]) -> str:
    """The report's links to where it came from (e.g. the sweep that chose the compression), relative hrefs."""
    return ("<p>See also: " + " · ".join(f"<a href='{escape(x['href'], quote=True)}'>{escape(x['label'])}</a>"
                                         for x in links) + "</p>")


def render_html(report: dict[str, Any]) -> str:
    """Render a report dict (as loaded from its JSON) to one self-contained HTML page."""
    t = report["target"]
    ok = report.get("passed")
    title = f"tokcomp validation — {report['bundle']['name']} · {t['label']}"
    parts = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
             f"<title>{escape(title)}</title><style>{CSS}</style></head><body>",
             f"<h1>{escape(title)} <span class='badge {'pass' if ok else 'fail'}'>{T.verdict(report)}</span></h1>"]
    if report.get("links"):
        parts.append(links_line(report["links"]))
    for w in report.get("warnings", []):
        parts.append(f"<div class='warn'>⚠ {escape(w)}</div>")
    if report.get("failures"):
        parts.append("<h2>Failures</h2><ul class='failures'>" +
                     "".join(f"<li>{escape(f)}</li>" for f in report["failures"]) + "</ul>")
    if report.get("notes"):
        parts.append("<ul class='muted'>" + "".join(f"<li>{escape(n)}</li>" for n in report["notes"]) + "</ul>")
    parts.append(_kv(T.summary_rows(report)))
    parts.append("<h2>Accuracy</h2><p class='muted'>Worst case per output over every comparison "
                 "(golden reference in the bundle, and fresh PyTorch runs when available).</p>")
    parts.append(_table(*T.accuracy_table(report)))
    acc_plots = accuracy_plots(report)
    if acc_plots:
        parts.append("<div class='plots'>" + "".join(acc_plots) + "</div>")
    if report["latency"]["runs"]:
        lat = report["latency"]
        parts.append(f"<h2>Latency</h2><p class='muted'>{lat['warmup']} warm-up + {lat['iterations']} timed calls "
                     f"per batch size; {escape(lat['timing'])}.</p>")
        parts.append("<div class='plots'>" + "".join(latency_plots(report)) + "</div>")
        parts.append(_table(*T.latency_table(report)))
    parts.append("<h2>Memory</h2>" + _kv(T.memory_rows(report)))
    e = report["economics"]
    parts.append(f"<h2>Token economics</h2><p>{e['tokens_in']} → {e['tokens_out']} visual tokens per {T.token_unit(report)} "
                 f"({e['ratio']:.3f}× of the input)"
                 f"{', with ' + str(e['text_tokens']) + ' text tokens' if e['text_tokens'] else ''}.</p>")
    if e["llms"]:
        parts.append(_table(*T.economics_table(report)))
        parts.append(f"<p class='muted'>Formula: <code>{escape(e['formula'])}</code></p>")
    dbg = report.get("debug")
    if dbg:
        parts.append(debug_section(dbg))
    parts.append("<h2>Every comparison</h2>" + _table(*T.checks_table(report)))
    parts.append("<h2>Environment</h2>" + _kv(T.environment_rows(report)))
    parts.append(f"<p class='muted'>Report schema {escape(report['schema'])} v{report['schema_version']}, "
                 f"tokcomp {escape(str(report['tokcomp_version']))}.</p></body></html>")
    return "\n".join(parts)


# --- `tokcomp debug`: the per-block section ---------------------------------------------------------


def _dbg(v) -> str:
    if v is None:
        return "—"
    if isinstance(v, str):
        return v
    return f"{v:.6f}" if isinstance(v, float) and 0.9 < v <= 1.0 else f"{v:.3g}"


def debug_section(d: dict[str, Any]) -> str:
    """The "Precision debug" section from a debug result dict (tokcomp_edge/debug/result.py)."""
    blocks = d.get("blocks") or []
    culprit = d.get("culprit")
    verdict = ("<span class='badge pass'>no block breaks</span>" if culprit is None else
               f"<span class='badge fail'>breaks at block {culprit['index']} {escape(str(culprit['name']))}, "
               f"node {escape(str(culprit.get('node')))}</span>")
    parts = [f"<h2>Precision debug: {escape(d['variant'])} vs fp32, per block</h2>", f"<p>{verdict}</p>",
             f"<p class='muted'>{escape(d.get('inputs', ''))}. {escape(d.get('runtime', ''))}. Tolerance: rel L2 ≤ "
             f"{d['tolerance']['max_rel_l2']:g}, min token cosine ≥ {d['tolerance']['min_cosine']:g}; margin = 65504 / "
             "largest |activation| of the tensors the variant stores in fp16 (below 1: overflow).</p>"]
    labels = [b["name"] for b in blocks]
    parts.append("<div class='plots'>" + plots.block_log_bars(
        [b["rel_l2"] for b in blocks], labels, "relative L2 error of each block output (log)",
        threshold=d["tolerance"]["max_rel_l2"]) + plots.block_log_bars(
        [b["overflow_margin"] for b in blocks], labels, "fp16 overflow margin 65504 / max |activation| (log)",
        threshold=1.0, bad_below=True) + "</div>")
    rows = [[str(b["index"]), b["name"], _dbg(b["max_abs"]), _dbg(b["rel_l2"]), _dbg(b["min_cosine"]),
             _dbg(b["max_activation"]), _dbg(b["overflow_margin"]),
             (f"{b['first_nonfinite']['count']} in {b['first_nonfinite']['node']}" if b.get("first_nonfinite")
              else "—"), "FAIL" if b["breaks"] else "pass"] for b in blocks]
    parts.append(_table(["#", "block", "max |Δ|", "rel L2", "min cos", "max |act|", "margin", "first non-finite",
                         ""], rows))
    fix = d.get("fix")
    if fix:
        isl = fix["islands"]
        parts.append(f"<p>--fix kept {len(isl['nodes'])} nodes in fp32 ({isl['rounds']} round(s)), registered "
                     f"<code>{escape(fix['registered'])}</code>:</p>")
        parts.append(_table(["node", "why"], [[n, isl["why"].get(n, "")] for n in isl["nodes"]]))
    return "\n".join(parts)


def render_debug_html(d: dict[str, Any]) -> str:
    """A self-contained page holding only the debug section (written beside the debug JSON)."""
    title = f"tokcomp debug — {d['bundle']} · {d['variant']}"
    return "\n".join(["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
                      f"<title>{escape(title)}</title><style>{CSS}</style></head><body>",
                      f"<h1>{escape(title)}</h1>", debug_section(d), "</body></html>"])

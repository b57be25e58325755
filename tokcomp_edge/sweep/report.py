"""sweep.html: one self-contained page (inline CSS and SVG, the validation report's styles) drawn from the
sweep.json dict: tokens-vs-top1 scatter with the front and the pick, latency bars, the per-prompt breakdown
of the pick, example answers side by side, the full table and the refused candidates."""

from __future__ import annotations

from html import escape
from typing import Any

from ..validation.plots import FONT, nice_ticks
from ..validation.report_html import CSS

PICK, FRONT, OTHER = "#d1242f", "#1f77b4", "#8c959f"


def scatter(rows: list[dict], front: list[str], pick: str | None, width: int = 560, height: int = 320) -> str:
    """top1 (with its 95 % interval) against tokens per tile; the front joined by a line, the pick in red."""
    left, right, top, bottom = 52, 20, 26, 40
    xs = [r["tokens"] for r in rows]
    lo_y = min([r["top1_ci"][0] for r in rows] + [1.0])
    ylo, yhi = max(0.0, lo_y - 0.05), 1.0
    xlo, xhi = 0, max(xs) * 1.05
    pw, ph = width - left - right, height - top - bottom

    def X(v):
        return left + (v - xlo) / (xhi - xlo) * pw

    def Y(v):
        return top + (1 - (v - ylo) / (yhi - ylo or 1)) * ph

    p = [f"<svg class='plot' width='{width}' height='{height}' viewBox='0 0 {width} {height}' role='img'>",
         f"<text x='{left}' y='16' {FONT} font-weight='600'>top-1 agreement vs tokens per tile</text>"]
    for t in nice_ticks(ylo, yhi):
        p.append(f"<line x1='{left}' x2='{width - right}' y1='{Y(t):.1f}' y2='{Y(t):.1f}' stroke='#eee'/>"
                 f"<text x='{left - 4}' y='{Y(t) + 4:.1f}' {FONT} text-anchor='end'>{t:g}</text>")
    for t in nice_ticks(xlo, xhi):
        p.append(f"<text x='{X(t):.1f}' y='{top + ph + 14}' {FONT} text-anchor='middle'>{t:g}</text>")
    p.append(f"<text x='{left + pw / 2:.1f}' y='{height - 6}' {FONT} text-anchor='middle' fill='#555'>"
             "tokens the LLM reads per tile</text>")
    by = {r["spec"]: r for r in rows}
    pts = [by[s] for s in front if s in by]
    if len(pts) > 1:
        line = " ".join(f"{X(r['tokens']):.1f},{Y(r['top1']):.1f}" for r in pts)
        p.append(f"<polyline points='{line}' fill='none' stroke='{FRONT}' stroke-dasharray='4 3'/>")
    for r in rows:
        colour = PICK if r["spec"] == pick else (FRONT if r["spec"] in front else OTHER)
        x, lo, hi = X(r["tokens"]), Y(r["top1_ci"][0]), Y(r["top1_ci"][1])
        p.append(f"<line x1='{x:.1f}' x2='{x:.1f}' y1='{lo:.1f}' y2='{hi:.1f}' stroke='{colour}'/>"
                 f"<circle cx='{x:.1f}' cy='{Y(r['top1']):.1f}' r='{6 if r['spec'] == pick else 4}' fill='{colour}'>"
                 f"<title>{escape(r['spec'])}: {r['tokens']} tokens, top1 {r['top1']:.3f} "
                 f"[{r['top1_ci'][0]:.3f}, {r['top1_ci'][1]:.3f}]</title></circle>")
        if colour != OTHER:  # only the front and the pick are labelled (many share a token count); others: hover
            p.append(f"<text x='{x + 6:.1f}' y='{Y(r['top1']) - 5:.1f}' {FONT} fill='{colour}'>{escape(r['spec'])}</text>")
    p.append("</svg>")
    return "".join(p)


def latency_bars(rows: list[dict], pick: str | None, label: str, width: int = 560) -> str:
    """Median vision-path latency per candidate, one horizontal bar each."""
    rows = [r for r in rows if r.get("latency_ms") is not None]
    if not rows:
        return ""
    left, bar_h, top = 150, 18, 26
    hi = max(r["latency_ms"] for r in rows) * 1.1
    height = top + bar_h * len(rows) + 30
    pw = width - left - 60
    p = [f"<svg class='plot' width='{width}' height='{height}' viewBox='0 0 {width} {height}' role='img'>",
         f"<text x='8' y='16' {FONT} font-weight='600'>median latency, ms ({escape(label)})</text>"]
    for i, r in enumerate(sorted(rows, key=lambda r: r["latency_ms"])):
        y = top + i * bar_h
        w = r["latency_ms"] / hi * pw
        colour = PICK if r["spec"] == pick else FRONT
        p.append(f"<text x='{left - 6}' y='{y + 13}' {FONT} text-anchor='end'>{escape(r['spec'])}</text>"
                 f"<rect x='{left}' y='{y + 2}' width='{w:.1f}' height='{bar_h - 4}' fill='{colour}'/>"
                 f"<text x='{left + w + 4:.1f}' y='{y + 13}' {FONT}>{r['latency_ms']:.3g}</text>")
    p.append("</svg>")
    return "".join(p)


def _table(head: list[str], rows: list[list[str]]) -> str:
    return ("<table><tr>" + "".join(f"<th>{escape(h)}</th>" for h in head) + "</tr>" +
            "".join("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in r) + "</tr>" for r in rows) + "</table>")


def table_rows(d: dict[str, Any]) -> list[list[str]]:
    front = set(d["fronts"]["tokens"])
    out = []
    for r in sorted(d["candidates"], key=lambda r: (r["tokens"], -r["top1"], r["spec"])):
        lat = "—" if r["latency_ms"] is None else f"{r['latency_ms']:.3g}"
        e = r["economics"]
        out.append([("★ " if r["spec"] == d["pick"] else "") + r["spec"], r["tokens"],
                    f"{r['top1']:.3f} [{r['top1_ci'][0]:.3f}, {r['top1_ci'][1]:.3f}]",
                    f"{r['kl']:.4f} [{r['kl_ci'][0]:.4f}, {r['kl_ci'][1]:.4f}]",
                    f"{r['match']:.3f} [{r['match_ci'][0]:.3f}, {r['match_ci'][1]:.3f}]", lat,
                    f"{100 * e['saved_fraction']:.1f} %", f"{e['kv_bytes_saved'] / 1024:.1f}",
                    "yes" if r["spec"] in front else ""])
    return out


TABLE_HEAD = ["candidate", "tokens/tile", "top1 [95 %]", "kl [95 %]", "match [95 %]", "latency ms",
              "prefill saved", "KV KiB saved", "front"]


def render_html(d: dict[str, Any]) -> str:
    """Render a sweep.json dict as one self-contained HTML page."""
    m, pick = d["model"], d["pick"]
    title = f"tokcomp sweep — {m['id']}"
    badge = (f"<span class='badge pass'>pick: {escape(pick)}</span>" if pick else
             f"<span class='badge fail'>{'no feasible candidate' if d['infeasible'] else 'no constraint'}</span>")
    p = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
         f"<title>{escape(title)}</title><style>{CSS}</style></head><body>", f"<h1>{escape(title)} {badge}</h1>"]
    for w in d.get("warnings", []):
        p.append(f"<div class='warn'>⚠ {escape(w)}</div>")
    if d["infeasible"]:
        p.append(f"<div class='warn'>{escape(d['infeasible'])}</div>")
    t = d["timing"]
    p.append(f"<p>{m['family']}: {m['native_tokens_per_tile']} tokens per tile uncompressed; {t['candidates']} "
             f"candidates × {t['pairs']} pairs; rule: {escape(d['constraint']['rule'])}. Fidelity "
             f"{t['fidelity_s']:.1f} s ({1e3 * t['per_candidate_pair_s']:.0f} ms per candidate × pair), latency "
             f"{t['latency_s']:.1f} s.</p>")
    p.append("<p class='muted'>top1: share of reference-answer positions where the candidate's most likely next "
             "token is the uncompressed model's; kl: mean KL(p_ref ‖ p_cand) there (nats); match: share of pairs "
             "whose whole greedy answer is unchanged. Agreement with the uncompressed model on these images, not "
             "benchmark accuracy.</p>")
    p.append("<div class='plots'>" + scatter(d["candidates"], d["fronts"]["tokens"], pick) +
             latency_bars(d["candidates"], pick, d["latency"].get("label", "")) + "</div>")
    p.append("<h2>Candidates</h2>" + _table(TABLE_HEAD, table_rows(d)))
    if d["refused"]:
        p.append("<h2>Refused</h2>" + _table(["candidate", "reason"], [[r["spec"], r["refused"]] for r in d["refused"]]))
    shown = pick or (d["examples"][0]["spec"] if d["examples"] else None)
    if shown:
        r = next(c for c in d["candidates"] if c["spec"] == shown)
        p.append(f"<h2>Per prompt: {escape(shown)}</h2>" + _table(
            ["prompt", "pairs", "top1", "kl", "match"],
            [[x["prompt"], x["pairs"], f"{x['top1']:.3f}", f"{x['kl']:.4f}", f"{x['match']:.3f}"]
             for x in r["per_prompt"]]))
    if d["examples"]:
        p.append(f"<h2>Example answers: uncompressed vs {escape(d['examples'][0]['spec'])}</h2>" + _table(
            ["image", "prompt", "uncompressed", d["examples"][0]["spec"], "same"],
            [[e["image"], e["prompt"], e["reference"], e["candidate"], "yes" if e["same"] else "no"]
             for e in d["examples"]]))
    if d.get("bundle"):
        p.append(f"<p>Exported: <code>{escape(d['bundle'])}</code></p>")
    v = d.get("validation")
    if v:
        link = v["reports"].get("html")
        p.append(f"<p>Validation of the export: <b>{'passed' if v['passed'] else 'FAILED'}</b>"
                 + (f" — <a href='{escape(link)}'>{escape(link)}</a>" if link else "") + "</p>")
    p.append(f"<p class='muted'>Latency: {escape(d['latency'].get('label', ''))}. Schema {d['schema']} "
             f"v{d['schema_version']}; every pair's reference answer is in sweep.json as token ids.</p></body></html>")
    return "\n".join(p)

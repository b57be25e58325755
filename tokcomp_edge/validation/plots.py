"""Inline SVG plots for the HTML report, drawn by hand (no plotting library, no external resources).

Each function returns one `<svg>` element as a string; values are data from the report JSON, so
re-rendering a report draws the same plots.
"""

from __future__ import annotations

import math
from html import escape

import numpy as np

# Viridis at 9 evenly spaced stops (matplotlib's table), interpolated linearly in RGB.
_VIRIDIS = [(68, 1, 84), (71, 44, 122), (59, 81, 139), (44, 113, 142), (33, 144, 141),
            (39, 173, 129), (92, 200, 99), (170, 220, 50), (253, 231, 37)]
RUNNER_COLOURS = {"target": "#1f77b4", "pytorch": "#7f7f7f"}
KEPT_COLOUR = "#2ca02c"
MISSING_COLOUR = "#e6e6e6"
FONT = "font-family='system-ui, sans-serif' font-size='11'"


def viridis(t: float) -> str:
    """Colour for t in 0..1 (clipped) as #rrggbb."""
    t = min(1.0, max(0.0, float(t))) * (len(_VIRIDIS) - 1)
    i = min(int(t), len(_VIRIDIS) - 2)
    f = t - i
    a, b = _VIRIDIS[i], _VIRIDIS[i + 1]
    return "#%02x%02x%02x" % tuple(round(a[k] + (b[k] - a[k]) * f) for k in range(3))


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About n round tick values covering lo..hi."""
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(1, n)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(s * mag for s in (1, 2, 2.5, 5, 10) if s * mag >= raw)
    start = math.floor(lo / step) * step
    ticks = []
    v = start
    while v <= hi + step * 1e-9:
        if v >= lo - step * 1e-9:
            ticks.append(round(v, 10))
        v += step
    return ticks


def _fmt_tick(v: float) -> str:
    return f"{v:g}" if abs(v) >= 0.01 or v == 0 else f"{v:.1e}"


def latency_strip(runs: list[dict], title: str, width: int = 560) -> str:
    """Per-runner strip plot of every timed call, with a box from p25 to p75 and the median marked.

    Args:
        runs: latency runs of one batch size (`runner`, `samples_ms`, `p50_ms`, `p99_ms`).
        title: caption drawn above the plot.
    Returns:
        An <svg> element.
    """
    left, right, top, row_h = 80, 20, 28, 46
    height = top + row_h * len(runs) + 36
    allv = [v for r in runs for v in r["samples_ms"]] or [0.0, 1.0]
    lo, hi = min(allv), max(allv)
    pad = (hi - lo) * 0.08 or max(hi * 0.05, 1e-3)
    lo, hi = max(0.0, lo - pad), hi + pad
    plot_w = width - left - right

    def x(v: float) -> float:
        return left + (v - lo) / (hi - lo) * plot_w

    parts = [f"<svg class='plot latency' width='{width}' height='{height}' viewBox='0 0 {width} {height}' role='img'>",
             f"<title>{escape(title)}</title>",
             f"<text x='{left}' y='16' {FONT} font-weight='600'>{escape(title)}</text>"]
    axis_y = top + row_h * len(runs) + 4
    for t in nice_ticks(lo, hi):
        parts.append(f"<line x1='{x(t):.1f}' y1='{top - 4}' x2='{x(t):.1f}' y2='{axis_y}' stroke='#eee'/>")
        parts.append(f"<text x='{x(t):.1f}' y='{axis_y + 14}' {FONT} text-anchor='middle' fill='#555'>"
                     f"{_fmt_tick(t)}</text>")
    parts.append(f"<text x='{left + plot_w / 2:.1f}' y='{axis_y + 30}' {FONT} text-anchor='middle' fill='#555'>"
                 "ms per call</text>")
    rng = np.random.default_rng(0)  # fixed jitter: the same report always draws the same picture
    for i, r in enumerate(runs):
        colour = RUNNER_COLOURS.get(r["runner"], "#9467bd")
        cy = top + row_h * i + row_h / 2
        s = np.asarray(r["samples_ms"], float)
        parts.append(f"<text x='{left - 8}' y='{cy + 4:.1f}' {FONT} text-anchor='end'>{escape(r['runner'])}</text>")
        if s.size:
            q1, med, q3 = np.percentile(s, [25, 50, 75])
            # Never thinner than 12 px around the median: a tight runner's box would otherwise hide behind its
            # own dots (r = 3) and the plot would show no box at all for the fastest, steadiest runtime.
            bx0, bx1 = x(q1), x(q3)
            if bx1 - bx0 < 12.0:
                bx0, bx1 = x(med) - 6.0, x(med) + 6.0
            parts.append(f"<rect x='{bx0:.1f}' y='{cy - 14:.1f}' width='{bx1 - bx0:.1f}' "
                         f"height='28' fill='{colour}' fill-opacity='0.25' stroke='{colour}'/>")
            parts.append(f"<line x1='{x(med):.1f}' y1='{cy - 16:.1f}' x2='{x(med):.1f}' y2='{cy + 16:.1f}' "
                         f"stroke='{colour}' stroke-width='3'/>")
            for v, j in zip(s, rng.uniform(-10, 10, size=s.size), strict=True):
                parts.append(f"<circle cx='{x(v):.1f}' cy='{cy + j:.1f}' r='3' fill='{colour}' fill-opacity='0.8'/>")
    parts.append("</svg>")
    return "".join(parts)


def _log_error(cos: float) -> float:
    # float64 cosines of float32 tokens bottom out near 1e-16; below that the colour means "exact".
    return math.log10(max(1.0 - cos, 1e-16))


def cosine_heatmap(grid: list[list[float | None]], title: str, min_cosine: float | None = None,
                   cell: int | None = None) -> str:
    """Heat-map of 1 − cosine per grid cell on a log colour scale (bright = worst).

    Args:
        grid: rows of per-cell cosines (None: no token there, drawn grey).
        title: caption.
        min_cosine: the threshold; cells below it get a red outline.
        cell: pixel size of a cell (default: fit the grid into ~360 px).
    Returns:
        An <svg> element with a colour bar.
    """
    h, w = len(grid), len(grid[0]) if grid else 0
    cell = cell or max(6, min(40, 360 // max(1, max(h, w))))
    vals = [_log_error(v) for row in grid for v in row if v is not None]
    limit = _log_error(min_cosine) if min_cosine is not None else None
    lo = math.floor(min(vals)) if vals else -7.0
    hi = math.ceil(max(vals)) if vals else -6.0
    if limit is not None:
        # The scale reaches the threshold, so colour reads as "how close to failing": dark = far below.
        lo, hi = min(lo, math.floor(limit)), max(hi, math.ceil(limit))
    if hi - lo < 1:
        hi = lo + 1
    top, left = 26, 10
    gw, gh = cell * w, cell * h
    bar_x = left + gw + 24
    width, height = bar_x + 90, top + max(gh, 120) + 12
    parts = _grid_svg_open("heatmap", width, height, title, left)
    for r, row in enumerate(grid):
        for q, v in enumerate(row):
            x0, y0 = left + q * cell, top + r * cell
            if v is None:
                parts.append(f"<rect x='{x0}' y='{y0}' width='{cell}' height='{cell}' fill='{MISSING_COLOUR}'/>")
                continue
            t = (_log_error(v) - lo) / (hi - lo)
            bad = min_cosine is not None and v < min_cosine
            stroke = " stroke='#d62728' stroke-width='2'" if bad else ""
            parts.append(f"<rect x='{x0}' y='{y0}' width='{cell}' height='{cell}' fill='{viridis(t)}'{stroke}>"
                         f"<title>row {r}, col {q}: cos {v:.8f}</title></rect>")
    steps = 24
    bh = max(gh, 120)
    for i in range(steps):
        y0 = top + bh * (1 - (i + 1) / steps)
        parts.append(f"<rect x='{bar_x}' y='{y0:.1f}' width='14' height='{bh / steps + 0.5:.1f}' "
                     f"fill='{viridis((i + 0.5) / steps)}'/>")
    for k in range(int(lo), int(hi) + 1):
        y0 = top + bh * (1 - (k - lo) / (hi - lo))
        parts.append(f"<text x='{bar_x + 18}' y='{y0 + 4:.1f}' {FONT}>1e{k}</text>")
    if limit is not None:
        y0 = top + bh * (1 - (limit - lo) / (hi - lo))
        parts.append(f"<line x1='{bar_x - 4}' y1='{y0:.1f}' x2='{bar_x + 16}' y2='{y0:.1f}' stroke='#d62728' "
                     f"stroke-width='2'/><text x='{bar_x + 50}' y='{y0 + 4:.1f}' {FONT} fill='#d62728'>limit</text>")
    parts.append(f"<text x='{bar_x}' y='{top + bh + 12}' {FONT} fill='#555'>1 − cos</text>")
    parts.append("</svg>")
    return "".join(parts)


def _plain_grid_open(kind: str, h: int, w: int, title: str, cell: int | None,
                     legend: tuple[str, ...] = ()) -> tuple[int, int, int, list[str]]:
    """Layout of an h×w cell grid with caption lines under it (no colour bar): (cell, top, left, opening tags).

    With `legend`, the lines are drawn under the grid and the plot is made wide enough for them (a legend
    cut off at the grid's edge explains nothing).
    """
    cell = cell or max(6, min(40, 300 // max(1, max(h, w))))
    top, left = 26, 10
    width = max(left + cell * w + 10, left + 6 * max((len(t) for t in legend), default=0) + 10)
    height = top + cell * h + 22 + 14 * max(0, len(legend) - 1)
    parts = _grid_svg_open(kind, width, height, title, left)
    for k, text in enumerate(legend):
        parts_y = top + cell * h + 16 + 14 * k
        parts.append(f"<text x='{left}' y='{parts_y}' {FONT} fill='#555'>{escape(text)}</text>")
    return cell, top, left, parts


def _grid_svg_open(kind: str, width: int, height: int, title: str, left: int) -> list[str]:
    """Opening tags of a cell-grid plot: the <svg> element (crisp cell edges), its tooltip and caption."""
    return [f"<svg class='plot {kind}' width='{width}' height='{height}' viewBox='0 0 {width} {height}' "
            "role='img' shape-rendering='crispEdges'>",
            f"<title>{escape(title)}</title>",
            f"<text x='{left}' y='16' {FONT} font-weight='600'>{escape(title)}</text>"]


def mask_grid(freq: list[list[float]], title: str, cell: int | None = None) -> str:
    """Kept-token mask over the input grid: cell opacity = fraction of images that kept it.

    Args:
        freq: rows of fractions 0..1.
        title: caption.
    Returns:
        An <svg> element.
    """
    h, w = len(freq), len(freq[0]) if freq else 0
    cell, top, left, parts = _plain_grid_open("mask", h, w, title, cell)
    for r, row in enumerate(freq):
        for q, v in enumerate(row):
            x0, y0 = left + q * cell, top + r * cell
            parts.append(f"<rect x='{x0}' y='{y0}' width='{cell}' height='{cell}' fill='{MISSING_COLOUR}' stroke='#fff'/>")
            if v > 0:
                parts.append(f"<rect x='{x0}' y='{y0}' width='{cell}' height='{cell}' fill='{KEPT_COLOUR}' "
                             f"fill-opacity='{0.15 + 0.85 * v:.3f}' stroke='#fff'><title>row {r}, col {q}: kept in "
                             f"{v:.0%} of images</title></rect>")
    parts.append(f"<text x='{left}' y='{top + cell * h + 16}' {FONT} fill='#555'>green = kept (opacity: share of "
                 "images)</text></svg>")
    return "".join(parts)


MERGE_LEGENDS = {
    "visionzip": ("green = kept (dominant) token, one patch each;",
                  "other colours = the contextual token each remaining patch merged into"),
    "tome": ("colour = the output token each patch was merged into;",
             "ToMe keeps no patch alone: every token is a merge of one or more patches"),
}


def merge_map_grid(rows: list[list[int]], first_merged: int, merged: int, title: str,
                   cell: int | None = None, method: str = "visionzip") -> str:
    """Where each patch went (`merge_map` of one image) over the input grid.

    Args:
        rows: h rows of w output-row numbers (the map reshaped to the grid).
        first_merged: the first output row that is a merged token; rows below it are kept tokens (VisionZip's
            dominant ones; ToMe has none: first_merged is its prefix rows).
        merged: number of merged tokens (colours are spread over them).
        title: caption.
        method: `visionzip` or `tome`, for the legend (MERGE_LEGENDS).
    Returns:
        An <svg> element: kept cells in the kept colour, merged cells coloured by the token they joined.
    """
    h, w = len(rows), len(rows[0]) if rows else 0
    cell, top, left, parts = _plain_grid_open("merge-map", h, w, title, cell,
                                              MERGE_LEGENDS.get(method, MERGE_LEGENDS["visionzip"]))
    for r, row in enumerate(rows):
        for q, t in enumerate(row):
            x0, y0 = left + q * cell, top + r * cell
            c = int(t) - first_merged
            fill = KEPT_COLOUR if c < 0 else viridis(c / max(1, merged - 1))
            what = f"kept as token {int(t)}" if c < 0 else f"merged into token {int(t)}" + (
                f" (contextual {c})" if method == "visionzip" else "")
            parts.append(f"<rect x='{x0}' y='{y0}' width='{cell}' height='{cell}' fill='{fill}' stroke='#fff'>"
                         f"<title>row {r}, col {q}: {what}</title></rect>")
    parts.append("</svg>")
    return "".join(parts)


def mask_over_image(png_base64: str, kept: list[int], grid: tuple[int, int], image_size: tuple[int, int],
                    title: str, width: int = 224) -> str:
    """An input image (embedded PNG) with the dropped grid cells darkened and the kept ones outlined; the
    kept cells show the image itself (its colours, not a code), which the legend under it says.

    Args:
        png_base64: the preprocessed image as base64 PNG.
        kept: kept grid indices (row-major over `grid`).
        grid: (h, w) input grid.
        image_size: (H, W) of the encoder input, for the aspect ratio.
        title: caption (file name).
    Returns:
        An <svg> element.
    """
    gh, gw = grid
    ih, iw = image_size
    height = int(round(width * ih / iw))
    top = 18
    cw, ch = width / gw, height / gh
    keep = set(int(k) for k in kept)
    legend = "green outline: kept token; darkened: not kept on its own"
    parts = [f"<svg class='plot mask-image' width='{width}' height='{height + top + 16}' "
             f"viewBox='0 0 {width} {height + top + 16}' role='img'>", f"<title>{escape(title)}</title>",
             f"<text x='0' y='12' {FONT}>{escape(title)}</text>",
             f"<text x='0' y='{top + height + 12}' {FONT} fill='#555'>{escape(legend)}</text>",
             f"<image x='0' y='{top}' width='{width}' height='{height}' preserveAspectRatio='none' "
             f"href='data:image/png;base64,{png_base64}'/>"]
    for g in range(gh * gw):
        r, q = divmod(g, gw)
        x0, y0 = q * cw, top + r * ch
        if g in keep:
            parts.append(f"<rect x='{x0 + 1:.2f}' y='{y0 + 1:.2f}' width='{cw - 2:.2f}' height='{ch - 2:.2f}' "
                         f"fill='none' stroke='{KEPT_COLOUR}' stroke-width='2' shape-rendering='crispEdges'/>")
        else:
            parts.append(f"<rect x='{x0:.2f}' y='{y0:.2f}' width='{cw:.2f}' height='{ch:.2f}' fill='#000' "
                         "fill-opacity='0.6'/>")
    parts.append("</svg>")
    return "".join(parts)


def _as_float(v) -> float | None:
    """A debug figure as a float: "inf"/"nan" strings (JSON) back to floats, None stays None."""
    if v is None:
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def block_log_bars(values: list[float | None], labels: list[str], title: str, *, threshold: float | None = None,
                   bad_below: bool = False, width: int = 560) -> str:
    """One bar per transformer block on a log10 axis (debug: relative L2 error, or the fp16 overflow margin).

    Non-finite values are drawn as a full-height red bar marked "inf"; a dashed line marks `threshold`
    (the tolerance, or margin 1); bars beyond it — above, or below with `bad_below` — are red.
    """
    n = max(1, len(values))
    left, top, plot_h, bottom = 52, 22, 150, 34
    bar_w = max(6.0, (width - left - 10) / n)
    w = int(left + bar_w * n + 10)
    vals = [_as_float(v) for v in values]
    finite = [v for v in vals if v is not None and math.isfinite(v) and v > 0]
    marks = finite + ([threshold] if threshold else [])
    lo = math.floor(math.log10(min(marks))) if marks else -6
    hi = math.ceil(math.log10(max(marks))) if marks else 0
    hi = hi if hi > lo else lo + 1

    def y(v: float) -> float:
        return top + plot_h * (1 - (math.log10(v) - lo) / (hi - lo))

    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{top + plot_h + bottom}' "
             f"role='img' aria-label='{escape(title)}'>", f"<text x='{left}' y='14' {FONT} font-weight='600'>"
             f"{escape(title)}</text>"]
    for e in range(lo, hi + 1):
        parts.append(f"<line x1='{left}' x2='{w - 10}' y1='{y(10.0 ** e):.1f}' y2='{y(10.0 ** e):.1f}' "
                     "stroke='#eaeef2'/>")
        parts.append(f"<text x='{left - 4}' y='{y(10.0 ** e) + 4:.1f}' text-anchor='end' {FONT}>1e{e}</text>")
    base = top + plot_h
    for i, (v, label) in enumerate(zip(vals, labels)):
        x = left + i * bar_w + 1
        if v is None:
            continue
        if not math.isfinite(v) or v <= 0:
            bad = not math.isfinite(v) or bad_below
            h, text = plot_h, ("inf" if not math.isfinite(v) else "0")
        else:
            yy = min(max(y(v), top), base)
            h, text = base - yy, None
            bad = threshold is not None and ((v < threshold) if bad_below else (v > threshold))
        colour = "#d1242f" if bad else "#1f77b4"
        parts.append(f"<rect x='{x:.1f}' y='{base - h:.1f}' width='{bar_w - 2:.1f}' height='{h:.1f}' "
                     f"fill='{colour}'><title>{escape(label)}: {v:.4g}</title></rect>")
        if text:
            parts.append(f"<text x='{x + (bar_w - 2) / 2:.1f}' y='{top + 10}' text-anchor='middle' {FONT} "
                         f"fill='#fff'>{text}</text>")
        parts.append(f"<text x='{x + (bar_w - 2) / 2:.1f}' y='{base + 13}' text-anchor='middle' {FONT}>{i}</text>")
    if threshold:
        ty = min(max(y(threshold), top), base)
        parts.append(f"<line x1='{left}' x2='{w - 10}' y1='{ty:.1f}' y2='{ty:.1f}' stroke='#d1242f' "
                     "stroke-dasharray='4 3'/>")
    parts.append(f"<text x='{left}' y='{base + 28}' {FONT} fill='#57606a'>block index (execution order)</text>")
    parts.append("</svg>")
    return "".join(parts)

"""The sweep bench's figure: each candidate's top1 (what a sweep measures) against its task accuracy on the
ground truth (what a user cannot measure), one mark per candidate, coloured by the token budget it falls in,
each budget's pick ringed. Where the picks sit at the top of their colour, the chooser was right.

A standalone SVG (xmlns, inline attributes only) so a Markdown page can show it as an image:
`python benchmarks/sweep_bench.py --show bench.json --figure docs/img/sweep-shapes.svg`.
"""

from __future__ import annotations

from html import escape

from tokcomp_edge.validation.plots import FONT, nice_ticks

BUDGET_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd")
NONE_COLOUR, PICK_RING = "#444", "#d1242f"


def budget_of(tokens: int, budgets) -> int | None:
    """The tightest budget a candidate's token count meets (None: above every budget, i.e. `none`)."""
    fits = [b for b in budgets if tokens <= b]
    return min(fits) if fits else None


def figure_svg(res: dict, width: int = 620, height: int = 380) -> str:
    """The SVG text for a bench result (sweep_bench.bench_sweep's dict)."""
    rows = res["candidates"]
    budgets = sorted(res["budgets"], reverse=True)
    picks = {v["pick"] for v in res["verdicts"] if v.get("pick")}
    colour = {b: BUDGET_COLOURS[i % len(BUDGET_COLOURS)] for i, b in enumerate(budgets)}
    left, right, top, bottom = 56, 150, 30, 44
    pw, ph = width - left - right, height - top - bottom
    xs = [r["top1"] for r in rows]
    ys = [r["task"]["accuracy"] for r in rows]
    xlo, ylo = max(0.0, min(xs) - 0.05), max(0.0, min(ys) - 0.05)

    def X(v):
        return left + (v - xlo) / (1.0 - xlo or 1) * pw

    def Y(v):
        return top + (1 - (v - ylo) / (1.0 - ylo or 1)) * ph

    rho = res.get("spearman_top1_task", {}).get("rho")
    title = "task accuracy vs top-1 agreement, per candidate" + (f" (Spearman {rho:.2f})" if rho is not None else "")
    p = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
         f"viewBox='0 0 {width} {height}' role='img'>",
         f"<rect width='{width}' height='{height}' fill='white'/>",
         f"<text x='{left}' y='18' {FONT} font-weight='600'>{escape(title)}</text>"]
    for t in nice_ticks(ylo, 1.0):
        p.append(f"<line x1='{left}' x2='{left + pw}' y1='{Y(t):.1f}' y2='{Y(t):.1f}' stroke='#eee'/>"
                 f"<text x='{left - 4}' y='{Y(t) + 4:.1f}' {FONT} text-anchor='end'>{t:g}</text>")
    for t in nice_ticks(xlo, 1.0):
        p.append(f"<text x='{X(t):.1f}' y='{top + ph + 14}' {FONT} text-anchor='middle'>{t:g}</text>")
    p.append(f"<text x='{left + pw / 2:.1f}' y='{height - 8}' {FONT} text-anchor='middle' fill='#555'>"
             "top-1 agreement with the uncompressed model (the sweep's measure)</text>")
    p.append(f"<text x='14' y='{top + ph / 2:.1f}' {FONT} fill='#555' text-anchor='middle' "
             f"transform='rotate(-90 14 {top + ph / 2:.1f})'>task accuracy on the ground truth</text>")
    for r in rows:
        b = budget_of(r["tokens"], budgets)
        fill = colour[b] if b is not None else NONE_COLOUR
        x, y = X(r["top1"]), Y(r["task"]["accuracy"])
        p.append(f"<circle cx='{x:.1f}' cy='{y:.1f}' r='4.5' fill='{fill}'><title>{escape(r['spec'])}: "
                 f"{r['tokens']} tokens, top1 {r['top1']:.3f}, task {r['task']['accuracy']:.3f}</title></circle>")
        if r["spec"] in picks or b is None:
            if r["spec"] in picks:
                p.append(f"<circle cx='{x:.1f}' cy='{y:.1f}' r='8' fill='none' stroke='{PICK_RING}' stroke-width='1.5'/>")
            p.append(f"<text x='{x - 8:.1f}' y='{y - 9:.1f}' {FONT} text-anchor='end' fill='{fill}'>"
                     f"{escape(r['spec'])}</text>")
    ly = top + 6
    for b in budgets:
        p.append(f"<circle cx='{left + pw + 22}' cy='{ly}' r='4.5' fill='{colour[b]}'/>"
                 f"<text x='{left + pw + 32}' y='{ly + 4}' {FONT}>≤ {b} tokens</text>")
        ly += 18
    p.append(f"<circle cx='{left + pw + 22}' cy='{ly}' r='4.5' fill='{NONE_COLOUR}'/>"
             f"<text x='{left + pw + 32}' y='{ly + 4}' {FONT}>uncompressed</text>")
    p.append(f"<circle cx='{left + pw + 22}' cy='{ly + 18}' r='8' fill='none' stroke='{PICK_RING}' stroke-width='1.5'/>"
             f"<text x='{left + pw + 32}' y='{ly + 22}' {FONT}>the --tokens pick</text>")
    p.append("</svg>")
    return "".join(p)

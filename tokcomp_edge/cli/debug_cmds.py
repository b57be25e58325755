"""`tokcomp debug`: per-block error of a precision variant (or engine) against fp32; `--fix` keeps the culprits
in fp32."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..console import out


def debug(
    target: Annotated[Path, typer.Argument(help="Bundle folder, or an engine .plan (with --bundle).")],
    variant: Annotated[str, typer.Option(help="Variant to examine: fp16 | int8.")] = "fp16",
    bundle: Annotated[Optional[Path], typer.Option(help="The engine's bundle (engine targets only).")] = None,
    images: Annotated[Optional[Path], typer.Option(help="Folder of real photos (preprocessed per the manifest) "
                                                        "instead of the golden inputs.")] = None,
    max_images: Annotated[int, typer.Option(help="Use at most this many --images.")] = 16,
    fix: Annotated[bool, typer.Option("--fix", help="Regenerate the fp16 variant with the breaking nodes kept "
                                                    "in fp32, re-check it and register it.")] = False,
    fix_norms: Annotated[bool, typer.Option("--fix-norms", help="With --fix: also keep every LayerNormalization "
                                                                "and Softmax of the breaking blocks in fp32.")]
    = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON (for scripts).")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
):
    """Find the first transformer block where a precision variant breaks (fp16 overflow, int8 error), and fix it.

    Both graphs run on ONNX Runtime CPU on the same inputs with every block output marked; the variant runs
    through the fp16 emulation (as an engine stores fp16). The result is also written to BUNDLE/debug/<variant>.json
    and .html; `tokcomp validate` adds it to its report.

    Exit codes: 0 no block breaks (with --fix: the fixed variant passes and is registered); 1 a block breaks;
    2 bad input; 3 TensorRT missing (engine targets).

    [bold]Examples[/]

      tokcomp debug export/siglip_pool2 --variant fp16

      tokcomp debug export/siglip_pool2 --variant fp16 --fix

      tokcomp debug export/siglip_pool2 --variant int8 --images photos/

      tokcomp debug engines/siglip_pool2/orin-sm87-trt10.3.0-fp16.plan --bundle export/siglip_pool2
    """
    from ..debug import DebugConfig
    from ..debug import debug as run

    result = run(DebugConfig(target=target, variant=variant, bundle=bundle, images=images, max_images=max_images,
                             fix=fix, fix_norms=fix_norms, quiet=quiet or as_json))
    if as_json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print_result(result)
    raise typer.Exit(0 if result else 1)


def _f(x, fmt: str = ".3g") -> str:
    if x is None:
        return "—"
    if isinstance(x, str):
        return x
    return format(x, fmt)


def print_result(result) -> None:
    """The per-block table, the culprit, the culprit block's worst nodes, and what --fix did."""
    from rich.table import Table

    t = Table(title=f"{result.variant} vs fp32, per block — {result.inputs}", title_justify="left")
    for col in ("#", "block", "max |Δ|", "rel L2", "min cos", "max |act|", "margin", "non-finite", ""):
        t.add_column(col, justify="right" if col not in ("block", "non-finite", "") else "left")
    for b in result.blocks:
        nf = f"{b.first_nonfinite['count']} in {b.first_nonfinite['node']}" if b.first_nonfinite else "—"
        t.add_row(str(b.index), b.name, _f(b.max_abs), _f(b.rel_l2), _f(b.min_cosine, ".6f"),
                  _f(b.max_activation), _f(b.overflow_margin, ".3g"), nf,
                  "[red]breaks[/]" if b.breaks else "[green]ok[/]")
    out().print(t)
    out().print(f"[dim]{result.runtime}; tolerance rel L2 ≤ {result.tolerance['max_rel_l2']:g}, min cos ≥ "
                f"{result.tolerance['min_cosine']:g}; margin = 65504 / max |act| of fp16-stored tensors[/]",
                soft_wrap=True)
    if result.made:
        out().print(f"[yellow]note:[/] {result.made}")
    fix = result.fix
    if fix:
        before = fix["before"]["culprit"]
        out().print(f"before --fix: first breaking block {before['index']} {before['name']}, node {before['node']}")
        isl = fix["islands"]
        out().print(f"[green]✓[/] fixed: {len(isl['nodes'])} nodes kept in fp32 ({isl['rounds']} round(s)), "
                    f"registered {fix['registered']}: " + ", ".join(isl["nodes"]), soft_wrap=True)
    c = result.culprit
    if c is None:
        out().print("[green]✓[/] no block breaks")
        return
    out().print(f"[red]✗[/] first breaking block: {c['index']} {c['name']} — node {c['node']} ({c['op_type']}); "
                + "; ".join(c["reasons"]), soft_wrap=True)
    block = result.blocks[c["index"]]
    nt = Table(title=f"nodes of {block.name}", title_justify="left")
    for col in ("node", "op", "stored", "max |Δ|", "rel L2", "max |act|", "non-finite"):
        nt.add_column(col)
    for n in block.nodes:
        if n.breaks or n.name == c["node"]:
            nt.add_row(n.name, n.op_type, n.dtype, _f(n.max_abs), _f(n.rel_l2), _f(n.max_activation), str(n.nonfinite))
    out().print(nt)
    out().print(f"next: `tokcomp debug {result.bundle} --variant {result.variant} --fix` keeps the culprits in fp32",
                soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command()(debug)

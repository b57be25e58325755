"""`tokcomp lint`: will TensorRT's ONNX parser take this graph? (CPU only)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..console import out


def lint(
    path: Annotated[Path, typer.Argument(help="Bundle folder (lints its model.onnx) or a bare .onnx file.")],
    variant: Annotated[str, typer.Option("--variant", "-v",
                                         help="Bundle variant to lint: fp32, fp16, nhwc, fp16-nhwc, int8.")] = "fp32",
    opset_min: Annotated[Optional[int], typer.Option(help="Lowest opset to accept (default: 9, the parser's).")] = None,
    opset_max: Annotated[Optional[int], typer.Option(help="Highest opset to accept (default: 24, the parser's; "
                                                          "20 targets JetPack 6's TensorRT 10.3).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
):
    """Check an ONNX graph against TensorRT's ONNX parser: operator table, TopK/Resize/Scatter
    restrictions, data-dependent shapes, opset and dtypes. Exits 1 when TensorRT would not build it.

    [bold]Examples[/]

      tokcomp lint export/siglip_pool2

      tokcomp lint export/siglip_pool2 --variant fp16

      tokcomp lint my_encoder.onnx --opset-max 20
    """
    import json

    from ..core.lint import lint_path
    from ..core.lint_ops import PARSER_OPSET_RANGE

    lo = PARSER_OPSET_RANGE[0] if opset_min is None else opset_min
    hi = PARSER_OPSET_RANGE[1] if opset_max is None else opset_max
    report = lint_path(path, variant=variant, opset_range=(lo, hi))
    if json_out:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        print_report(report)
    report.raise_for_errors()


def print_report(report) -> None:
    """The issues as a table (errors first), then the one-line verdict."""
    from rich.table import Table

    if report.issues:
        t = Table(title=f"TensorRT lint: {report.source}", title_justify="left")
        for col in ("severity", "node", "op", "issue"):
            t.add_column(col, overflow="fold")
        for issue in report.errors + report.warnings:
            colour = "red" if issue.severity == "error" else "yellow"
            t.add_row(f"[{colour}]{issue.severity}[/]", issue.node, issue.op_type, issue.message)
        out().print(t)
    mark = "[green]✓[/]" if report else "[red]✗[/]"
    out().print(f"{mark} {report.summary()}", soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command()(lint)

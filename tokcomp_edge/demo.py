"""`make demo`: the main job on the built-in default encoder, end to end on this machine.

Exports siglip-b16-224 with pool:2 (checked: ONNX checker, shape inference, ONNX Runtime vs PyTorch
parity), validates the bundle (golden reference + fresh PyTorch runs, latency at batch 1 against PyTorch),
and prints a summary table and where the HTML report is.
"""

from __future__ import annotations

import sys
from pathlib import Path

DEFAULT_MODEL = "siglip-b16-224"
DEFAULT_SPEC = "pool:2"


def run(model: str = DEFAULT_MODEL, spec: str = DEFAULT_SPEC, out: Path | None = None) -> int:
    from rich.table import Table

    from .console import console, out as stdout
    from .errors import TokcompError
    from .export import ExportConfig, export_bundle
    from .validation.config import ValidateConfig
    from .validation.pipeline import validate

    out = out or Path("export") / f"{model}_{spec.replace(':', '')}"
    try:
        console().rule(f"[bold]1/2 export {model} --compress {spec}")
        exported = export_bundle(ExportConfig(model=model, compress=spec, out=out, force=True))
        console().rule("[bold]2/2 validate on ONNX Runtime (CPU) against PyTorch")
        result = validate(ValidateConfig(target=out, batches=(1,), warmup=3, iterations=10))
    except TokcompError as exc:
        console().print(f"[bold red]error:[/] {exc.one_line()}")
        return exc.exit_code

    comp = exported.manifest["compression"]
    runs = {r["runner"]: r for r in result.report["latency"]["runs"] if r["batch"] == 1}
    t = Table(title=f"tokcomp-edge demo: {model} + {spec}")
    t.add_column("what")
    t.add_column("value")
    t.add_row("tokens", f"{comp['tokens_in']} → {comp['tokens_out']}  ({comp['formula']})")
    t.add_row("weights", exported.manifest["encoder"]["weights"]["kind"]
              + f" (seed {exported.manifest['encoder']['seed']})")
    t.add_row("export parity (ORT CPU vs PyTorch)",
              f"max |Δ| {exported.parity.worst():.2e}  ({'passed' if exported.parity.passed else 'FAILED'})")
    target, torch_run = runs.get("target"), runs.get("pytorch")
    if target:
        t.add_row("ONNX Runtime CPU, batch 1", f"{target['p50_ms']:.1f} ms (p50)")
    if torch_run:
        t.add_row("PyTorch eager, batch 1", f"{torch_run['p50_ms']:.1f} ms (p50)")
    if target and torch_run:
        t.add_row("ONNX Runtime / PyTorch", f"{target['p50_ms'] / torch_run['p50_ms']:.2f}")
    t.add_row("validation", "[green]passed[/]" if result.passed else "[red]FAILED[/]: " + "; ".join(result.failures))
    t.add_row("bundle", str(out))
    stdout().print(t)
    stdout().print(f"HTML report: {result.report_paths.get('html', '')}", soft_wrap=True)
    stdout().print(f"Markdown:    {result.report_paths.get('md', '')}", soft_wrap=True)
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(run())

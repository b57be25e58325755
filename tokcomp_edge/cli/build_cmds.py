"""`tokcomp build | profiles`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..console import out


def build(
    bundle: Annotated[Path, typer.Argument(help="Bundle folder (from `tokcomp export`).")],
    profile: Annotated[str, typer.Option("--profile", "-p", help="Preset (`tokcomp profiles`) or a .toml file.")]
    = "fp16",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan and the equivalent trtexec command; "
                                                           "needs no TensorRT or GPU.")] = False,
    engines_dir: Annotated[Path, typer.Option("--engines-dir", help="Root of the engine folders.")] = Path("engines"),
    force: Annotated[bool, typer.Option(help="Rebuild an engine that already exists.")] = False,
):
    """Build a TensorRT engine from BUNDLE with a build profile (writes the .plan and its engine.json).

    [bold]Examples[/]

      tokcomp build export/siglip_pool2 --profile fp16

      tokcomp build export/siglip_pool2 --profile fp16 --dry-run

      tokcomp build export/siglip_pool2 --profile my_orin.toml
    """
    from ..engines.build import BuildConfig, build_engine

    result = build_engine(BuildConfig(bundle=bundle, profile=profile, engines_dir=engines_dir, dry_run=dry_run,
                                      force=force))
    print_plan(result.plan)
    if result.dry_run:
        for major, command in result.trtexec.items():
            out().print(f"\n[bold]trtexec equivalent (TensorRT {major}.x)[/]")
            out().print(command, markup=False, highlight=False, soft_wrap=True)
        out().print("\n[dim]dry run: nothing was built or written[/]")
    else:
        print_record(result.record)


def print_plan(plan) -> None:
    from rich.table import Table

    p = plan.profile
    inp = plan.inputs[0]
    t = Table(show_header=False, box=None, pad_edge=False)
    t.add_row("bundle", f"{plan.bundle_name} ({plan.bundle_path})")
    t.add_row("profile", f"{p.name} — {p.description or p.source}")
    pending = "" if plan.variant_ready else " [yellow](to create)[/]"
    t.add_row("variant", f"{plan.variant}: {plan.onnx_path}{pending}")
    if plan.fp32_islands:
        shown = ", ".join(plan.fp32_islands[:8]) + (f", … ({len(plan.fp32_islands)} in all)"
                                                    if len(plan.fp32_islands) > 8 else "")
        t.add_row("fp32 islands", shown)
    t.add_row("input", f"{inp.name} {inp.layout} {inp.dtype or '(dtype set by the variant)'}, engine format "
                       f"{inp.engine_format}")
    t.add_row("shapes", f"min {list(inp.shape_min)}  opt {list(inp.shape_opt)}  max {list(inp.shape_max)}")
    t.add_row("builder", f"opt level {p.builder_optimization_level}, workspace "
                         f"{p.to_dict()['workspace'] or 'TensorRT default'}, hardware compat "
                         f"{p.hardware_compatibility}, version compatible {p.version_compatible}")
    if p.dla_core is not None:
        t.add_row("DLA", f"core {p.dla_core}, GPU fallback {'on' if p.gpu_fallback else 'off'}")
    t.add_row("timing cache", str(plan.timing_cache_path) if plan.timing_cache_path else "off")
    t.add_row("engine", str(plan.engine_path))
    t.add_row("sidecar", f"{plan.sidecar_path}, {plan.layers_path.name}")
    out().print(t)
    for note in plan.notes:
        out().print(f"[yellow]note:[/] {note}", soft_wrap=True)


def print_record(record: dict) -> None:
    layers = record["layers"]
    prec = ", ".join(f"{k} {v}" for k, v in layers["precision"].items())
    place = layers["placement"]
    out().print(f"[green]built[/] {record['engine']['file']} ({record['engine']['bytes']:,} bytes) in "
                f"{record['build']['seconds']:.1f} s on {record['gpu']['name']} with TensorRT "
                f"{record['tensorrt']['version']}")
    skipped = sum(layers.get("excluded", {}).values())
    out().print(f"layers: {layers['total']}, {layers.get('compute', layers['total'])} compute ({prec}; {skipped} "
                f"reformat/cast/shape/copy not counted); placement predicted before the build: DLA {place['dla']}, "
                f"GPU {place['gpu']}")
    measured = layers.get("placement_measured") or {}
    if measured.get("kind") == "measured":
        out().print(f"placement after the build (engine inspector): DLA {measured['dla']}, GPU {measured['gpu']}")
    elif record["profile"].get("dla_core") is not None:
        out().print(f"[yellow]placement after the build unknown:[/] {measured.get('reason', 'not recorded')}")


def profiles():
    """List the built-in build profiles (use one with `tokcomp build --profile NAME`).

    [bold]Example[/]

      tokcomp profiles
    """
    from rich.table import Table

    from ..engines.profile import format_size, list_presets

    t = Table(title="Build profiles", title_justify="left")
    for col in ("name", "precision", "input", "engine format", "batch min/opt/max", "workspace", "DLA",
                "description"):
        t.add_column(col)
    for p in list_presets():
        b = p.batch
        batch = "/".join("bundle" if v is None else str(v) for v in (b.min, b.opt, b.max))
        if b.min is None and b.opt is None and b.max is None:
            batch = "bundle range, opt = min"
        dla = "—" if p.dla_core is None else f"core {p.dla_core}" + (" + GPU fallback" if p.gpu_fallback else "")
        t.add_row(p.name, p.precision, p.input, p.engine_input_format, batch,
                  format_size(p.workspace) if p.workspace else "default", dla, p.description)
    out().print(t)
    out().print("[dim]A profile file (TOML) takes the same fields: see the README, section 'Build profiles'.[/]")


def register(app: typer.Typer) -> None:
    app.command()(build)
    app.command()(profiles)

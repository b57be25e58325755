"""`tokcomp calibrate`: INT8 calibration → the bundle's checked `int8` variant (explicit Q/DQ ONNX, CPU only)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..console import out

Multi = Optional[list[str]]


def calibrate(
    bundle: Annotated[Path, typer.Argument(help="Bundle folder (from `tokcomp export`).")],
    images: Annotated[Optional[Path], typer.Option(help="Folder of representative JPEG/PNG images, preprocessed "
                                                        "per the manifest.")] = None,
    method: Annotated[str, typer.Option(help="entropy (KL thresholds, clips rare outliers) | max (full range).")]
    = "entropy",
    max_images: Annotated[int, typer.Option(help="Use at most this many images (first by name).")] = 64,
    batch: Annotated[int, typer.Option(help="Images per calibration run (speed/memory only).")] = 8,
    synthetic: Annotated[bool, typer.Option("--synthetic", help="Calibrate on seeded synthetic images instead of "
                                                                "--images (trials only; recorded in the manifest).")]
    = False,
    seed: Annotated[int, typer.Option(help="Seed of the --synthetic images.")] = 0,
    high_precision: Annotated[str, typer.Option(help="dtype of the ops left unquantized: fp16 | fp32.")] = "fp16",
    max_rel_l2: Annotated[Multi, typer.Option(help="[OUTPUT=]VALUE largest relative L2 error (default 0.1).")] = None,
    min_cosine: Annotated[Multi, typer.Option(help="[OUTPUT=]VALUE smallest per-token cosine (default 0.95).")]
    = None,
    min_jaccard: Annotated[Multi, typer.Option(help="[OUTPUT=]VALUE smallest mean Jaccard of kept tokens (prune) "
                                                    "(default 0.7).")] = None,
    force: Annotated[bool, typer.Option(help="Recalibrate a bundle that has an int8 variant (replaced only after "
                                             "the new one passes).")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
):
    """Calibrate BUNDLE for INT8 on representative images and register its checked `int8` variant.

    ModelOpt places explicit Q/DQ nodes with ranges measured on your images (CPU only); the result is checked against the golden reference and recorded as model.int8.onnx, which `tokcomp build --profile int8` builds.

    Exit codes: 0 registered; 1 quantization or check failed (nothing registered); 2 bad input (no images, changed bundle, existing variant without --force); 3 ModelOpt missing.

    [bold]Examples[/]

      tokcomp calibrate export/siglip_pool2 --images calib_photos/

      tokcomp calibrate export/siglip_pool2 --images calib_photos/ --method max --max-images 256 --force

      tokcomp calibrate export/tiny-clip_pool2 --synthetic
    """
    from ..calibration.int8 import CalibrateConfig
    from ..calibration.int8 import calibrate as run
    from ..core.tolerance import parse_override

    overrides = tuple(parse_override(flag, v) for flag, values in
                      (("max-rel-l2", max_rel_l2), ("min-cosine", min_cosine), ("min-jaccard", min_jaccard))
                      for v in (values or []))
    result = run(CalibrateConfig(bundle=bundle, images=images, method=method, max_images=max_images, batch=batch,
                                 synthetic=synthetic, seed=seed, high_precision=high_precision,
                                 tolerance_overrides=overrides, force=force, quiet=quiet))
    print_result(result)


def print_result(result) -> None:
    """The registered variant, how it was calibrated, and its check figures against the tolerances."""
    from rich.table import Table

    c, qz, check = result.calibration, result.quantization, result.check
    where = ("[yellow]synthetic images (not representative)[/]" if c["folder"] == "synthetic"
             else f"images from {c['folder']}")
    t = Table(show_header=False, box=None, pad_edge=False)
    t.add_row("variant", f"int8: {result.path}")
    t.add_row("calibration", f"{c['images']} {where}, method {c['method']}, batch {c['batch']}")
    t.add_row("graph", f"{qz['quantize_linear']} QuantizeLinear / {qz['dequantize_linear']} DequantizeLinear, "
                       f"{qz['high_precision']} elsewhere, opset {qz['opset']}")
    t.add_row("check", f"{check.metrics['against']}, batches {', '.join(map(str, check.metrics['batches']))}")
    _output_rows(t, check.metrics["outputs"], check.metrics["tolerance"])
    held = check.metrics.get("held_out")
    if held:
        t.add_row("held back", f"{held['images']} calibration images not used for the ranges, vs {held['against']}")
        _output_rows(t, held["outputs"], check.metrics["tolerance"])
    else:
        why = "synthetic images" if c["folder"] == "synthetic" else "fewer than 5 images"
        t.add_row("held back", f"none ({why}): checked on the golden reference only")
    if result.refreshed:
        t.add_row("refreshed", ", ".join(result.refreshed) + " (wrapped the previous int8 model)")
    out().print(t)
    out().print(f"[green]✓[/] int8 variant registered ({result.times.total():.1f} s); next: "
                f"`tokcomp build {result.path.parent} --profile int8`", soft_wrap=True)


def _output_rows(t, outputs: dict, tolerance: dict) -> None:
    """One row per output: its figures beside the thresholds they were judged against."""
    for name, s in outputs.items():
        tol = tolerance.get(name, {})
        if s["kind"] == "indices":
            t.add_row(f"  {name}", f"mean Jaccard {_num(s.get('jaccard_mean'))} ({_bound('≥', tol.get('min_jaccard'))})")
        else:
            t.add_row(f"  {name}", f"rel L2 {_num(s.get('rel_l2_err'))} ({_bound('≤', tol.get('max_rel_l2'))}), "
                                   f"min token cosine {_num(s.get('cosine_min'))} ({_bound('≥', tol.get('min_cosine'))})")


def _num(x) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def _bound(op: str, x) -> str:
    return "not judged" if x is None else f"{op} {x:g}"


def register(app: typer.Typer) -> None:
    app.command()(calibrate)

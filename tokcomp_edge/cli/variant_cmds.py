"""`tokcomp variant`: add precision / input-layout variants to an existing bundle, checked and atomic."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..console import out


def variant(
    bundle: Annotated[Path, typer.Argument(help="Bundle folder (from `tokcomp export`).")],
    keys: Annotated[list[str], typer.Argument(help="Variants to add: fp16, nhwc, fp16-nhwc, int8-nhwc.")],
    force: Annotated[bool, typer.Option("--force", help="Remake a variant that is already current.")] = False,
):
    """Add variants to a bundle: each is made, checked on ONNX Runtime CPU against the golden reference
    (nhwc: against the variant it wraps, on the same frames) and registered in one atomic step; a failing
    one leaves the bundle as it was (exit 1). int8 itself comes from `tokcomp calibrate`.

    [bold]Examples[/]

      tokcomp variant export/siglip_pool2 fp16

      tokcomp variant export/siglip_pool2 nhwc fp16-nhwc
    """
    from rich.table import Table

    from ..core.bundle import Bundle
    from ..export.variants import VariantOptions, create_variants, parse_variant_key
    from ..extras import require_extra

    wanted = [k.strip() for key in keys for k in key.split(",") if k.strip()]
    for key in wanted:
        parse_variant_key(key)  # exit 2 on an unknown key, before any work
    modules = ("onnx", "onnxruntime") + (("modelopt",) if any(k.startswith("fp16") for k in wanted) else ())
    require_extra("export", f"tokcomp variant {' '.join(wanted)}", modules)
    b = Bundle.load(bundle)  # verifies every recorded file first: a changed bundle is refused (exit 2)
    made = create_variants(b, wanted, force=force, options=VariantOptions())
    t = Table(title=f"variants of {b.path}", title_justify="left")
    for col in ("variant", "file", "check"):
        t.add_column(col)
    for key, entry in b.variants().items():
        check = entry.get("check") or {}
        verdict = "—" if key == "fp32" else ("passed" if check.get("passed") else "not checked")
        t.add_row(key + (" (new)" if key in made else ""), entry["file"], verdict)
    out().print(t)


def register(app: typer.Typer) -> None:
    app.command()(variant)

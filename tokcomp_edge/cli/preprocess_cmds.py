"""`tokcomp preprocess`: write the encoder input a bundle expects for given images (.npy)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..console import out


def preprocess(
    bundle: Annotated[Path, typer.Argument(help="Bundle folder (its manifest says how images are framed).")],
    images: Annotated[list[Path], typer.Argument(help="Image files and/or folders of images.")],
    to: Annotated[Path, typer.Option("--out", "-o", help="The .npy file to write.")] = Path("pixels.npy"),
    nhwc: Annotated[bool, typer.Option("--nhwc", help="Write uint8 [N,H,W,3] RGB frames (what the nhwc variants "
                                                      "take) instead of float32 [N,3,H,W] pixel_values.")] = False,
    force: Annotated[bool, typer.Option(help="Replace an existing --out file.")] = False,
):
    """Preprocess IMAGES exactly as the bundle's model expects and write them as one .npy array.

    The framing (resize rule, interpolation, crop) is the bundle's recorded policy — the one `validate --images` and `calibrate` use — so you can compare it with your own camera pipeline.

    [bold]Examples[/]

      tokcomp preprocess export/siglip_pool2 photos/cat.jpg photos/street.png --out pixels.npy

      tokcomp preprocess export/siglip_pool2 photos/ --nhwc --out frames.npy
    """
    from rich.markup import escape

    from ..calibration.preprocess import PreprocessConfig
    from ..calibration.preprocess import preprocess as run
    from ..console import console

    result = run(PreprocessConfig(bundle=bundle, images=tuple(images), out=to, nhwc=nhwc, force=force))
    for line in result.warnings:
        console().print(f"[bold yellow]warning:[/] {escape(line)}", soft_wrap=True)
    c = out()
    c.print(f"preprocess  {escape(result.policy.describe())}", soft_wrap=True)
    c.print(f"images      {len(result.files)} used"
            + (f", {len(result.skipped)} skipped" if result.skipped else ""), soft_wrap=True)
    c.print(f"wrote       {escape(str(result.path))}  {result.dtype} {list(result.shape)}", soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command()(preprocess)

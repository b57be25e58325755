"""`tokcomp encode`: images → the embeddings and prompt layout the VLM's LLM needs (the device runtime)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..console import out


def encode(
    bundle: Annotated[Path, typer.Argument(help="Bundle folder of a VLM export.")],
    images: Annotated[list[Path], typer.Argument(help="Image files, encoded in this order (image_0, image_1, …).")],
    to: Annotated[Path, typer.Option("--out", "-o", help="Folder to write embeddings.npz and layout.json into.")],
    engine: Annotated[Optional[Path], typer.Option(help="A TensorRT .plan built from the bundle "
                                                        "(`tokcomp build`); without it ONNX Runtime runs.")] = None,
    backend: Annotated[str, typer.Option(help="onnxruntime or tensorrt (tensorrt needs --engine).")] = "onnxruntime",
    variant: Annotated[Optional[str], typer.Option(help="Bundle variant ONNX Runtime runs (fp16, int8, nhwc…) "
                                                        "[default: fp32; with --engine: the engine's].")] = None,
    pad_static: Annotated[bool, typer.Option("--pad-static", help="Pad a static-batch engine's last call "
                                                                  "instead of refusing it.")] = False,
    force: Annotated[bool, typer.Option(help="Replace an existing --out folder.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print layout.json's content (and the paths) as JSON.")] = False,
):
    """Encode IMAGES with the bundle as the VLM would: tiles, engine batches, the family's packing, the prompt layout.

    Writes OUT/embeddings.npz (image_0, image_1, … : [tokens, llm_hidden] float32, in argument order) and OUT/layout.json (tiles, tokens, placeholder text and ids per image, timings), both or neither.

    [bold]Examples[/]

      tokcomp encode export/internvl_pool2 shelf.jpg scan.png --out encoded

      tokcomp encode export/internvl_pool2 shelf.jpg --engine engines/internvl_pool2/fp16.plan --out encoded --json
    """
    from rich.markup import escape

    from ..runtime.encode_files import EncodeConfig, encode_files

    result = encode_files(EncodeConfig(bundle=bundle, images=tuple(images), out=to, engine=engine, backend=backend,
                                       variant=variant, force=force, pad_static=pad_static))
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    c = out()
    doc = result.document
    c.print(f"ran         {escape(doc['backend'])}", soft_wrap=True)
    for item in doc["images"]:
        lay = item["layout"]
        c.print(f"{item['key']:<11} {escape(item['file'])}: {lay.get('tokens')} tokens × {item['shape'][1]}, "
                f"{lay.get('tiles')} tile(s) {lay.get('rows')}x{lay.get('cols')}"
                + (" + thumbnail" if lay.get("thumbnail") else ""), soft_wrap=True)
    t = doc["timings"]
    c.print(f"timings     preprocess {t['preprocess_ms']:.1f} ms, inference {t['inference_ms']:.1f} ms "
            f"({t['calls']} call(s)), postprocess {t['postprocess_ms']:.1f} ms, total {t['total_ms']:.1f} ms",
            soft_wrap=True)
    c.print(f"wrote       {escape(str(Path(result.path) / 'embeddings.npz'))}, layout.json", soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command()(encode)

"""`tokcomp export | inspect | methods | models`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..console import out as console

ModelArg = Annotated[str, typer.Argument(help="Tower or VLM preset (`tokcomp models`), timm:<name>, hf:<dir> (a tower "
                                              "or a whole VLM folder) or py:<module>:<factory>.")]


def export(
    model: ModelArg,
    compress: Annotated[str, typer.Option("--compress", "-c", help="Compression spec (`tokcomp methods`).")] = "none",
    out: Annotated[Optional[Path], typer.Option(help="Bundle folder [default: export/<model>_<spec>/].")] = None,
    image_size: Annotated[Optional[str], typer.Option(help="Input size H or HxW: a tower's square side (a multiple "
                                                      "of its patch), or a Qwen-VL / LFM2-VL tile.")] = None,
    weights: Annotated[Optional[Path], typer.Option(help=".safetensors or torch checkpoint (loaded weights_only).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the random init (without --weights) and of the golden inputs.")] = 0,
    layer: Annotated[Optional[int], typer.Option(help="Hidden layer to read: -1 last, -2 penultimate (LLaVA), … "
                                                 "[default: -1; a VLM's own feature layer].")] = None,
    prefix: Annotated[Optional[str], typer.Option(help="keep | drop the CLS/register tokens [default: per family].")] = None,
    batch_min: Annotated[int, typer.Option(help="Smallest batch of the dynamic batch axis.")] = 1,
    batch_max: Annotated[Optional[int], typer.Option(help="Largest batch of the dynamic batch axis [default: "
                                                     "a tiled VLM's tiles per request, else 8].")] = None,
    opset: Annotated[int, typer.Option(help="ONNX opset, 17–23.")] = 20,
    variants: Annotated[str, typer.Option(help="Extra variants to add, comma-separated: fp16, nhwc, fp16-nhwc.")] = "",
    no_cleanup: Annotated[bool, typer.Option("--no-cleanup", help="Skip the onnxslim clean-up pass.")] = False,
    force: Annotated[bool, typer.Option(help="Replace an existing bundle (after the new one passed its checks).")] = False,
    no_projector: Annotated[bool, typer.Option("--no-projector", help="VLMs: stop where the projector module "
                                               "starts (features as it sees them).")] = False,
    video: Annotated[bool, typer.Option("--video", help="LLaVA-OneVision: the per-frame video path (bilinear "
                                        "pooling to ⌈h/2⌉×⌈w/2⌉ after the projector).")] = False,
):
    """Export MODEL with a token compressor to a checked ONNX bundle.

    [bold]Examples[/]

      tokcomp export siglip-b16-224 --compress pool:2 --out export/siglip_pool2

      tokcomp export clip-l14-336 --layer -2 --compress unshuffle:2 --weights clip.safetensors

      tokcomp export tiny-clip --compress prune:32:cls-attn

      tokcomp export siglip-b16-224 --compress tome:13                  (ToMe in every block: 196 → 40)

      tokcomp export clip-l14-336 --layer -2 --compress visionzip:53:10 --prefix keep   (CLS + 53 + 10 = 64)

      tokcomp export hf:checkpoints/llava-1.5-7b-hf --compress pool:2        (a VLM folder: tower + projector)

      tokcomp export internvl3-1b --no-projector
    """
    from ..export import ExportConfig, export_bundle
    from ..export.config import parse_image_size

    cfg = ExportConfig(model=model, compress=compress, out=out, image_size=parse_image_size(image_size), weights=weights, seed=seed,
                       layer=layer, prefix=prefix, batch_min=batch_min, batch_max=batch_max, opset=opset,
                       force=force, cleanup=not no_cleanup, projector=not no_projector, video=video,
                       variants=tuple(v.strip() for v in variants.split(",") if v.strip()))
    result = export_bundle(cfg)
    print_summary(result.manifest, result.parity)


def print_summary(manifest: dict, parity=None) -> None:
    from rich.table import Table

    comp, enc = manifest["compression"], manifest["encoder"]
    t = Table(show_header=False, box=None, pad_edge=False)
    t.add_row("bundle", manifest["name"])
    t.add_row("encoder", f"{enc['name']} ({enc['family']}, {enc['image_size'][0]}x{enc['image_size'][1]}, "
                         f"patch {enc['patch_size']}, layer {enc['layer']})")
    t.add_row("weights", _weights_text(enc["weights"]))
    t.add_row("compression", f"{comp['spec']}  prefix {comp['prefix']}")
    vlm = manifest.get("vlm")
    if vlm:
        t.add_row("vlm", f"{vlm['family']} ({vlm['transformers_class']}), feature layer {vlm['feature_layer']}, "
                         f"select {vlm['select']}, projector {'included' if vlm['projector'] else 'excluded'}")
        t.add_row("tokens", f"{vlm['arithmetic']}  (the VLM itself: {vlm['native_tokens_per_tile']} per tile)")
        t.add_row("preprocess", manifest["preprocess"].get("policy_source", ""))
        tile, batch = vlm.get("tile", {}), manifest["onnx"]["batch"]
        if "tiles_per_request" in tile:
            t.add_row("batch", f"{batch['min']}–{batch['max']}; one image request: up to {tile['tiles_per_request']} "
                               f"tile(s) ({tile['tiles_rule']})")
        llm = vlm["llm"]
        t.add_row("llm", f"{llm['model_type']}: d {llm['hidden']}, {llm['layers']} layers, {llm['heads']} heads "
                         f"({llm['kv_heads']} kv), mlp {llm['mlp']}{' gated' if llm['gated'] else ''}")
    else:
        t.add_row("tokens", f"{comp['tokens_in']} → {comp['tokens_out']}  ({comp['formula']}), "
                            f"dim {comp['dim_in']} → {comp['dim_out']}")
    if parity is not None:
        worst = max(v["max_abs"] for res in parity.per_batch.values() for v in res.values() if "max_abs" in v)
        t.add_row("parity", f"{'passed' if parity.passed else 'FAILED'}: max |ONNX − PyTorch| {worst:.2e} "
                            f"({parity.runtime}, batches {', '.join(parity.per_batch)})")
    console().print(t)


def _weights_text(w: dict) -> str:
    if w.get("kind") == "random":
        return f"[yellow]random(seed={w.get('seed')}) — not trained weights[/]"
    return f"{w.get('path')} (sha256 {str(w.get('sha256'))[:12]}…)"


def inspect(bundle: Annotated[Path, typer.Argument(help="Bundle folder.")],
            json_out: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False):
    """Show a bundle: tokens in/out, I/O, files and their checks, weights origin (exit 2 if a file changed).

    [bold]Example[/]

      tokcomp inspect export/siglip_pool2
    """
    import json

    from rich.table import Table

    from ..core.bundle import Bundle
    from ..errors import BundleError

    b = Bundle.load(bundle, verify=False)
    # What is recorded is shown either way; a file that changed since export is exit 2, as validate and
    # build refuse it, and its one error line comes last.
    changed: BundleError | None = None
    try:
        b.verify()
        integrity = "[green]all files match their sha256[/]"
    except BundleError as exc:
        changed, integrity = exc, f"[red]{exc.message}[/]"
    if json_out:
        typer.echo(json.dumps(b.manifest, indent=2))
        if changed is not None:
            raise changed
        return
    print_summary(b.manifest)
    m = b.manifest
    from ..image_policy import PreprocessPolicy

    console().print(f"preprocess   {PreprocessPolicy.from_manifest(m).describe()}", soft_wrap=True)
    io = Table(title="ONNX I/O", title_justify="left")
    for col in ("variant", "direction", "name", "shape", "dtype"):
        io.add_column(col)
    for key, v in b.variants().items():
        for direction in ("inputs", "outputs"):
            for t in v.get(direction, []):
                io.add_row(key, direction[:-1], t["name"], str(t["shape"]), t["dtype"])
    console().print(io)
    files = Table(title="Files", title_justify="left")
    for col in ("file", "bytes", "sha256"):
        files.add_column(col)
    for name, e in m["files"].items():
        files.add_row(name, f"{e['bytes']:,}", e["sha256"][:16] + "…")
    console().print(files)
    parity = m.get("parity", {})
    console().print(f"opset {m['onnx']['opset']}, batch {m['onnx']['batch']['min']}–{m['onnx']['batch']['max']}, "
                    f"clean-up {m['onnx']['cleanup']}; export parity "
                    f"{'passed' if parity.get('passed') else 'FAILED'} ({parity.get('runtime')}); {integrity}")
    if changed is not None:
        raise changed


def methods():
    """List the compression methods, their parameters and token arithmetic.

    [bold]Example[/]

      tokcomp methods
    """
    from rich.table import Table

    from ..compression.spec import METHODS

    t = Table(title="Compression methods (h×w = patch grid, C = channels; +P prefix tokens with --prefix keep)")
    t.add_column("spec", no_wrap=True)
    for col in ("tokens out", "dim out", "what it does"):
        t.add_column(col, overflow="fold")
    for info in METHODS.values():
        t.add_row(info["syntax"], info["tokens"], info["dim"], info["what"])
    console().print(t)
    console().print(
        "With a VLM (hf:<VLM folder> or a VLM preset) the spec is extra compression on the selected patch features, "
        "before the VLM's own transform and projector; `tokcomp inspect` shows the whole chain, e.g. "
        "576 → pool:2 → 144 → mlp → 144 × 4096. Specs that reproduce a VLM's own reduction: pool:4 on 64x64 = "
        "Gemma 3's projector pooling; bilinear:14x14 on 27x27 = LLaVA-OneVision's video pooling; "
        "unshuffle:2:internvl = InternVL's pixel shuffle (and Idefics3/SmolVLM's, same order).", soft_wrap=True)


def models():
    """List the built-in encoder presets.

    [bold]Example[/]

      tokcomp models
    """
    from rich.table import Table

    from ..encoders import list_presets

    t = Table(title="Encoder presets (also timm:<name>, hf:<dir>, py:<module>:<factory>)")
    t.add_column("name", no_wrap=True)
    for col in ("family", "image", "patch", "grid", "prefix", "width", "layers", "default prefix"):
        t.add_column(col)
    for s in list_presets():
        t.add_row(s.name, s.family, f"{s.image_size[0]}x{s.image_size[1]}", str(s.patch_size),
                  f"{s.grid[0]}x{s.grid[1]}", str(s.prefix_tokens), str(s.hidden_size), str(s.num_layers),
                  s.default_prefix)
    console().print(t)
    _vlm_presets_table()


def _vlm_presets_table() -> None:
    from rich.table import Table

    from ..compression.spec import parse_spec
    from ..vlm import VLM_PRESETS, plan_vlm, resolve_vlm

    v = Table(title="VLM vision-path presets (tower + the VLM's transform + projector; also hf:<VLM folder>)")
    v.add_column("name", no_wrap=True)
    for col in ("family", "tower", "tile", "feature layer", "tokens per tile", "llm", "checkpoint"):
        v.add_column(col)
    try:
        specs = {name: resolve_vlm(name) for name in VLM_PRESETS}
    except ImportError as exc:  # the VLM configs are completed by transformers' config classes
        console().print(f"VLM presets: not listed here ({exc.name} is not installed)")
        return
    for name, s in specs.items():
        plan = plan_vlm(s, parse_spec("none"), None)
        h, w = s.tower.image_size
        # Qwen3-VL's DeepStack features are further outputs of the same shape, each handed to an LLM layer.
        deep = f" +{len(plan.extra_outputs)} DeepStack" if plan.extra_outputs else ""
        v.add_row(name, s.family.model_type, f"{s.tower.family} {s.tower.hidden_size}×{s.tower.num_layers}",
                  str(h) if h == w else f"{h}x{w}", str(s.feature_layer), f"{plan.tokens_out} × {plan.dim_out}{deep}",
                  f"{s.llm.model_type} {s.llm.hidden}", VLM_PRESETS[name].source or "tiny (tests)")
    console().print(v)


def register(app: typer.Typer) -> None:
    app.command()(export)
    app.command()(inspect)
    app.command()(methods)
    app.command()(models)

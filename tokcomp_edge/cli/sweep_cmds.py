"""`tokcomp sweep`: measure compressions on the user's images with the VLM's own LLM and pick one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..console import out as console


def sweep(
    model: Annotated[str, typer.Argument(help="hf:<folder> of a whole VLM checkpoint (LLM weights and tokenizer "
                                              "included; LLaVA so far).")],
    images: Annotated[Path, typer.Option(help="Folder of JPEG/PNG images (your own, as deployed).")],
    prompts: Annotated[Optional[Path], typer.Option(help="Text file, one prompt a line [default: a small generic set, "
                                                        "docs/sweep.md].")] = None,
    pairs: Annotated[Optional[Path], typer.Option(help="Instead of every image × every prompt: a file of "
                                                       "IMAGE<tab>PROMPT lines (IMAGE in the --images folder).")] = None,
    tokens: Annotated[Optional[int], typer.Option(help="Pick the best top1 with at most N tokens per tile.")] = None,
    max_ms: Annotated[Optional[float], typer.Option(help="Pick the best top1 within X ms of vision-path latency.")] = None,
    min_agreement: Annotated[Optional[float], typer.Option(help="Pick the fewest tokens whose top1 95 % lower bound "
                                                                "is at least A.")] = None,
    candidates: Annotated[Optional[str], typer.Option(help="Comma-separated specs, e.g. \"pool:2,prune:144:cls-attn\" "
                                                          "(`none` is always added) [default: the family's grid].")] = None,
    answer_tokens: Annotated[int, typer.Option(help="Length K of the reference answer (greedy; eos ends it).")] = 24,
    max_pairs: Annotated[Optional[int], typer.Option(help="Use at most N (image, prompt) pairs, image-major.")] = None,
    llm_dtype: Annotated[str, typer.Option(help="The LLM's dtype: float32 | bfloat16 | float16 (bfloat16 halves a "
                                                "7B LLM's memory).")] = "float32",
    backend: Annotated[str, typer.Option("--backend", "--latency", help="What the vision-path latency is measured "
                                         "on: onnxruntime (CPU) | tensorrt (an engine per candidate; needs TensorRT "
                                         "and a GPU) | pytorch | none.")] = "onnxruntime",
    profile: Annotated[Optional[str], typer.Option("--profile", "-p", help="With --backend tensorrt: the build "
                                                   "profile of the engines: a preset of `tokcomp profiles` or "
                                                   "a .toml file; fp16 when not given.")] = None,
    latency_runs: Annotated[int, typer.Option(help="Timed calls per candidate (interleaved).")] = 15,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap intervals.")] = 0,
    out: Annotated[Optional[Path], typer.Option(help="Folder for sweep.json + sweep.html [default: "
                                                     "export/<model>_sweep].")] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing --out folder.")] = False,
    export: Annotated[bool, typer.Option("--export", help="Export the pick with the normal pipeline into "
                                         "<out>/bundle and validate it (with --backend tensorrt: its engine, "
                                         "built into <out>/engines).")] = False,
    variants: Annotated[str, typer.Option(help="With --export: extra variants of the bundle, comma-separated: "
                                               "fp16, nhwc, fp16-nhwc (as `tokcomp export --variants`).")] = "",
    answers: Annotated[bool, typer.Option("--answers", help="Also record every candidate's own greedy answer per "
                                          "pair (token ids; for task-accuracy benchmarks).")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print sweep.json to stdout instead of the table.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
):
    """Measure candidate compressions against the uncompressed VLM on your images and prompts; pick one.

    Exit codes: 0 a pick (or no constraint given); 1 no candidate meets the constraint (the closest is named, the files are written); 2 bad input; 3 a runtime is missing.

    [bold]Examples[/]

      tokcomp sweep hf:checkpoints/llava-1.5-7b-hf --images photos/ --prompts questions.txt --tokens 144

      tokcomp sweep hf:checkpoints/llava-1.5-7b-hf --images photos/ --candidates "pool:2,prune:144:cls-attn,visionzip:54:10" --json

      tokcomp sweep hf:checkpoints/llava-1.5-7b-hf --images photos/ --min-agreement 0.95 --export

      tokcomp sweep hf:checkpoints/llava-1.5-7b-hf --images photos/ --backend tensorrt --max-ms 8 --export
    """
    import json

    from ..errors import CheckFailed
    from ..sweep import SweepConfig, run_sweep

    cfg = SweepConfig(model=model, images=images, prompts=prompts, pairs=pairs, candidates=candidates,
                      tokens=tokens, max_ms=max_ms, min_agreement=min_agreement, answer_tokens=answer_tokens, max_pairs=max_pairs,
                      out=out, force=force, llm_dtype=llm_dtype, latency=backend, profile=profile,
                      latency_runs=latency_runs, seed=seed, export=export,
                      variants=tuple(v.strip() for v in variants.split(",") if v.strip()), answers=answers,
                      quiet=quiet or json_out)
    result = run_sweep(cfg)
    if json_out:
        typer.echo(json.dumps(result.to_dict(), indent=1, allow_nan=False))
    else:
        print_table(result.to_dict())
    v = result.validation
    if v and not v["passed"]:
        raise CheckFailed(f"the exported pick {result.pick} failed validation: {v['failures'][0]}",
                          f"see {result.out}/{v['reports'].get('html', '')}")
    if result.infeasible:
        raise CheckFailed(f"{result.infeasible.rstrip('.')}; the measured table is in {result.out}/sweep.html")


def print_table(d: dict) -> None:
    from rich.table import Table

    from ..sweep.report import TABLE_HEAD, table_rows

    t = Table(*TABLE_HEAD, title=f"sweep {d['model']['id']} — {d['timing']['candidates']} candidates × "
                                  f"{d['timing']['pairs']} pairs")
    for r in table_rows(d):
        t.add_row(*map(str, r))
    console().print(t)
    for r in d["refused"]:
        console().print(f"  [dim]refused {r['spec']}: {r['refused']}[/]")
    for w in d.get("warnings", []):
        console().print(f"  [yellow]![/] {w}")
    if d["pick"]:
        console().print(f"[bold]pick[/] {d['pick']}  ({d['constraint']['rule']})")
    console().print(f"  [dim]{d['out']}/sweep.json, sweep.html"
                    + (f"; bundle {d['bundle']}" if d.get("bundle") else "")
                    + (f"; engine {d['engine']}" if d.get("engine") else "") + "[/]")
    v = d.get("validation")
    if v:
        console().print(f"  validation of the export: {'passed' if v['passed'] else 'FAILED'} "
                        f"[dim]({d['out']}/{v['reports'].get('html', '')})[/]")


def register(app: typer.Typer) -> None:
    app.command()(sweep)

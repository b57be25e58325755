"""`tokcomp validate | report`: prove a bundle or engine matches its reference, and re-render reports."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..console import out as console

Multi = Optional[list[str]]


def validate(
    target: Annotated[Path, typer.Argument(help="Bundle folder (or its manifest.json / a variant .onnx), or an engine .plan.")],
    bundle: Annotated[Optional[Path], typer.Option(help="The bundle an engine was built from [default: from its engine.json].")] = None,
    variant: Annotated[Optional[str], typer.Option(help="Bundle variant: fp32, fp16, nhwc, … [default: fp32, or the engine's].")] = None,
    device: Annotated[str, typer.Option(help="ONNX Runtime device: cpu | cuda | trt-ep (the report says what really ran).")] = "cpu",
    batch: Annotated[Optional[str], typer.Option(help="Batch sizes to time, e.g. 1,8 [default: 1 and the largest reference batch].")] = None,
    warmup: Annotated[int, typer.Option(help="Untimed calls per batch size.")] = 3,
    iterations: Annotated[int, typer.Option(help="Timed calls per batch size (0 skips latency).")] = 20,
    images: Annotated[Optional[Path], typer.Option(help="Folder of JPEG/PNG images, preprocessed per the manifest.")] = None,
    max_images: Annotated[int, typer.Option(help="Use at most this many images (first by name).")] = 16,
    extra_inputs: Annotated[int, typer.Option(help="Seeded synthetic images compared against fresh PyTorch runs.")] = 4,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic images.")] = 0,
    torch: Annotated[str, typer.Option("--torch", help="PyTorch reference: auto | off | require.")] = "auto",
    torch_device: Annotated[str, typer.Option(help="PyTorch device: auto | cpu | cuda.")] = "auto",
    atol: Annotated[Multi, typer.Option(help="[OUTPUT=]VALUE absolute part of |Δ| ≤ atol + rtol·|ref| ('none' disables).")] = None,
    rtol: Annotated[Multi, typer.Option(help="[OUTPUT=]VALUE relative part of the elementwise bound.")] = None,
    max_rel_l2: Annotated[Multi, typer.Option(help="[OUTPUT=]VALUE largest relative L2 error.")] = None,
    min_cosine: Annotated[Multi, typer.Option(help="[OUTPUT=]VALUE smallest per-token cosine.")] = None,
    min_jaccard: Annotated[Multi, typer.Option(help="[OUTPUT=]VALUE smallest mean Jaccard of kept tokens (prune).")] = None,
    min_image_jaccard: Annotated[Multi, typer.Option(help="[OUTPUT=]VALUE smallest Jaccard of any one image's kept set or merge map.")] = None,
    count_atol: Annotated[Multi, typer.Option(help="[OUTPUT=]VALUE largest |Δ| of ToMe's sizes (patches per merged token).")] = None,
    score_atol: Annotated[Multi, typer.Option(help="[OUTPUT=]VALUE largest gap between two PyTorch ToMe match scores that counts as a near-tie (with the PyTorch reference, a merge map equal to its replay with that decision flipped passes).")] = None,
    llm: Annotated[Multi, typer.Option(help="LLM preset for token economics (repeatable): qwen2-0.5b, qwen2-1.5b, qwen2-7b, vicuna-7b, vicuna-13b [default: a VLM bundle's own LLM, else qwen2-0.5b and vicuna-7b].")] = None,
    llm_hidden: Annotated[Optional[int], typer.Option(help="Custom LLM width (with --llm-layers).")] = None,
    llm_layers: Annotated[Optional[int], typer.Option(help="Custom LLM decoder blocks.")] = None,
    llm_mlp: Annotated[Optional[int], typer.Option(help="Custom LLM MLP width [default: 4 × hidden].")] = None,
    llm_heads: Annotated[Optional[int], typer.Option(help="Custom LLM attention heads.")] = None,
    llm_kv_heads: Annotated[Optional[int], typer.Option(help="Custom LLM key/value heads (GQA).")] = None,
    llm_text_tokens: Annotated[int, typer.Option(help="Text tokens sharing the prompt with the image.")] = 0,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads for ONNX Runtime and PyTorch.")] = None,
    allow_fallback: Annotated[bool, typer.Option("--allow-fallback", help="Accept an ONNX Runtime session that "
                                                 "fell back to CPU from a requested CUDA / TensorRT EP (a warning "
                                                 "instead of a failure).")] = False,
    native_fp16: Annotated[bool, typer.Option("--native-fp16", help="Run fp16/int8 graphs on ONNX Runtime CPU "
                                              "as is, not with the fp16 rounding an engine does.")] = False,
    out: Annotated[Optional[Path], typer.Option(help="Reports folder [default: <bundle>/reports].")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
):
    """Validate a bundle variant or a TensorRT engine against the PyTorch reference; write the report.

    Exit codes: 0 every check passed; 1 a check failed (the report is still written); 2 bad input, including a bundle whose files changed; 3 TensorRT or a required PyTorch is missing.

    [bold]Examples[/]

      tokcomp validate export/siglip_pool2

      tokcomp validate export/siglip_pool2 --variant fp16 --batch 1,8 --min-cosine tokens=0.998

      tokcomp validate engines/siglip_pool2/orin-trt10.3-fp16.plan --bundle export/siglip_pool2

      tokcomp validate export/siglip_pool2 --images photos/ --llm qwen2-0.5b --llm-text-tokens 64
    """
    from ..errors import InputError, ParityError
    from ..validation import ValidateConfig, parse_batches, parse_override
    from ..validation import validate as run
    from ..validation.economics import custom_llm

    overrides = tuple(parse_override(flag, v) for flag, values in
                      (("atol", atol), ("rtol", rtol), ("max-rel-l2", max_rel_l2), ("min-cosine", min_cosine),
                       ("min-jaccard", min_jaccard), ("min-image-jaccard", min_image_jaccard),
                       ("count-atol", count_atol), ("score-atol", score_atol)) for v in (values or []))
    custom = None
    if llm_hidden is not None or llm_layers is not None:
        if llm_hidden is None or llm_layers is None:
            raise InputError("--llm-hidden and --llm-layers go together", "give both, e.g. --llm-hidden 2048 --llm-layers 24")
        custom = custom_llm(llm_hidden, llm_layers, llm_mlp, llm_heads, llm_kv_heads)
    cfg = ValidateConfig(target=target, bundle=bundle, variant=variant, device=device, batches=parse_batches(batch),
                         warmup=warmup, iterations=iterations, images=images, max_images=max_images,
                         extra_inputs=extra_inputs, seed=seed, torch=torch, torch_device=torch_device,
                         tolerance_overrides=overrides,
                         llms=tuple(llm) if llm else (),
                         llm_custom=custom, text_tokens=llm_text_tokens, threads=threads, native_fp16=native_fp16, allow_fallback=allow_fallback, out_dir=out, quiet=quiet,
                         argv=tuple(sys.argv))
    result = run(cfg)
    print_result(result)
    if not result:
        first = result.failures[0] if result.failures else "see the report"
        more = f" (+{len(result.failures) - 1} more)" if len(result.failures) > 1 else ""
        raise ParityError(f"validation FAILED: {first}{more}; report: {result.report_paths['html']}",
                          result.hint)


def print_result(result) -> None:
    """The headline of a validation: verdict, worst-case accuracy per output, latency, report paths."""
    from rich.table import Table

    from ..validation import report_tables as T

    rep = result.report
    c = console()
    for w in result.warnings:
        c.print(f"[bold yellow]warning:[/] {w}", soft_wrap=True)
    pt = rep["reference"]["pytorch"]
    if not pt["used"]:  # golden reference only: say why, so a fallback is never silent
        c.print(f"[bold yellow]note:[/] PyTorch reference not used: {pt['reason']}", soft_wrap=True)
    colour = "green" if result.passed else "red"
    c.print(f"[bold {colour}]{T.verdict(rep)}[/] {rep['target']['label']} · {T.ran_on(rep)}")
    head, rows = T.accuracy_table(rep)
    keep = [0, 1, 2, 4, 5, 8]  # output, result, max abs, rel L2, cos min, Jaccard: fits 80 columns
    t = Table(*[head[i] for i in keep], title="accuracy (worst case)", title_justify="left")
    for r in rows:
        t.add_row(*[f"[red]{r[i]}[/]" if r[i] == "FAIL" else r[i] for i in keep])
    c.print(t)
    if rep["latency"]["runs"]:
        head, rows = T.latency_table(rep)
        keep = [0, 1, 2, 3, 5, 6, 8]  # runner, batch, mean, p50, p99, images/s, speed-up
        t = Table(*[head[i] for i in keep], title="latency", title_justify="left")
        for r in rows:
            t.add_row(*[r[i] for i in keep])
        c.print(t)
    for f in result.failures:
        c.print(f"[red]✗[/] {f}", soft_wrap=True)
    for kind, path in result.report_paths.items():
        c.print(f"report {kind}: {path}", soft_wrap=True)


def report(
    json_path: Annotated[Path, typer.Argument(help="A report .json written by `tokcomp validate`.")],
    out: Annotated[Optional[Path], typer.Option(help="Folder for the .md and .html [default: beside the JSON].")] = None,
):
    """Re-render the Markdown and HTML of a validation report from its JSON.

    [bold]Example[/]

      tokcomp report export/siglip_pool2/reports/20260101T120000Z-onnx-fp32-cpu.json
    """
    from ..validation import render_report

    paths = render_report(json_path, out)
    for kind, path in paths.items():
        console().print(f"report {kind}: {path}", soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command()(validate)
    app.command()(report)

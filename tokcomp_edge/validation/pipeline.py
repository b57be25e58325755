"""`validate()`: run the target (and the PyTorch reference when present), judge, time, write the report.

Order of work, so that each runtime's memory is measured on its own and nothing runs twice:
  1. resolve the target and verify the bundle's checksums (exit 2 on a changed file);
  2. target runner: golden reference batches, seeded inputs, --images, then latency per batch size;
  3. PyTorch runner (when available): rebuild check against the golden outputs, the same seeded inputs
     and images (compared with the target's outputs kept from step 2), then latency;
  4. economics, environment; the report is written (JSON, Markdown, HTML) whatever the verdict.
"""

from __future__ import annotations

import datetime as _dt
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..calibration.images import Preprocess, load_images, synthetic_images
from ..core.comparison import (
    Check,
    OutputLayout,
    compare_outputs,
    summarize_checks,
    worst_grid,
)
from ..core.metrics import keep_frequency
from ..core.tolerance import default_tolerance, resolve_tolerances
from ..errors import BundleError, InputError
from . import environment
from .config import ValidateConfig
from .economics import economics_llms, token_economics
from .evidence import golden_evidence
from .inputs import InputSpec, describe_specs, golden_images, infer_batched
from .latency import LatencyStats
from .memory import track_host_peak
from .progress import Steps
from .report_json import REPORT_SCHEMA, REPORT_VERSION, write_report
from .target import Target, resolve_target, stored_debug
from .next_step import check_cause, next_step
from .pytorch_choice import torch_cuda, torch_decision
from .timed_runs import time_target, time_target_and_pytorch
from .tome_judge import forcing_maps, golden_rejudged, torch_judged

MAX_IMAGE_PANELS = 8  # prune masks drawn over at most this many --images in the HTML


@dataclass
class ValidationResult:
    """Outcome of one validation. Truthy when every check passed.

    Attributes:
        passed: the verdict.
        failures: one line per failed threshold ("<source> (batch B) · <output>: <what>").
        warnings: things the user must know that are not failures (ONNX Runtime fell back to CPU).
        report: the full report (the JSON's content).
        report_paths: {"json"|"md"|"html": path}.
        hint: the next step for the first failure's cause ("" when passed).
    """

    passed: bool
    failures: list[str]
    warnings: list[str]
    report: dict[str, Any]
    report_paths: dict[str, Path] = field(default_factory=dict)
    hint: str = ""  # the next step for the first failure's cause (validation/next_step.py)

    def __bool__(self) -> bool:
        return self.passed


def _default_batches(target: Target) -> tuple[int, ...]:
    lo, hi = target.batch_range
    ref_max = max(target.bundle.reference_batches() or [lo])
    return tuple(sorted({lo, max(lo, min(hi, ref_max))}))


def _check_batches(batches: tuple[int, ...], target: Target) -> None:
    lo, hi = target.batch_range
    what = "engine's optimization profile and the bundle" if target.kind == "tensorrt" else "bundle"
    for b in batches:
        if not lo <= b <= hi:
            raise InputError(f"--batch {b} is outside the {what}'s batch range {lo}..{hi}",
                             f"choose batch sizes between {lo} and {hi}, or re-export with a larger --batch-max")


def _make_target_runner(target: Target, cfg: ValidateConfig):
    if target.kind == "tensorrt":
        from .runners.tensorrt import TensorRTRunner

        profile = (target.sidecar or {}).get("profile") or {}
        return TensorRTRunner(target.path, host_code_allowed=bool(profile.get("version_compatible")))
    from .runners.onnxrt import OnnxRuntimeRunner

    return OnnxRuntimeRunner(target.path, device=cfg.device, threads=cfg.threads, emulate_fp16=not cfg.native_fp16)


def _expected(ref: dict[str, np.ndarray], outputs: list[str], batch: int) -> dict[str, np.ndarray]:
    return {o: ref[f"{o}.b{batch}"] for o in outputs if f"{o}.b{batch}" in ref}


def _thumbnail_b64(u8: np.ndarray, max_side: int = 224) -> str:
    import base64
    import io

    from PIL import Image

    im = Image.fromarray(u8)
    if max(im.size) > max_side:
        im.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=True)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def validate(cfg: ValidateConfig) -> ValidationResult:
    """Validate a bundle variant or an engine and write the report.

    Args:
        cfg: what to validate and how (see ValidateConfig).
    Returns:
        ValidationResult (truthy when passed); the report is written either way.
    Raises:
        InputError/BundleError (exit 2): bad paths, a changed bundle, batch sizes outside the range.
        RuntimeMissing (exit 3): TensorRT (for engines) or a required PyTorch is not installed.
    """
    cfg.check()
    started = time.perf_counter()
    created = _dt.datetime.now(_dt.timezone.utc)
    target = resolve_target(cfg.target, cfg.bundle, cfg.variant, cfg.device)
    if target.kind == "onnx":  # an engine needs TensorRT instead (its runner says so, exit 3)
        from ..extras import require_extra

        require_extra("ort", f"validating bundle variant {target.variant!r} on ONNX Runtime")
    bundle, manifest = target.bundle, target.bundle.manifest
    batches = cfg.batches or _default_batches(target)
    _check_batches(batches, target)
    tols = resolve_tolerances(target.precision, target.outputs, cfg.tolerance_overrides)
    layout = OutputLayout.from_manifest(manifest)
    pre = Preprocess.from_manifest(manifest)
    llms = economics_llms(cfg, manifest)
    images = load_images(cfg.images, pre, cfg.max_images) if cfg.images else None
    use_torch, torch_reason = torch_decision(cfg, manifest)
    out_dir = Path(cfg.out_dir) if cfg.out_dir else bundle.path / "reports"
    from ..atomic import ensure_writable_parent

    # Fail before the long work, not after; a refusal in between leaves no empty reports folder behind.
    ensure_writable_parent(out_dir / "report.json", probe_only=True)
    ref = bundle.reference()
    unmatched = [o for o in target.outputs if not any(k.startswith(f"{o}.b") for k in ref)]
    if unmatched:
        raise BundleError(f"{target.path.name} outputs {', '.join(unmatched)}, which the bundle's golden reference "
                          f"has no entry for (it has {', '.join(sorted({k.rsplit('.b', 1)[0] for k in ref}))})",
                          "validate against the bundle this artifact was made from")
    comp = manifest["compression"]
    # Top level: what the consumer of `tokens` sees (a VLM's LLM: after its transform and projector).
    tokens_in, tokens_out = int(manifest.get("tokens_in", comp["tokens_in"])), int(manifest.get("tokens_out", comp["tokens_out"]))
    lo, hi = target.batch_range
    checks: list[Check] = []
    notes: list[str] = []

    with Steps(quiet=cfg.quiet) as steps:
        # -- 2. the target ---------------------------------------------------------------------------
        runner = _make_target_runner(target, cfg)
        with track_host_peak() as target_mem:
            step = steps.task(f"loading {target.kind} {target.path.name}", 1)
            runner.activate()
            step()
            try:
                ref_batches = bundle.reference_batches()
                evidence = golden_evidence(bundle, target, ref, pre, device=cfg.device,
                                           emulate_fp16=not cfg.native_fp16)
                step = steps.task("accuracy vs golden reference", len(ref_batches))
                golden_out = {}
                for b in ref_batches:
                    try:
                        imgs = golden_images(bundle, ref, b, pre, target.inputs)
                    except BundleError as exc:
                        notes.append(f"golden batch {b} skipped: {exc.one_line()}")
                        step()
                        continue
                    out = infer_batched(runner, target.inputs, imgs, lo, hi)
                    golden_out[b] = out
                    checks += compare_outputs(out, _expected(ref, target.outputs, b), source="golden",
                                              tols=tols, layout=layout, evidence=evidence.get(b))
                    step()
                seeded = synthetic_images(cfg.extra_inputs, pre, cfg.seed) if use_torch and cfg.extra_inputs else None
                seeded_out = infer_batched(runner, target.inputs, seeded, lo, hi) if seeded is not None else None
                images_out = None
                if images is not None:
                    step = steps.task(f"running {len(images)} images", 1)
                    images_out = infer_batched(runner, target.inputs, images, lo, hi)
                    step()
                # With a PyTorch reference the target is timed later, in turns with it (see below).
                target_latency = ([] if use_torch else
                                  time_target(runner, target.inputs, batches, cfg, pre, tokens_out, "target", steps))
                target_gpu = runner.gpu_memory()
                runner_info = dict(runner.info)
            finally:
                runner.deactivate()

        # -- 3. the PyTorch reference ---------------------------------------------------------------
        torch_latency: list[LatencyStats] = []
        pair_speedup: dict[str, float | None] = {}
        torch_info: dict[str, Any] | None = None
        torch_gpu = None
        torch_mem = None
        if use_torch:
            from .runners.pytorch import TorchRunner

            on_gpu = runner_info.get("ran_on") not in (None, "cpu", "CPUExecutionProvider")
            tdev = cfg.torch_device
            if tdev == "auto":
                tdev = "cuda" if on_gpu and torch_cuda() else "cpu"
            tspecs = [InputSpec(bundle.input_names[0], "float32", "NCHW")]
            tr = TorchRunner(manifest, device=tdev, threads=cfg.threads)
            with track_host_peak() as torch_mem:
                step = steps.task("loading PyTorch reference", 1)
                tr.activate()
                step()
                try:
                    fp32 = {o: default_tolerance("fp32") for o in target.outputs}
                    step = steps.task("accuracy vs PyTorch", 3)
                    hi_b = bundle.batch_range[1]
                    # A ToMe merge map that differs from PyTorch's is judged by its near-tie replays, or PyTorch
                    # forced to the target's own decisions (tome_judge).
                    tmaps = forcing_maps(runner, manifest)
                    checks = golden_rejudged(checks, tr, {b: (o, _expected(ref, target.outputs, b), golden_images(
                        bundle, ref, b, pre, tspecs).pixel_values) for b, o in golden_out.items()},
                        tols=tols, layout=layout, notes=notes, target_maps=tmaps)
                    b0 = min(bundle.reference_batches())
                    rb = golden_images(bundle, ref, b0, pre, tspecs)
                    rebuilt = infer_batched(tr, tspecs, rb, 1, hi_b)
                    exp = _expected(ref, target.outputs, b0)
                    checks += torch_judged(compare_outputs(rebuilt, exp, source="pytorch-rebuild", tols=fp32,
                                                           layout=layout), tr, rebuilt, exp, rb.pixel_values, hi_b,
                                           source="pytorch-rebuild", tols=fp32, layout=layout, notes=notes,
                                           torch_is="actual")
                    step()
                    if seeded is not None:
                        exp = infer_batched(tr, tspecs, seeded, 1, hi_b)
                        checks += torch_judged(compare_outputs(seeded_out, exp, source="pytorch-seeded", tols=tols,
                                                               layout=layout), tr, seeded_out, exp, seeded.pixel_values,
                                               hi_b, source="pytorch-seeded", tols=tols, layout=layout, notes=notes,
                                               target_maps=tmaps)
                    step()
                    if images is not None:
                        exp = infer_batched(tr, tspecs, images, 1, hi_b)
                        checks += torch_judged(compare_outputs(images_out, exp, source="pytorch-images", tols=tols,
                                                               layout=layout), tr, images_out, exp, images.pixel_values,
                                               hi_b, source="pytorch-images", tols=tols, layout=layout, notes=notes,
                                               target_maps=tmaps)
                    step()
                    torch_gpu = tr.gpu_memory()
                    torch_info = dict(tr.info)
                except BaseException:
                    tr.deactivate()
                    raise
            # Latency: target and reference interleaved (A B A B …), outside the memory tracking of either.
            try:
                if cfg.iterations > 0:
                    runner.activate()
                target_latency, torch_latency, pair_speedup = time_target_and_pytorch(
                    runner, tr, target.inputs, tspecs, batches, cfg, pre, tokens_out, steps)
            finally:
                runner.deactivate()
                tr.deactivate()
        elif images is not None:
            notes.append("--images ran on the target only: without PyTorch there is no reference to compare them with")

    # -- 4. verdict and report ----------------------------------------------------------------------
    failures = [f"{c.where}: {f}" for c in checks for f in c.failures]
    causes = [check_cause(f) for c in checks for f in c.failures]  # one per failure: the CLI's hint
    if not checks:
        failures.append("nothing was compared: no golden batch could be fed and PyTorch was not available")
        causes.append("uncompared")
    # The target's own outputs must each have been compared at least once; the rebuild check (PyTorch vs
    # golden) says nothing about the target, so it does not count.
    compared = {c.output for c in checks if c.source != "pytorch-rebuild"}
    for o in target.outputs:
        if checks and o not in compared:
            failures.append(f"output {o} of the target was never compared with the golden reference or PyTorch")
            causes.append("uncompared")
    if any(c.source == "pytorch-rebuild" and not c.passed for c in checks):
        notes.insert(0, "the PyTorch module rebuilt from the manifest does not reproduce the bundle's golden outputs "
                        "(tokcomp, torch or the weights file changed since export), so the pytorch-* comparisons "
                        "measure that difference too; the golden comparison is the one that speaks for the target")
    warnings = images.warnings() if images is not None else []
    if images is not None and pre.legacy:
        warnings.append(f"--images: {pre.source}; re-export the bundle to record its family's own framing")
    if runner_info.get("fell_back"):
        said = (f"asked for --device {cfg.device} but ONNX Runtime ran {runner_info.get('ran_on')} (missing: "
                f"{', '.join(runner_info.get('providers_missing') or [])}) — the latency figures are for "
                f"{runner_info.get('ran_on')}. Why: {runner_info.get('fallback_reason')}")
        if cfg.allow_fallback:
            warnings.append(said)
        else:
            # A report that says "cuda" for a CPU run is the silent failure users fear most: fail it.
            failures.append(said + "; pass --allow-fallback to accept it")
            causes.append("fallback")
    passed = not failures
    latency = {
        "warmup": cfg.warmup, "iterations": cfg.iterations, "batches": list(batches),
        "timing": "wall time of one infer() call, host arrays in and out (includes host↔device copies)",
        "order": "target and PyTorch interleaved (A B A B …)" if torch_latency else "target alone",
        "runs": [s.to_dict() for s in target_latency + torch_latency],
        "speedup_vs_pytorch": pair_speedup,
        "speedup_method": "median over interleaved pairs of PyTorch time / target time",
    }
    grids = {o: worst_grid(checks, o) for o in target.outputs}
    prune: dict[str, Any] | None = None
    if layout.indices:
        gb = max(golden_out) if golden_out else None
        # VisionZip's merged (contextual) tokens follow the kept ones and have no cell of their own.
        prune = {"grid_in": list(layout.grid_in), "kept": int(tokens_out - layout.prefix_out - layout.merged_out),
                 "merged": layout.merged_out,
                 "merge_map_golden": (golden_out[gb][layout.merge_map][0].reshape(layout.grid_in).tolist()
                                      if gb and layout.merge_map and layout.merge_map in golden_out[gb] else None),
                 "keep_frequency_golden": keep_frequency(golden_out[gb][layout.indices], layout.grid_in) if gb else None}
    if layout.merge_map and not layout.indices:
        # ToMe: every non-prefix row is a merge; the map is what the report can draw.
        gb = max(golden_out) if golden_out else None
        prune = {"grid_in": list(layout.grid_in), "kept": 0, "merged": int(tokens_out - layout.prefix_out),
                 "merge_map_golden": (golden_out[gb][layout.merge_map][0].reshape(layout.grid_in).tolist()
                                      if gb and layout.merge_map in golden_out[gb] else None),
                 "keep_frequency_golden": None}
    image_section = None
    if images is not None:
        image_section = {"folder": str(cfg.images), "count": len(images),
                         "files": [p.name for p in images.paths], "skipped": [str(p) for p, _ in images.skipped],
                         "preprocess": {"policy": pre.describe(), **pre.to_dict()}, "panels": []}
        for i in range(min(len(images), MAX_IMAGE_PANELS)):
            panel = {"file": images.paths[i].name, "png_base64": _thumbnail_b64(images.uint8_nhwc[i])}
            if layout.indices:
                panel["kept_indices"] = [int(x) for x in images_out[layout.indices][i]]
            image_section["panels"].append(panel)
    report = {
        "schema": REPORT_SCHEMA,
        "schema_version": REPORT_VERSION,
        "created_utc": created.isoformat(timespec="seconds"),
        "tokcomp_version": __version__,
        "passed": passed,
        "failures": failures,
        "warnings": warnings,
        "notes": notes,
        "config": cfg.to_dict(),
        "links": [{"label": str(label), "href": str(href)} for label, href in cfg.links],
        "target": {
            "kind": target.kind, "path": str(target.path), "variant": target.variant,
            "precision": target.precision, "label": target.label, "batch_range": list(target.batch_range),
            "inputs": describe_specs(target.inputs), "outputs": target.outputs,
            "runtime": runner_info, "engine_sidecar": target.sidecar,
        },
        "bundle": {
            "path": str(bundle.path), "name": bundle.name, "manifest_sha256": bundle.manifest_sha256(),
            "encoder": manifest.get("encoder"), "compression": comp, "vlm": manifest.get("vlm"),
            "batch_range": list(bundle.batch_range), "tokens_shape": [manifest["tokens_out"], manifest["dim_out"]],
            "reference_batches": bundle.reference_batches(), "files_verified": sorted(manifest.get("files", {})),
        },
        "reference": {"pytorch": {"used": use_torch, "reason": torch_reason, "runtime": torch_info}},
        "tolerances": {o: t.to_dict() for o, t in tols.items()},
        "accuracy": {"summary": summarize_checks(checks), "checks": [c.to_dict() for c in checks],
                     "cosine_grid": grids, "layout": {"method": layout.method, "prefix_out": layout.prefix_out,
                                                      "grid_in": list(layout.grid_in),
                                                      "grid_out": list(layout.grid_out) if layout.grid_out else None},
                     "prune": prune},
        "latency": latency,
        "memory": {
            "host_target": target_mem.to_dict(), "host_pytorch": torch_mem.to_dict() if torch_mem else None,
            "gpu_target": target_gpu, "gpu_pytorch": torch_gpu,
        },
        "economics": token_economics(tokens_in, tokens_out, llms, cfg.text_tokens),
        "debug": stored_debug(bundle, target.variant),  # `tokcomp debug`'s per-block figures, when current
        "images": image_section,
        "environment": environment.collect(),
        "duration_s": round(time.perf_counter() - started, 3),
        "host": platform.node(),
    }
    paths = write_report(report, out_dir, created, target.label)
    hint = next_step(causes, md=str(paths.get("md", "the report")), bundle=str(bundle.path),
                     variant=target.variant or "fp32") if failures else ""
    return ValidationResult(passed=passed, failures=failures, warnings=warnings, report=report, report_paths=paths,
                            hint=hint)



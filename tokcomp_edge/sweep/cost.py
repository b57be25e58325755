"""What each candidate costs and saves: tokens the LLM reads per image, vision-path latency, LLM prefill.

Latency is measured interleaved — round r calls every candidate once, in order — so a machine that slows
down mid-sweep (thermal, another process) slows every candidate alike; the figure is the median per
candidate. Backends (`--backend`, also spelled `--latency`): `onnxruntime` (default: each candidate's path
exported to an in-memory ONNX graph at batch 1, run on ONNX Runtime CPU — the deployment's kind of runtime),
`tensorrt` (an engine per candidate, exported, built and run by the project's own pipeline: trt_latency.py),
`pytorch` (eager, labelled so), `none`.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from ..validation.economics import LlmShape, llm_from_facts, llm_saving

LATENCY_BACKENDS = ("onnxruntime", "tensorrt", "pytorch", "none")


def llm_shape(vlm_spec) -> LlmShape:
    """The LLM's shape from the VLM's text_config (vlm/spec.py LlmFacts)."""
    f = vlm_spec.llm
    return llm_from_facts(f"{vlm_spec.family.model_type} LLM ({f.model_type})", f.to_dict())


def mean_image_tokens(scores) -> float:
    """Image tokens the LLM read per image, averaged over the sweep's pairs (PairScore.image_tokens)."""
    return round(sum(s.image_tokens for s in scores) / len(scores), 3)


def economics(vlm_spec, native: float, tokens: float, tiles: list[int], text_tokens: int) -> dict[str, Any]:
    """Prefill FLOPs and KV-cache bytes saved per image (validation/economics), on the MEAN image tokens the LLM
    read over the sweep's images (tiles, OneVision's newlines and packing included), not a per-tile figure times
    a fixed tile count."""
    s = llm_saving(llm_shape(vlm_spec), native, tokens, text_tokens)
    return {"tokens_per_image": tokens, "tiles": round(sum(tiles) / len(tiles), 3), "text_tokens": text_tokens,
            "basis": "mean over the sweep's images", "prefill_flops": s.flops_compressed,
            "prefill_flops_saved": s.flops_saved, "saved_fraction": s.saved_fraction,
            "kv_bytes_saved": s.kv_cache_bytes_saved}


def _onnx_callable(path, plan, image_size):
    """Export `path` at batch 1 to an in-memory graph and return a feed → outputs call on ORT CPU."""
    from ..core.ort_session import ort_session
    from ..export.onnx_export import INPUT_NAME, export_to_proto

    extra = tuple(plan.extra_outputs) + tuple(plan.compression.extra_outputs)
    proto = export_to_proto(path, image_size, batch_min=1, batch_max=1, opset=20, extra_outputs=extra)
    sess = ort_session(proto.SerializeToString())
    return lambda x: sess.run(None, {INPUT_NAME: x})


def _interleaved(calls: dict[str, tuple[Any, Any]], runs: int, warmup: int) -> dict[str, list[float]]:
    """Round r calls every candidate once, in order; the first `warmup` rounds are not kept. ms per call."""
    samples: dict[str, list[float]] = {s: [] for s in calls}
    for r in range(warmup + runs):
        for spec, (fn, x) in calls.items():
            t0 = time.perf_counter()
            fn(x)
            dt = (time.perf_counter() - t0) * 1e3
            if r >= warmup:
                samples[spec].append(dt)
    return samples


def measure_latency(paths: dict[str, Any], plans: dict[str, Any], pixel, backend: str, runs: int = 15,
                    warmup: int = 2, progress=None, starting=None, engines=None) -> dict[str, Any]:
    """Median ms per call of each candidate's vision path at batch 1, interleaved.

    Args:
        paths: spec → the vision-path module; plans: spec → its VlmPlan.
        pixel: one preprocessed tile [1, 3, H, W] (torch).
        backend: a LATENCY_BACKENDS entry.
        progress: called with each spec once its graph (or engine) is ready (exports take seconds, engine
            builds minutes).
        starting: called with each spec before its engine is made (tensorrt only: the progress line).
        engines: the trt_latency.TrtEngines set-up (tensorrt only).
    Returns:
        {"backend", "label", "runs", "per_candidate": {spec: {"median_ms", "samples_ms"}}, "export_s"}; with
        tensorrt also "engines": spec → what was built (profile, precision, variant, shapes, seconds).
    """
    import torch

    if backend == "none":
        return {"backend": "none", "label": "not measured", "runs": 0, "per_candidate": {}}
    if backend == "tensorrt":
        if engines is None:
            raise ValueError("measure_latency(backend='tensorrt') needs engines=TrtEngines(…) (sweep/trt_latency.py)")
        x = pixel.numpy()
        with engines.open(list(paths), starting=starting, done=progress) as opened:
            samples = _interleaved({s: (b.infer, x) for s, b in opened.items()}, runs, warmup)
        profiles = sorted({r["profile"] for r in engines.records.values()})
        return {"backend": "tensorrt", "runs": runs, "warmup": warmup,
                "label": f"{engines.label}, profile {', '.join(profiles)}, batch 1 (an engine per candidate, "
                         "host arrays in and out)",
                "per_candidate": {s: {"median_ms": statistics.median(v), "samples_ms": v} for s, v in samples.items()},
                "export_s": {s: r["export_s"] + r["build_s"] for s, r in engines.records.items()},
                "engines": engines.records}
    calls, export_s = {}, {}
    image_size = tuple(pixel.shape[-2:])
    for spec, path in paths.items():
        t0 = time.perf_counter()
        if backend == "onnxruntime":
            calls[spec] = (_onnx_callable(path, plans[spec], image_size), pixel.numpy())
        else:
            calls[spec] = (lambda x, p=path: p(x), pixel)
        export_s[spec] = time.perf_counter() - t0
        if progress:
            progress(spec)
    with torch.no_grad():
        samples = _interleaved(calls, runs, warmup)
    label = {"onnxruntime": "ONNX Runtime CPU, batch 1 (each candidate's path exported in memory)",
             "pytorch": "PyTorch eager CPU, batch 1 (not the deployed runtime)"}[backend]
    return {"backend": backend, "label": label, "runs": runs, "warmup": warmup, "threads": torch.get_num_threads(),
            "per_candidate": {s: {"median_ms": statistics.median(v), "samples_ms": v} for s, v in samples.items()},
            "export_s": export_s}

"""Latency: warm-up, then N timed calls of one runner on one batch; summary statistics.

What is timed is one `runner.infer(feed)` call as the application would make it: host arrays in, host
arrays out. For GPU runtimes that includes the host↔device copies and the stream synchronisation, so
the figure is end-to-end, not kernel time (trtexec's "GPU Compute Time" will be lower).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np


@dataclass
class LatencyStats:
    """Timing of one runner at one batch size.

    Attributes:
        runner: label of the runner (`target`, `pytorch`).
        batch: images per call.
        warmup, iterations: untimed and timed calls.
        mean_ms, std_ms, min_ms, p50_ms, p90_ms, p99_ms, max_ms: per-call wall time statistics.
        images_per_s: batch / mean time.
        tokens_per_s: images_per_s × output tokens per image.
        samples_ms: every timed call, in order (the plots use them).
    """

    runner: str
    batch: int
    warmup: int
    iterations: int
    mean_ms: float
    std_ms: float
    min_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    images_per_s: float
    tokens_per_s: float
    samples_ms: list[float] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def summarize(samples_ms: list[float], *, runner: str, batch: int, warmup: int,
              tokens_per_image: int) -> LatencyStats:
    """Statistics of timed samples (percentiles use numpy's linear interpolation).

    Args:
        samples_ms: per-call times in milliseconds (at least one).
        runner: label to record.
        batch: images per call.
        warmup: untimed calls that preceded the samples.
        tokens_per_image: output tokens of one image (for tokens/s).
    Returns:
        LatencyStats.
    """
    s = np.asarray(samples_ms, np.float64)
    if s.size == 0:
        raise ValueError("no latency samples")
    mean = float(s.mean())
    ips = batch / (mean / 1000.0) if mean > 0 else float("inf")
    return LatencyStats(runner=runner, batch=batch, warmup=warmup, iterations=int(s.size), mean_ms=mean,
                        std_ms=float(s.std()), min_ms=float(s.min()), p50_ms=float(np.percentile(s, 50)),
                        p90_ms=float(np.percentile(s, 90)), p99_ms=float(np.percentile(s, 99)),
                        max_ms=float(s.max()), images_per_s=ips, tokens_per_s=ips * tokens_per_image,
                        samples_ms=[float(x) for x in s])


def time_calls(call: Callable[[], object], warmup: int, iterations: int,
               on_step: Callable[[], None] | None = None) -> list[float]:
    """Run `call` warmup + iterations times; return the timed ones in milliseconds.

    Args:
        call: one inference (must block until its outputs are on the host).
        warmup: calls that are not timed (first-call allocations, kernel selection, caches).
        iterations: timed calls.
        on_step: called after every call (progress display).
    Returns:
        List of `iterations` durations in ms.
    """
    for _ in range(warmup):
        call()
        if on_step:
            on_step()
    out = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        call()
        out.append((time.perf_counter() - t0) * 1000.0)
        if on_step:
            on_step()
    return out


def time_interleaved(calls: list[Callable[[], object]], warmup: int, iterations: int,
                     on_step: Callable[[], None] | None = None) -> list[list[float]]:
    """Time several calls in turns (A B A B …): what slows the machine meanwhile slows every one alike.

    Returns one list of `iterations` durations (ms) per call, in the order of `calls`.
    """
    for _ in range(warmup):
        for call in calls:
            call()
        if on_step:
            on_step()
    out: list[list[float]] = [[] for _ in calls]
    for _ in range(iterations):
        for i, call in enumerate(calls):
            t0 = time.perf_counter()
            call()
            out[i].append((time.perf_counter() - t0) * 1000.0)
        if on_step:
            on_step()
    return out


def pair_ratio_median(target_ms: list[float], reference_ms: list[float]) -> float | None:
    """Median over interleaved pairs of reference time / target time (> 1: the target is faster).

    A ratio per pair cancels what both runs of a pair shared (another process, a frequency change); the
    median then ignores the pairs a burst hit on one side only. Robust where a ratio of means is not.
    """
    ratios = [r / t for t, r in zip(target_ms, reference_ms) if t > 0 and r > 0]
    return float(np.median(ratios)) if ratios else None

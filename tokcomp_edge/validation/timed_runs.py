"""The latency runs `validate` makes: the target alone, or the target and PyTorch in turns (A B A B …, as
`make bench` does, so a noisy machine slows both alike and the per-pair ratio survives it)."""

from __future__ import annotations

from ..calibration.images import ImageBatch, Preprocess, synthetic_images
from .config import ValidateConfig
from .inputs import InputSpec, feed_for
from .latency import (
    LatencyStats,
    pair_ratio_median,
    summarize,
    time_calls,
    time_interleaved,
)
from .progress import Steps

# Timing images are seeded apart from the accuracy ones (cfg.seed): the same for every runner and batch run.
SEED_OFFSET = 7919


def _timing_images(batch: int, pre: Preprocess, cfg: ValidateConfig) -> ImageBatch:
    return synthetic_images(batch, pre, cfg.seed + SEED_OFFSET)


def time_target(runner, specs: list[InputSpec], batches: tuple[int, ...], cfg: ValidateConfig, pre: Preprocess,
                tokens_out: int, label: str, steps: Steps) -> list[LatencyStats]:
    """One runner timed alone per batch size (no PyTorch to pair it with)."""
    stats = []
    if cfg.iterations <= 0:
        return stats
    for b in batches:
        feed = feed_for(specs, _timing_images(b, pre, cfg))
        step = steps.task(f"latency {label} batch {b}", cfg.warmup + cfg.iterations)
        samples = time_calls(lambda f=feed: runner.infer(f), cfg.warmup, cfg.iterations, step)
        stats.append(summarize(samples, runner=label, batch=b, warmup=cfg.warmup, tokens_per_image=tokens_out))
    return stats


def time_target_and_pytorch(target, tr, specs: list[InputSpec], tspecs: list[InputSpec], batches: tuple[int, ...],
                            cfg: ValidateConfig, pre: Preprocess, tokens_out: int, steps: Steps):
    """Target and PyTorch timed in turns on the same images; (target stats, pytorch stats, {batch: ratio})."""
    t_stats, p_stats, ratios = [], [], {}
    if cfg.iterations <= 0:
        return t_stats, p_stats, ratios
    for b in batches:
        images = _timing_images(b, pre, cfg)
        tfeed, pfeed = feed_for(specs, images), feed_for(tspecs, images)
        step = steps.task(f"latency target ⇄ pytorch batch {b}", cfg.warmup + cfg.iterations)
        ts, ps = time_interleaved([lambda f=tfeed: target.infer(f), lambda f=pfeed: tr.infer(f)],
                                  cfg.warmup, cfg.iterations, step)
        t_stats.append(summarize(ts, runner="target", batch=b, warmup=cfg.warmup, tokens_per_image=tokens_out))
        p_stats.append(summarize(ps, runner="pytorch", batch=b, warmup=cfg.warmup, tokens_per_image=tokens_out))
        ratios[str(b)] = pair_ratio_median(ts, ps)
    return t_stats, p_stats, ratios

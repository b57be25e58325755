"""Compression inside the encoder, measured: ToMe's throughput against the same encoder without it.

`tome:13` on siglip-b16-224 (196 → 40 tokens over 12 blocks) and `none`, both exported in child processes,
timed on ONNX Runtime CPU (fp32) at one batch size, interleaved (none, tome, none, tome, …) so machine noise
hits both alike. Reported: medians and every run, the throughput ratio (median of per-pair ratios, the
figure judged against the target; the ratio of the medians beside it), the token counts, and
the MAC ratio of the two graphs counted from the token schedule (what ToMe's paper calls FLOPs).
"""

from __future__ import annotations

import statistics
from pathlib import Path

TARGET_SPEEDUP = 1.5  # the target for tome:13 on siglip-b16-224 at batch 8


def block_macs(tokens: int, width: int, mlp: int) -> int:
    """Multiply-accumulates of one ViT block on `tokens` tokens: q/k/v/out projections, attention, MLP."""
    return 4 * tokens * width * width + 2 * tokens * tokens * width + 2 * tokens * width * mlp


def schedule_macs(tokens: list[int], width: int, mlp: int) -> int:
    """ToMe merges after a block's attention: block i's attention runs on tokens[i], its MLP on tokens[i + 1]."""
    total = 0
    for t_in, t_out in zip(tokens[:-1], tokens[1:]):
        total += 4 * t_in * width * width + 2 * t_in * t_in * width + 2 * t_out * width * mlp
    return total


def bench_tome(tmp: Path, console, model: str = "siglip-b16-224", spec: str = "tome:13", batch: int = 8,
               warmup: int = 1, iters: int = 5) -> dict:
    from run import export_in_child, interleaved

    from tokcomp_edge.core.bundle import Bundle
    from tokcomp_edge.core.ort_session import ort_session
    from tokcomp_edge.export.reference import golden_inputs

    bundles = {}
    for name in ("none", spec):
        out = tmp / f"inside-{name.replace(':', '-')}"
        console.print(f"exporting {model} --compress {name} in a child process …")
        export_in_child(model, name, out, batch)
        bundles[name] = Bundle.load(out)
    enc = bundles["none"].encoder
    x = golden_inputs(tuple(enc["image_size"]), enc["mean"], enc["std"], [batch], seed=321)[batch]
    sessions = {name: ort_session(b.onnx_path("fp32")) for name, b in bundles.items()}
    fns = {name: (lambda s=s: s.run(None, {"pixel_values": x})) for name, s in sessions.items()}
    console.print(f"timing none vs {spec} on ONNX Runtime CPU, batch {batch} (interleaved) …")
    t = interleaved(fns, warmup, iters)
    ratios = [a / b for a, b in zip(t["none"], t[spec])]
    comp = bundles[spec].manifest["compression"]
    hf = enc["config"].get("hf", {})
    width, mlp = int(enc["hidden_size"]), int(hf.get("intermediate_size", 4 * int(enc["hidden_size"])))
    n0 = comp["tokens_in"]
    dense = block_macs(n0, width, mlp) * len(comp["schedule"])
    merged = schedule_macs([n0, *comp["block_tokens"]], width, mlp)
    speedup = statistics.median(ratios)
    return {"model": model, "spec": spec, "batch": batch, "runs": iters,
            "none_median_ms": round(statistics.median(t["none"]), 1),
            "tome_median_ms": round(statistics.median(t[spec]), 1),
            "none_ms": [round(v, 1) for v in t["none"]], "tome_ms": [round(v, 1) for v in t[spec]],
            "ratio_of_medians": round(statistics.median(t["none"]) / statistics.median(t[spec]), 3),
            "throughput_ratio": round(speedup, 3), "target": TARGET_SPEEDUP, "meets_target": speedup >= TARGET_SPEEDUP,
            "tokens_in": n0, "tokens_out": comp["tokens_out"], "block_tokens": comp["block_tokens"],
            "mac_ratio": round(merged / dense, 3)}


def print_tome(r: dict, console) -> None:
    verdict = "meets" if r["meets_target"] else "MISSES"
    console.print(f"{r['model']} {r['spec']} (ONNX Runtime CPU fp32, batch {r['batch']}, {r['runs']} interleaved runs): "
                  f"none {r['none_median_ms']} ms, tome {r['tome_median_ms']} ms → throughput ×{r['throughput_ratio']} "
                  f"({verdict} ×{r['target']}); tokens {r['tokens_in']} → {r['tokens_out']}; MACs ×{r['mac_ratio']}")


class _MergeChain:
    """The merge steps of a ToMe schedule alone (matching + merging, no attention or MLP), as a module."""

    def __new__(cls, schedule: list[int], protected: int):
        import torch

        from tokcomp_edge.compression.tome import tome_merge

        class Chain(torch.nn.Module):
            def forward(self, x, keys):
                size = torch.ones_like(x[..., :1])
                for r in schedule:
                    x, size, _ = tome_merge(x, size, keys[:, : x.shape[1]], r, protected)
                return x, size

        return Chain().eval()


def bench_tome_overhead(tmp: Path, console, tome_dir: Path, batch: int = 8, warmup: int = 1, iters: int = 5) -> dict:
    """The merge overhead itself: ToMe's matching and merging steps for the bundle's schedule, exported alone
    and timed on ONNX Runtime CPU interleaved with the whole tome bundle, as a share of the encoder's time.

    Not included: the log-size bias proportional attention adds to each block's logits (one Add per block).
    """
    import numpy as np
    import torch
    from run import interleaved

    from tokcomp_edge.core.bundle import Bundle
    from tokcomp_edge.core.ort_session import ort_session
    from tokcomp_edge.export.reference import golden_inputs

    bundle = Bundle.load(tome_dir)
    enc, comp = bundle.encoder, bundle.manifest["compression"]
    t, c = int(comp["tokens_in"]), int(enc["hidden_size"])
    d = c // int(enc["num_heads"])
    chain = _MergeChain(list(comp["schedule"]), int(comp.get("prefix_in", 0)))
    x = torch.randn(batch, t, c)
    keys = torch.randn(batch, t, d)
    path = tmp / "tome-merge-chain.onnx"
    prog = torch.onnx.export(chain, (x, keys), dynamo=True, input_names=["x", "keys"], external_data=False,
                             optimize=True, verify=False, report=False)
    prog.save(str(path), external_data=False)
    merge = ort_session(path)
    full = ort_session(bundle.onnx_path("fp32"))
    px = golden_inputs(tuple(enc["image_size"]), enc["mean"], enc["std"], [batch], seed=321)[batch]
    feeds = {"x": x.numpy(), "keys": keys.numpy()}
    console.print(f"timing ToMe's merge steps alone vs the whole {comp['spec']} encoder, batch {batch} (interleaved) …")
    times = interleaved({"merge": lambda: merge.run(None, feeds), "encoder": lambda: full.run(None, {"pixel_values": px})},
                        warmup, iters)
    shares = [m / e for m, e in zip(times["merge"], times["encoder"])]
    share = float(np.median(shares))
    return {"spec": comp["spec"], "batch": batch, "runs": iters,
            "merge_median_ms": round(statistics.median(times["merge"]), 2),
            "encoder_median_ms": round(statistics.median(times["encoder"]), 1),
            "overhead_share": round(share, 4), "target": 0.02, "meets_target": share <= 0.02,
            "excludes": "the log-size attention bias (one Add per block)"}


def bench_visionzip(tmp: Path, console, model: str = "clip-l14-336", spec: str = "visionzip:53:10", batch: int = 1,
                    warmup: int = 2, iters: int = 9) -> dict:
    """VisionZip's cost: the encoder with `visionzip:53:10` at LLaVA-1.5's layer −2 (CLS + 53 + 10 = 64 tokens)
    against `none` at the same layer, interleaved on ONNX Runtime CPU, and the token economics for vicuna-7b."""
    from run import interleaved
    from vlm_bench import export_peak

    from tokcomp_edge.core.bundle import Bundle
    from tokcomp_edge.core.ort_session import ort_session
    from tokcomp_edge.export.reference import golden_inputs
    from tokcomp_edge.validation.economics import llm_preset, token_economics

    bundles = {}
    for name in ("none", spec):
        out = tmp / f"vz-{name.replace(':', '-')}"
        console.print(f"exporting {model} --layer -2 --compress {name} --prefix keep in a child process (minutes) …")
        export_peak(model, out, name, max(2, batch), layer=-2, prefix="keep", cleanup=True)
        bundles[name] = Bundle.load(out)
    enc = bundles["none"].encoder
    x = golden_inputs(tuple(enc["image_size"]), enc["mean"], enc["std"], [batch], seed=321)[batch]
    sessions = {name: ort_session(b.onnx_path("fp32")) for name, b in bundles.items()}
    console.print(f"timing none vs {spec} on ONNX Runtime CPU, batch {batch} (interleaved) …")
    t = interleaved({n: (lambda s=s: s.run(None, {"pixel_values": x})) for n, s in sessions.items()}, warmup, iters)
    ratio = statistics.median([v / n for v, n in zip(t[spec], t["none"])])
    comp = bundles[spec].manifest
    econ = token_economics(int(bundles["none"].manifest["tokens_out"]), int(comp["tokens_out"]),
                           [llm_preset("vicuna-7b")])
    saving = econ["llms"][0]
    return {"model": model, "spec": spec, "layer": -2, "batch": batch, "runs": iters,
            "none_median_ms": round(statistics.median(t["none"]), 1),
            "visionzip_median_ms": round(statistics.median(t[spec]), 1),
            "time_ratio": round(ratio, 4), "target": 1.03, "meets_target": ratio <= 1.03,
            "tokens_in": econ["tokens_in"], "tokens_out": econ["tokens_out"],
            "vicuna_7b": {k: saving[k] for k in ("flops_uncompressed", "flops_compressed", "flops_saved",
                                                 "saved_fraction", "kv_cache_bytes_saved")}}


def print_inside_extra(results: dict, console) -> None:
    o = results.get("tome_overhead")
    if o:
        verdict = "meets" if o["meets_target"] else "MISSES"
        console.print(f"ToMe merge steps alone ({o['spec']}, batch {o['batch']}): {o['merge_median_ms']} ms of a "
                      f"{o['encoder_median_ms']} ms encoder → {o['overhead_share']:.2%} (median of pairs; {verdict} "
                      f"≤ 2 %; excludes {o['excludes']})")
    v = results.get("visionzip")
    if v:
        verdict = "meets" if v["meets_target"] else "MISSES"
        console.print(f"{v['model']} layer −2 {v['spec']} vs none (batch {v['batch']}): {v['visionzip_median_ms']} vs "
                      f"{v['none_median_ms']} ms → ×{v['time_ratio']} ({verdict} ≤ ×1.03); tokens {v['tokens_in']} → "
                      f"{v['tokens_out']}; vicuna-7b: {v['vicuna_7b']}")

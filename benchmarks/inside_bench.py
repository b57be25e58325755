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

    from tokcomp_edge.export.bundle import Bundle
    from tokcomp_edge.export.reference import golden_inputs, ort_session

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

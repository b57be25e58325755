#!/usr/bin/env python3
"""`make bench`: export cost and ONNX Runtime vs PyTorch latency, measured side by side in one run.

For each model (default siglip-b16-224 with pool:2):
- export wall time and peak memory (the export runs in a child process, so its peak RSS is its own);
- latency at batch 1 and 8 of the SAME module: PyTorch eager vs ONNX Runtime CPU (fp32), and the fp16
  variant on ONNX Runtime CPU with its accuracy against the fp32 PyTorch outputs. Runs are interleaved
  (torch, ort, torch, ort, …) so that machine noise hits both sides alike; medians and the median ratio
  are reported. These machines are 2-core and noisy: read ratios, not absolute milliseconds.

And for VLM vision paths (benchmarks/vlm_bench.py): the peak memory of exporting a VLM whose LLM is ~10×
its vision part against the same export with a token LLM, and the same interleaved latency comparison on
one VLM vision path (default smolvlm-256m: SigLIP-B/16 at 512 px + pixel shuffle 4 + linear).

And compression inside the encoder (benchmarks/inside_bench.py): `tome:13` against `none` on siglip-b16-224,
ONNX Runtime CPU at batch 8, interleaved — the throughput ratio, token counts and MAC ratio.
And the device runtime (benchmarks/runtime_bench.py): images/s of `VisionRuntime.encode` on ONNX Runtime CPU
against transformers' processor + PyTorch get_image_features on 16 images from the real photos (InternVL-shaped,
multi-tile), interleaved, and the runtime's host overhead per image against its inference time.
And a Qwen-VL vision path at a static tile (default qwen2.5-vl-3b at 448: 32 blocks, 1024 patches → 256
tokens): export wall time and peak RSS, and PyTorch eager vs ONNX Runtime CPU at batch 1, interleaved.
And the sweep (benchmarks/sweep_bench.py): `tokcomp sweep` on the trained shapes VLM over held-out scenes with
their own questions, every method at 16 and 8 tokens: per candidate top1/kl/match, latency and the task accuracy
against the ground truth; per budget whether the chooser's pick is the most accurate (`--sweep-only`: just it).

Writes benchmarks/results/bench-<UTC time>.json and prints tables.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_RATIO = 0.8
TARGET_CORE_MB = 120
TARGET_HELP_S = 0.3


def export_in_child(model: str, spec: str, out: Path, batch_max: int) -> dict:
    """Export in a subprocess; returns wall seconds and the child's own peak RSS in MiB (see export_peak)."""
    from vlm_bench import export_peak

    return export_peak(model, out, spec, batch_max)


def interleaved(fns: dict, warmup: int, iters: int) -> dict[str, list[float]]:
    times = {k: [] for k in fns}
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    for _ in range(iters):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append((time.perf_counter() - t0) * 1e3)
    return times


def bench_latency(bundle_dir: Path, batches: list[int], warmup: int, iters: int) -> dict:
    import torch

    from tokcomp_edge.core.bundle import Bundle
    from tokcomp_edge.core.ort_session import ort_session
    from tokcomp_edge.export.rebuild import model_from_manifest
    from tokcomp_edge.export.reference import golden_inputs

    torch.set_num_threads(os.cpu_count() or 1)
    bundle = Bundle.load(bundle_dir)
    enc = bundle.encoder
    model = model_from_manifest(bundle.manifest)
    sessions = {"onnxruntime_fp32": ort_session(bundle.onnx_path("fp32"))}
    emulated = None
    if "fp16" in bundle.variants():
        sessions["onnxruntime_fp16"] = ort_session(bundle.onnx_path("fp16"))
        emulated = _emulated_fp16_session(bundle.onnx_path("fp16"))
    out = {}
    for b in batches:
        x = golden_inputs(tuple(enc["image_size"]), enc["mean"], enc["std"], [b], seed=123)[b]
        xt = torch.from_numpy(x)

        def run_torch(xt=xt):
            with torch.no_grad():
                return model(xt)

        fns = {"pytorch_eager": run_torch}
        for name, sess in sessions.items():
            feed_name = sess.get_inputs()[0].name
            fns[name] = (lambda s=sess, f=feed_name, x=x: s.run(None, {f: x}))
        t = interleaved(fns, warmup, iters)
        row = {k: {"median_ms": round(statistics.median(v), 2), "p90_ms": round(sorted(v)[int(0.9 * (len(v) - 1))], 2),
                   "runs": len(v)} for k, v in t.items()}
        ratios = [o / p for o, p in zip(t["onnxruntime_fp32"], t["pytorch_eager"])]
        row["ratio_ort_fp32_over_torch_median"] = round(statistics.median(ratios), 3)
        ref = run_torch()
        ref = (ref[0] if isinstance(ref, tuple) else ref).numpy()
        for name in sessions:
            row[name].update(_accuracy(fns[name]()[0], ref))
        if emulated is not None:
            # ORT CPU computes most fp16 ops in fp32 without rounding in between; the emulated graph
            # rounds where an fp16 engine rounds, so its error is the one to expect from TensorRT.
            acc = _accuracy(emulated.run(None, {emulated.get_inputs()[0].name: x})[0], ref)
            row["onnxruntime_fp16"].update({f"emulated_{k}": v for k, v in acc.items()})
        out[f"b{b}"] = row
    return out


def _accuracy(got, ref) -> dict:
    import numpy as np

    got = got.astype(np.float32)
    cos = (got * ref).sum(-1) / (np.linalg.norm(got, axis=-1) * np.linalg.norm(ref, axis=-1) + 1e-12)
    return {"max_abs_vs_torch": float(np.abs(got - ref).max()), "min_token_cosine_vs_torch": float(cos.min())}


def _emulated_fp16_session(path: Path):
    import onnx

    from tokcomp_edge.core.ort_session import ort_session
    from tokcomp_edge.export.fp16_emulation import emulate_fp16

    emu = emulate_fp16(onnx.load(str(path)))
    if emu is None:
        return None
    tmp = path.parent.parent / "fp16-emulated.onnx"  # beside the bundle, in the run's temp folder
    onnx.save(emu, str(tmp))
    return ort_session(tmp)


def bench_core_env(runs: int = 7) -> dict:
    """Size of the core-only venv and `tokcomp --help` start-up in it (the install a Jetson takes)."""
    sys.path.insert(0, str(ROOT / "tests" / "packaging"))
    from core_env import build_core_env, distribution_sizes

    env = build_core_env()
    disk = apparent = 0
    for root, _, files in os.walk(env.path):
        for f in files:
            st = os.lstat(os.path.join(root, f))
            disk, apparent = disk + st.st_blocks * 512, apparent + st.st_size
    sizes = distribution_sizes(env)
    cmd = [str(env.tokcomp), "--help"]
    subprocess.run(cmd, capture_output=True, env=env.env(), check=True)  # warm-up: page cache, .pyc files
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, capture_output=True, env=env.env(), check=True)
        times.append(time.perf_counter() - t0)
    mib = 1024 * 1024
    return {"path": str(env.path.relative_to(ROOT)), "python": sys.version.split()[0],
            "disk_mib": round(disk / mib, 1), "apparent_mib": round(apparent / mib, 1),
            "target_mib": TARGET_CORE_MB, "distributions_mib": {k: round(v / mib, 1) for k, v in sizes.items()},
            "help_s_median": round(statistics.median(times), 3), "help_s_max": round(max(times), 3),
            "help_runs": runs, "target_help_s": TARGET_HELP_S, "pins": env.pins}


def print_core(console, core: dict) -> None:
    top = ", ".join(f"{k} {v}" for k, v in list(core["distributions_mib"].items())[:6])
    size_ok = "meets" if core["disk_mib"] <= TARGET_CORE_MB else "MISSES"
    help_ok = "meets" if core["help_s_median"] <= TARGET_HELP_S else "MISSES"
    console.print(f"core env ({core['path']}, Python {core['python']}): {core['disk_mib']} MiB on disk "
                  f"({core['apparent_mib']} MiB of file contents) → {size_ok} the ≤ {TARGET_CORE_MB} MB target; "
                  f"largest: {top} MiB")
    console.print(f"`tokcomp --help` in it: median {core['help_s_median']} s over {core['help_runs']} runs "
                  f"(max {core['help_s_max']} s) → {help_ok} the ≤ {TARGET_HELP_S} s target")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="siglip-b16-224")
    ap.add_argument("--compress", default="pool:2")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--iters", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--no-fp16", action="store_true")
    ap.add_argument("--vlm-model", default="smolvlm-256m", help="VLM preset or hf: folder for the VLM latency run")
    ap.add_argument("--vlm-batches", default="1,4")
    ap.add_argument("--no-vlm", action="store_true", help="skip the VLM memory and latency runs")
    ap.add_argument("--qwen-model", default="qwen2.5-vl-3b",
                    help="Qwen-VL preset or hf: folder for the static-tile latency run (its --image-size: --qwen-tile)")
    ap.add_argument("--qwen-tile", default="448")
    ap.add_argument("--no-qwen", action="store_true", help="skip the Qwen-VL export and latency run")
    ap.add_argument("--core-only", action="store_true", help="only the core-install size and start-up section")
    ap.add_argument("--no-inside", action="store_true", help="skip the ToMe (compression inside the encoder) run")
    ap.add_argument("--no-debug", action="store_true", help="skip timing `tokcomp debug` against `validate`")
    ap.add_argument("--no-runtime", action="store_true", help="skip the device runtime's encode vs transformers run")
    ap.add_argument("--no-sweep", action="store_true", help="skip the sweep on the trained shapes VLM")
    ap.add_argument("--sweep-only", action="store_true", help="only the sweep on the trained shapes VLM")
    ap.add_argument("--sweep-pairs", type=int, default=None, help="held-out pairs for the sweep (default 280)")
    ap.add_argument("--sweep-fixture", type=Path, default=None,
                    help="the shapes VLM folder for the sweep (default: the fixture for its code, trained if missing)")
    args = ap.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    from rich.console import Console

    console = Console(width=160)
    results = {"created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "model": args.model,
               "compress": args.compress, "cpu_count": os.cpu_count(), "target_ratio": TARGET_RATIO}
    if args.sweep_only:
        with tempfile.TemporaryDirectory(prefix="tokcomp-bench-") as tmp:
            results["sweep"] = _sweep(Path(tmp), console, args)
        from sweep_bench import print_sweep

        return _write(results, console, lambda: print_sweep(results["sweep"], console))
    console.print("building / measuring the core-only environment …")
    results["core_env"] = bench_core_env()
    if args.core_only:
        return _write(results, console, lambda: print_core(console, results["core_env"]))
    with tempfile.TemporaryDirectory(prefix="tokcomp-bench-") as tmp:
        bundle = Path(tmp) / "bundle"
        console.print(f"exporting {args.model} {args.compress} in a child process …")
        results["export"] = export_in_child(args.model, args.compress, bundle, max(batches))
        if not args.no_fp16:
            from tokcomp_edge.core.bundle import Bundle
            from tokcomp_edge.export.variants import ensure_variant

            t0 = time.perf_counter()
            ensure_variant(Bundle.load(bundle), "fp16")
            results["fp16_variant_s"] = round(time.perf_counter() - t0, 2)
        if not args.no_fp16 and not args.no_debug:
            from debug_bench import bench_debug

            results["debug"] = bench_debug(bundle, console)
            console.print(f"debug / validate: ×{results['debug']['ratio_median']} (target ≤ ×3)")
        console.print("timing PyTorch eager vs ONNX Runtime CPU (interleaved) …")
        results["latency"] = bench_latency(bundle, batches, args.warmup, args.iters)
        if not args.no_vlm:
            from vlm_bench import bench_vlm_memory

            results["vlm_memory"] = bench_vlm_memory(Path(tmp), console)
            vlm_batches = [int(b) for b in args.vlm_batches.split(",")]
            vbundle = Path(tmp) / "vlm-bundle"
            console.print(f"exporting the VLM vision path {args.vlm_model} in a child process …")
            results["vlm_export"] = export_in_child(args.vlm_model, "none", vbundle, max(vlm_batches))
            console.print("timing the VLM vision path: PyTorch eager vs ONNX Runtime CPU (interleaved) …")
            results["vlm_latency"] = {"model": args.vlm_model,
                                      "batches": bench_latency(vbundle, vlm_batches, 2, max(5, args.iters // 2))}
        if not args.no_qwen:
            from vlm_bench import export_peak

            from tokcomp_edge.export.config import parse_image_size

            qbundle = Path(tmp) / "qwen-bundle"
            console.print(f"exporting the Qwen-VL vision path {args.qwen_model} at {args.qwen_tile} in a child process …")
            results["qwen_export"] = export_peak(args.qwen_model, qbundle, "none", 1,
                                                 image_size=parse_image_size(args.qwen_tile))
            console.print("timing it: PyTorch eager vs ONNX Runtime CPU (interleaved) …")
            results["qwen_latency"] = {"model": args.qwen_model, "tile": args.qwen_tile,
                                       "batches": bench_latency(qbundle, [1], 1, max(3, args.iters // 5))}
        if not args.no_runtime:
            from runtime_bench import bench_runtime

            results["runtime"] = bench_runtime(Path(tmp), console)
        if not args.no_inside:
            from inside_bench import bench_tome, bench_tome_overhead, bench_visionzip

            results["tome"] = bench_tome(Path(tmp), console)
            results["tome_overhead"] = bench_tome_overhead(Path(tmp), console, Path(tmp) / "inside-tome-13")
            results["visionzip"] = bench_visionzip(Path(tmp), console)
        if not args.no_sweep:
            results["sweep"] = _sweep(Path(tmp), console, args)
    from importlib.metadata import version

    results["versions"] = {p: version(p) for p in ("torch", "onnxruntime-gpu", "onnx", "transformers")}
    return _write(results, console, lambda: _print_latency(console, args, results))


def _sweep(tmp: Path, console, args) -> dict:
    from sweep_bench import PAIRS, bench_sweep

    return bench_sweep(tmp, console, pairs=args.sweep_pairs or PAIRS, folder=args.sweep_fixture)


def _write(results: dict, console, show) -> int:
    dest = ROOT / "benchmarks" / "results"
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / f"bench-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    show()
    console.print(f"written {path.relative_to(ROOT)}")
    return 0


def _print_latency(console, args, results: dict) -> None:
    console.print(latency_table(f"{args.model} {args.compress} — export {results['export']['wall_s']} s, "
                                f"peak RSS {results['export']['peak_rss_mib']} MiB", results["latency"]))
    worst = max(r["ratio_ort_fp32_over_torch_median"] for r in results["latency"].values())
    verdict = "meets" if worst <= TARGET_RATIO else "MISSES"
    console.print(f"ONNX Runtime / PyTorch median ratio: worst {worst:.2f} → {verdict} the ≤ {TARGET_RATIO} target")
    if "vlm_latency" in results:
        from vlm_bench import print_vlm

        print_vlm(results, console)
        v = results["vlm_latency"]
        console.print(latency_table(f"VLM vision path {v['model']} (tower + transform + projector) — export "
                                    f"{results['vlm_export']['wall_s']} s", v["batches"]))
    if "qwen_latency" in results:
        q = results["qwen_latency"]
        console.print(latency_table(f"Qwen-VL vision path {q['model']} at {q['tile']} (tower + merger) — export "
                                    f"{results['qwen_export']['wall_s']} s, peak RSS "
                                    f"{results['qwen_export']['peak_rss_mib']} MiB", q["batches"]))
    if "runtime" in results:
        from runtime_bench import print_runtime

        print_runtime(results["runtime"], console)
    if "tome" in results:
        from inside_bench import print_inside_extra, print_tome

        print_tome(results["tome"], console)
        print_inside_extra(results, console)
    if "sweep" in results:
        from sweep_bench import print_sweep

        print_sweep(results["sweep"], console)
    print_core(console, results["core_env"])


def latency_table(title: str, latency: dict):
    from rich.table import Table

    t = Table(title=title)
    for col in ("batch", "runtime", "median ms", "p90 ms", "vs PyTorch", "max |Δ|", "min cos",
                "fp16-rounded max |Δ| / min cos"):
        t.add_column(col)
    for b, row in latency.items():
        for name in ("pytorch_eager", "onnxruntime_fp32", "onnxruntime_fp16"):
            if name not in row:
                continue
            r = row[name]
            ratio = "" if name == "pytorch_eager" else f"{r['median_ms'] / row['pytorch_eager']['median_ms']:.2f}"
            if name == "onnxruntime_fp32":
                ratio = f"{row['ratio_ort_fp32_over_torch_median']:.2f} (median of pairs)"
            t.add_row(b, name, f"{r['median_ms']:.1f}", f"{r['p90_ms']:.1f}", ratio,
                      f"{r['max_abs_vs_torch']:.2e}" if "max_abs_vs_torch" in r else "",
                      f"{r['min_token_cosine_vs_torch']:.5f}" if "min_token_cosine_vs_torch" in r else "",
                      f"{r['emulated_max_abs_vs_torch']:.2e} / {r['emulated_min_token_cosine_vs_torch']:.5f}"
                      if "emulated_max_abs_vs_torch" in r else "")
    return t


if __name__ == "__main__":
    sys.exit(main())

"""The report's tables as plain rows, shared by the Markdown and HTML renderers (one source of wording)."""

from __future__ import annotations

from typing import Any

from .economics import fmt_flops
from .memory import fmt_bytes

Table = tuple[list[str], list[list[str]]]


def g(x: Any, digits: int = 3) -> str:
    """Compact number: 1.23e-05, 0.999987, 12.3; '—' for None."""
    if x is None:
        return "—"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float):
        if x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e5):
            return f"{x:.{digits - 1}e}"
        return f"{x:.{digits}g}"
    return str(x)


def cos(x: float | None) -> str:
    """Cosines live near 1: above 0.9999 show the distance to 1 (`1−2.3e-07`), else six decimals."""
    if x is None:
        return "—"
    if x >= 1.0:
        return "1"
    if x >= 0.9999:
        return f"1−{1.0 - x:.1e}"
    return f"{x:.6f}"


def verdict(report: dict[str, Any]) -> str:
    return "PASSED" if report.get("passed") else "FAILED"


def ran_on(report: dict[str, Any]) -> str:
    rt = report["target"].get("runtime") or {}
    if rt.get("runtime") == "onnxruntime":
        text = f"ONNX Runtime {rt.get('version')} — {', '.join(rt.get('providers') or [])}"
        if rt.get("graph_optimization"):  # the one session loader's settings (core/ort_session.py)
            text += f" ({rt['graph_optimization']})"
        rounding = rt.get("fp16_rounding")
        return f"{text}; {rounding}" if rounding and rounding != "native" else text
    if rt.get("runtime") == "tensorrt":
        return f"TensorRT {rt.get('version')}"
    return str(rt.get("runtime", "?"))


def summary_rows(report: dict[str, Any]) -> list[list[str]]:
    t, b = report["target"], report["bundle"]
    comp, enc = b.get("compression") or {}, b.get("encoder") or {}
    torch = report["reference"]["pytorch"]
    weights = enc.get("weights") or {}
    wdesc = (f"random (seed {weights.get('seed')}) — not trained weights" if weights.get("kind") == "random"
             else weights.get("path") or "—")
    rows = [
        ["verdict", verdict(report)],
        ["target", f"{t['kind']} · {t['path']}"],
        ["variant / precision", f"{t['variant']} / {t['precision']}"],
        ["ran on", ran_on(report)],
        ["bundle", f"{b['name']} ({b['path']}), manifest sha256 {b['manifest_sha256'][:12]}…, "
                   f"{len(b.get('files_verified', []))} files verified"],
        ["encoder", f"{enc.get('name')} ({enc.get('family')}), {enc.get('image_size')} px, patch {enc.get('patch_size')}, "
                    f"layer {enc.get('layer')}, weights {wdesc}"],
        ["compression", compression_text(b)],
        *([["vlm", f"{vlm.get('family')} ({vlm.get('transformers_class')}), feature layer {vlm.get('feature_layer')}: "
                   f"{vlm.get('arithmetic')} (the VLM itself: {vlm.get('native_tokens_per_tile')} per tile)"]]
          if (vlm := b.get("vlm")) else []),
        ["PyTorch reference", ("used — " + (torch.get("runtime") or {}).get("version", "")) if torch.get("used")
                              else f"not used: {torch.get('reason')}"],
        ["created", f"{report['created_utc']} on {report.get('host', '?')}, {report.get('duration_s')} s"],
    ]
    return rows


def accuracy_table(report: dict[str, Any]) -> Table:
    """Worst case per output over all comparisons, next to its thresholds."""
    head = ["output", "result", "max abs err", "mean abs err", "rel L2 err", "cos min", "cos p1", "cos mean",
            "Jaccard min / mean", "thresholds"]
    rows = []
    tols = report.get("tolerances", {})
    for out, s in report["accuracy"]["summary"].items():
        t = tols.get(out, {})
        thr = []
        if s.get("kind") == "indices":
            thr.append(f"Jaccard ≥ {g(t.get('min_jaccard'))}")
        else:
            if t.get("atol") is not None:
                thr.append(f"|Δ| ≤ {g(t['atol'])} + {g(t.get('rtol'))}·|ref|")
            if t.get("max_rel_l2") is not None:
                thr.append(f"rel L2 ≤ {g(t['max_rel_l2'])}")
            if t.get("min_cosine") is not None:
                thr.append(f"cos ≥ {t['min_cosine']:g}")
        jac = (f"{g(s.get('jaccard_min'), 4)} / {g(s.get('jaccard_mean'), 4)}"
               if s.get("jaccard_min") is not None else "—")
        rows.append([out, "pass" if s["passed"] else "FAIL", g(s.get("max_abs_err")), g(s.get("mean_abs_err")),
                     g(s.get("rel_l2_err")), cos(s.get("cosine_min")), cos(s.get("cosine_p1")),
                     cos(s.get("cosine_mean")), jac, "; ".join(thr) or "—"])
    return head, rows


def checks_table(report: dict[str, Any]) -> Table:
    head = ["compared with", "batch", "output", "result", "max abs err", "rel L2 err", "cos min", "cos p1",
            "Jaccard mean", "failures"]
    rows = []
    for c in report["accuracy"]["checks"]:
        m = c.get("metrics", {})
        rows.append([c["source"], str(c["batch"]), c["output"], "pass" if c["passed"] else "FAIL",
                     g(m.get("max_abs_err")), g(m.get("rel_l2_err")), cos(m.get("cosine_min")),
                     cos(m.get("cosine_p1")), g(m.get("jaccard_mean"), 4), "; ".join(c.get("failures", [])) or "—"])
    return head, rows


def latency_table(report: dict[str, Any]) -> Table:
    head = ["runner", "batch", "mean ms", "p50 ms", "p90 ms", "p99 ms", "images/s", "tokens/s",
            "speed-up vs PyTorch (median of interleaved pairs)"]
    lat = report["latency"]
    speed = lat.get("speedup_vs_pytorch", {})
    rows = []
    for r in sorted(lat["runs"], key=lambda r: (r["batch"], r["runner"] != "target")):
        sp = speed.get(str(r["batch"])) if r["runner"] == "target" else None
        rows.append([r["runner"], str(r["batch"]), f"{r['mean_ms']:.3f}", f"{r['p50_ms']:.3f}", f"{r['p90_ms']:.3f}",
                     f"{r['p99_ms']:.3f}", f"{r['images_per_s']:.1f}", f"{r['tokens_per_s']:.0f}",
                     f"{sp:.2f}×" if sp else "—"])
    return head, rows


def memory_rows(report: dict[str, Any]) -> list[list[str]]:
    mem = report["memory"]
    rows = []
    for key, label in (("host_target", "host RSS, target"), ("host_pytorch", "host RSS, PyTorch")):
        h = mem.get(key)
        if h:
            scope = "this phase" if h.get("isolated") else "process peak so far"
            rows.append([label, f"peak {fmt_bytes(h.get('peak_bytes'))} ({scope}), at start {fmt_bytes(h.get('baseline_bytes'))}"])
    for key, label in (("gpu_target", "GPU, target"), ("gpu_pytorch", "GPU, PyTorch")):
        gpu = mem.get(key)
        if gpu:
            rows.append([label, ", ".join(f"{k.replace('_bytes', '').replace('_', ' ')} "
                                          f"{fmt_bytes(v) if isinstance(v, int) else v}" for k, v in gpu.items())])
    if not any(mem.get(k) for k in ("gpu_target", "gpu_pytorch")):
        rows.append(["GPU", "no GPU ran the model"])
    return rows


def token_unit(report: dict[str, Any]) -> str:
    """What one row of the batch is: a VLM's processor cuts an image into tiles (InternVL up to 13), so its
    token figures are per tile; a bare tower's are per image."""
    return "tile" if report["bundle"].get("vlm") else "image"


def compression_text(bundle: dict[str, Any]) -> str:
    """The compression row: spec, tokens in → the `tokens` output as the LLM gets it (tokens × dim), per
    image or tile; a VLM path's tower-side step is in its own row (`vlm`)."""
    comp = bundle.get("compression") or {}
    unit = "tile" if bundle.get("vlm") else "image"
    shape = bundle.get("tokens_shape")
    if shape:
        out = f"{shape[0]} tokens × {shape[1]} per {unit}" + (" (what the LLM gets)" if bundle.get("vlm") else "")
    else:
        out = f"{comp.get('tokens_out')} tokens × {comp.get('dim_out')} per {unit}"
    return f"{comp.get('spec')}: {comp.get('tokens_in')} tokens × {comp.get('dim_in')} → {out}"


def economics_table(report: dict[str, Any]) -> Table:
    e = report["economics"]
    head = ["LLM", "d / L / m / heads (kv)", "prefill uncompressed", "prefill compressed", f"saved per {token_unit(report)}",
            "KV cache saved (fp16)"]
    rows = []
    for s in e["llms"]:
        llm = s["llm"]
        rows.append([llm["name"], f"{llm['hidden']} / {llm['layers']} / {llm['mlp']} / {llm['heads']} ({llm['kv_heads']})",
                     fmt_flops(s["flops_uncompressed"]), fmt_flops(s["flops_compressed"]),
                     f"{fmt_flops(s['flops_saved'])} ({s['saved_fraction']:.1%})", fmt_bytes(int(s["kv_cache_bytes_saved"]))])
    return head, rows


def environment_rows(report: dict[str, Any]) -> list[list[str]]:
    env = report["environment"]
    pk = ", ".join(f"{k} {v}" for k, v in env.get("packages", {}).items() if v)
    gpus = "; ".join(x.get("model", x.get("bus", "?")) for x in env.get("gpus", [])) or "none"
    return [["python", f"{env.get('python')} on {env.get('platform')}"],
            ["CPU", f"{env.get('cpu')} ({env.get('cpu_count')} logical cores)"],
            ["board", env.get("board") or "—"],
            ["GPU", gpus + (f" — driver {env['nvidia_driver']}" if env.get("nvidia_driver") else "")],
            ["ONNX Runtime providers available", ", ".join(env.get("onnxruntime_available_providers") or []) or "—"],
            ["packages", pk]]

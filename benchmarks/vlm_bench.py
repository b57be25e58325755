"""The VLM part of `make bench`: peak memory of exporting a VLM's vision path next to a large LLM, and
ONNX Runtime vs PyTorch latency of one VLM vision path.

Memory: two checkpoint folders with the same vision tower and projector, one with an LLM ~10× the size
of the vision part (sharded safetensors, as real VLMs ship), one with a token LLM. Each export runs in its
own child process, which reports its own peak RSS. Target: the big one peaks at no more than the small
one plus 25 % of the LLM's bytes — i.e. the LLM is never materialised.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_SHARE = 0.25

VISION = dict(model_type="clip_vision_model", hidden_size=512, num_hidden_layers=8, num_attention_heads=8,
              intermediate_size=2048, patch_size=16, image_size=224)


def _text(layers: int, mlp: int, vocab: int) -> dict:
    return dict(model_type="llama", hidden_size=2048, num_hidden_layers=layers, num_attention_heads=16,
                num_key_value_heads=16, intermediate_size=mlp, vocab_size=vocab)


def write_vlm(folder: Path, text: dict, shard_bytes: int = 400 << 20) -> dict:
    """A LLaVA-style checkpoint: real random vision tower + projector, LLM tensors as zeros (never read).

    Returns the byte counts of the vision path and of the LLM as written.
    """
    import torch
    import transformers as T
    from safetensors.torch import save_file

    cfg = T.LlavaConfig(vision_config=VISION, text_config=text, vision_feature_layer=-2, image_token_index=3)
    with torch.device("meta"):
        meta = T.LlavaForConditionalGeneration(cfg)
    torch.manual_seed(0)
    vision = T.CLIPVisionModel(cfg.vision_config)
    from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

    proj = LlavaMultiModalProjector(cfg)
    tensors = {f"model.vision_tower.{k}": v.contiguous() for k, v in vision.state_dict().items()}
    tensors.update({f"model.multi_modal_projector.{k}": v.contiguous() for k, v in proj.state_dict().items()})
    vision_bytes = sum(v.numel() * v.element_size() for v in tensors.values())
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(cfg.to_json_string())
    shards, current, size, llm_bytes = [], {}, 0, 0
    items = list(tensors.items()) + [(k, None) for k, p in meta.state_dict().items()
                                     if not k.startswith(("model.vision_tower.", "model.multi_modal_projector."))]
    shapes = dict(meta.state_dict())
    for k, v in items:
        if v is None:  # an LLM tensor: zeros of its real shape and dtype
            v = torch.zeros(shapes[k].shape, dtype=shapes[k].dtype)
            llm_bytes += v.numel() * v.element_size()
        current[k] = v
        size += v.numel() * v.element_size()
        if size >= shard_bytes:
            shards.append(current)
            current, size = {}, 0
    if current:
        shards.append(current)
    weight_map = {}
    for i, shard in enumerate(shards, 1):
        name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(folder / name), metadata={"format": "pt"})
        weight_map.update({k: name for k in shard})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return {"vision_path_mib": round(vision_bytes / 2**20, 1), "llm_mib": round(llm_bytes / 2**20, 1),
            "shards": len(shards)}


def export_peak(model: str, out: Path, compress: str = "none", batch_max: int = 2, **extra) -> dict:
    """Export in a child that reports its own peak RSS: VmHWM of /proc/self/status, which belongs to the
    child's address space. (getrusage's ru_maxrss is not reset by exec on Linux: a child started by a parent
    that once held 2.6 GB reports at least that, whatever it did itself.)"""
    code = ("import json; from pathlib import Path; from tokcomp_edge.export import ExportConfig, "
            f"export_bundle; export_bundle(ExportConfig(model={model!r}, compress={compress!r}, "
            f"out=Path({str(out)!r}), batch_max={batch_max}, force=True, quiet=True"
            + "".join(f", {k}={v!r}" for k, v in extra.items()) + ")); "
            "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')][0].split()[1]; "
            "print(json.dumps({'peak_kib': int(hwm)}))")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    peak = json.loads(proc.stdout.strip().splitlines()[-1])["peak_kib"]
    return {"wall_s": round(wall, 2), "peak_rss_mib": round(peak / 1024, 1)}


def bench_vlm_memory(tmp: Path, console) -> dict:
    console.print("VLM memory: writing a LLaVA-style checkpoint with a large LLM and one with a token LLM …")
    big = write_vlm(tmp / "vlm-big", _text(layers=5, mlp=5632, vocab=32000))
    small = write_vlm(tmp / "vlm-small", _text(layers=1, mlp=32, vocab=16))
    console.print(f"  vision path {big['vision_path_mib']} MiB, LLM {big['llm_mib']} MiB "
                  f"({big['llm_mib'] / big['vision_path_mib']:.1f}×) in {big['shards']} shards; exporting both …")
    alone = export_peak(f"hf:{tmp / 'vlm-small'}", tmp / "b-small")
    full = export_peak(f"hf:{tmp / 'vlm-big'}", tmp / "b-big")
    budget = alone["peak_rss_mib"] + TARGET_SHARE * big["llm_mib"]
    return {"checkpoint": big, "small_llm_checkpoint": small, "export_with_token_llm": alone,
            "export_with_large_llm": full, "budget_mib": round(budget, 1),
            "extra_mib": round(full["peak_rss_mib"] - alone["peak_rss_mib"], 1),
            "meets_target": full["peak_rss_mib"] <= budget}


def print_vlm(results: dict, console) -> None:
    from rich.table import Table

    m = results.get("vlm_memory")
    if m:
        t = Table(title="VLM export peak memory (LLaVA-style checkpoint, same vision path)")
        for col in ("checkpoint", "LLM MiB", "export wall s", "peak RSS MiB"):
            t.add_column(col)
        t.add_row("token LLM", f"{m['small_llm_checkpoint']['llm_mib']}", f"{m['export_with_token_llm']['wall_s']}",
                  f"{m['export_with_token_llm']['peak_rss_mib']}")
        t.add_row(f"LLM {m['checkpoint']['llm_mib'] / m['checkpoint']['vision_path_mib']:.1f}× the vision path",
                  f"{m['checkpoint']['llm_mib']}", f"{m['export_with_large_llm']['wall_s']}",
                  f"{m['export_with_large_llm']['peak_rss_mib']}")
        console.print(t)
        verdict = "meets" if m["meets_target"] else "MISSES"
        console.print(f"extra peak with the large LLM: {m['extra_mib']} MiB; budget +{TARGET_SHARE:.0%} of the LLM = "
                      f"{m['budget_mib']} MiB in all → {verdict} the target")

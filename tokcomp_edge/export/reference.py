"""Golden inputs and the PyTorch outputs for them, plus the ONNX Runtime parity check at export."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .bundle import reference_key
from .config import ParityResult, Tolerance


def reference_batches(batch_min: int, batch_max: int) -> list[int]:
    """Batch sizes of the golden reference: the smallest allowed and one larger (4 when in range)."""
    second = min(batch_max, max(batch_min + 1, 4))
    return sorted({batch_min, second})


def golden_inputs(image_size: tuple[int, int], mean, std, batches: list[int], seed: int) -> dict[int, np.ndarray]:
    """Seeded 8-bit images, scaled to [0, 1] and normalised with the encoder's mean/std (float32 NCHW).

    Realistic input statistics matter: normalised noise exercises the same value range as photos. The
    pixels are whole 8-bit values so that the uint8 frames are recoverable exactly from the reference,
    and an `nhwc` (uint8-input) variant or engine can be checked against the same golden outputs.
    """
    rng = np.random.default_rng(seed)
    h, w = image_size
    m = np.asarray(mean, dtype=np.float32).reshape(1, 3, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(1, 3, 1, 1)
    out = {}
    for b in batches:
        pixels = rng.integers(0, 256, size=(b, 3, h, w), dtype=np.uint8).astype(np.float32) / np.float32(255)
        out[b] = ((pixels - m) / s).astype(np.float32)
    return out


def torch_outputs(model, x: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
    import torch

    with torch.no_grad():
        y = model(torch.from_numpy(x))
    ys = y if isinstance(y, tuple) else (y,)
    return {n: t.numpy() for n, t in zip(names, ys)}


def ort_session(path: Path):
    """A CPU ONNX Runtime session with full graph optimisation and one thread per core."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = os.cpu_count() or 1
    opts.log_severity_level = 3
    # ORT 1.24's NCHWc layout transformer crashed the process on an AutoCast fp16 graph; ViTs have no
    # conv stack for it to speed up beyond the patch embedding, so it is off.
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"],
                                disabled_optimizers=["NchwcTransformer"])


def compare_outputs(ref: dict[str, np.ndarray], got: dict[str, np.ndarray], tol: Tolerance) -> dict[str, Any]:
    """Per-output error figures; `ok` per output. Index outputs (int) must match exactly."""
    result: dict[str, Any] = {}
    for name, r in ref.items():
        g = got[name]
        if g.shape != r.shape:
            result[name] = {"ok": False, "error": f"shape {list(g.shape)} != {list(r.shape)}"}
            continue
        if np.issubdtype(r.dtype, np.integer):
            mismatched = int((g != r).sum())
            result[name] = {"ok": mismatched == 0, "mismatched": mismatched}
            continue
        diff = np.abs(g.astype(np.float64) - r.astype(np.float64))
        scale = float(np.abs(r).max()) if r.size else 0.0
        max_abs = float(diff.max()) if diff.size else 0.0
        denom = float(np.linalg.norm(r.astype(np.float64)))
        rel_l2 = float(np.linalg.norm(g.astype(np.float64) - r) / denom) if denom else 0.0
        bound = tol.bound(scale)
        result[name] = {"ok": max_abs <= bound, "max_abs": max_abs, "bound": bound, "scale": scale,
                        "rel_l2": rel_l2}
    return result


def check_parity(onnx_path: Path, inputs: dict[int, np.ndarray], expected: dict[int, dict[str, np.ndarray]],
                 tol: Tolerance) -> ParityResult:
    """Run the ONNX model on ONNX Runtime CPU and compare with the PyTorch outputs, batch by batch."""
    sess = ort_session(onnx_path)
    names = [o.name for o in sess.get_outputs()]
    per_batch: dict[str, dict[str, Any]] = {}
    for b, x in inputs.items():
        got = dict(zip(names, sess.run(names, {"pixel_values": x})))
        per_batch[f"b{b}"] = compare_outputs(expected[b], got, tol)
    passed = all(v["ok"] for res in per_batch.values() for v in res.values())
    return ParityResult(passed=passed, runtime=f"onnxruntime {_ort_version()} {sess.get_providers()[0]}",
                        tolerance={"atol": tol.atol, "rtol": tol.rtol}, per_batch=per_batch)


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def reference_arrays(inputs: dict[int, np.ndarray], outputs: dict[int, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    arrays = {}
    for b, x in inputs.items():
        arrays[reference_key("pixel_values", b)] = x
        for name, y in outputs[b].items():
            arrays[reference_key(name, b)] = y
    return arrays

"""Golden inputs and the PyTorch outputs for them, plus the ONNX Runtime parity check at export."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..core.bundle import reference_key
from ..core.comparison import OutputLayout
from ..core.comparison import compare_outputs as compare_outputs_core
from ..core.ort_session import ort_session, runtime_label
from ..core.target_checks import TargetLayout
from ..core.tolerance import Tolerance
from .config import ParityResult


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


def parity_target(plan, outputs_io: list[dict[str, Any]]) -> TargetLayout:
    """What the exported model's outputs must be alone (the manifest-to-be): the plan's token arithmetic
    and the I/O entries' shapes."""
    return TargetLayout.from_outputs(plan.to_dict(), outputs_io)


def compare_outputs(ref: dict[str, np.ndarray], got: dict[str, np.ndarray], tol: Tolerance,
                    target: TargetLayout | None = None) -> dict[str, Any]:
    """Per-output figures of one batch through the one comparator: the ONNX Runtime outputs judged alone
    against `target` first (finite, shapes, indices, merge map, sizes), then every output as it is (same
    machine, same order: float outputs within atol + rtol·scale, integer ones — indices, merge maps —
    exactly); `ok` per output."""
    names = list(ref)
    checks = compare_outputs_core(got, ref, source="pytorch", tols={n: tol for n in names},
                                  layout=OutputLayout.plain(names, target))
    result: dict[str, Any] = {}
    for c in checks:
        m = c.metrics
        entry: dict[str, Any] = {"ok": c.passed, "max_abs": m.get("max_abs_err"), "bound": m.get("bound"),
                                 "scale": m.get("ref_max_abs"), "rel_l2": m.get("rel_l2_err")}
        if c.failures:
            entry["error"] = "; ".join(c.failures)
        result[c.output] = {k: v for k, v in entry.items() if v is not None}
    return result


def check_parity(onnx_path: Path, inputs: dict[int, np.ndarray], expected: dict[int, dict[str, np.ndarray]],
                 tol: Tolerance, target: TargetLayout | None = None, model=None) -> ParityResult:
    """Run the ONNX model on ONNX Runtime CPU and compare with the PyTorch outputs, batch by batch (each
    batch's outputs judged alone against `target` first).

    Args:
        model: the PyTorch module `expected` came from. With it, a ToMe merge map that differs from
            PyTorch's is judged by the score evidence (export/tome_parity.py): explained when it equals
            PyTorch's own with one near-tie decision (gap ≤ tol.score_atol) flipped, and the outputs then
            agree with that replay's within `tol`; the figures say which block and gap. Without it (or
            beyond the replay bound) a differing merge map fails.
    """
    sess = ort_session(onnx_path)
    names = [o.name for o in sess.get_outputs()]
    per_batch: dict[str, dict[str, Any]] = {}
    mm = target.merge_map if target is not None else None
    for b, x in inputs.items():
        got = dict(zip(names, sess.run(names, {"pixel_values": x})))
        res = compare_outputs(expected[b], got, tol, target)
        if model is not None and mm and mm in got and mm in res and not all(v["ok"] for v in res.values()):
            res = _judged_by_replay(model, x, expected[b], got, res, tol, target, mm)
        per_batch[f"b{b}"] = res
    passed = all(v["ok"] for res in per_batch.values() for v in res.values())
    return ParityResult(passed=passed, runtime=runtime_label(sess),
                        tolerance={**tol.to_dict(), "rtol_of": "max |PyTorch| of the output",
                                   "integer_outputs": "exact, or PyTorch's replay with one near-tie "
                                                      "merge decision flipped (ToMe, gap ≤ score_atol)"},
                        per_batch=per_batch)


def _judged_by_replay(model, x, expected, got, res, tol, target, mm) -> dict[str, Any]:
    """The batch judged again against PyTorch's replays when its merge map differs (the golden reference
    keeps PyTorch's own outputs: the replay only explains the target)."""
    from .tome_parity import explain_by_replay

    verdict = explain_by_replay(model, x, expected, got, list(expected), mm, tol)
    if not verdict.notes:  # the maps agree: the failure is elsewhere, judged as it is
        return res
    if verdict.expected is not None:
        res = compare_outputs(verdict.expected, got, tol, target)
        if not all(v["ok"] for v in res.values()):
            verdict.notes.append("but the outputs differ from that replay's beyond the tolerance")
    res[mm]["replay"] = verdict.to_dict()
    if not res[mm]["ok"] or verdict.expected is None:
        res[mm]["error"] = "; ".join(filter(None, [res[mm].get("error"), *verdict.notes]))
    return res


def reference_arrays(inputs: dict[int, np.ndarray], outputs: dict[int, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    arrays = {}
    for b, x in inputs.items():
        arrays[reference_key("pixel_values", b)] = x
        for name, y in outputs[b].items():
            arrays[reference_key(name, b)] = y
    return arrays

"""The checks a variant must pass before it is registered in a bundle, on ONNX Runtime CPU.

Both go through the one comparator (core.comparison) with the one tolerance model (core.tolerance):
fp16: against the golden (PyTorch fp32) reference with the fp16 defaults `validate` uses, so a variant
the export accepts passes `tokcomp validate --variant fp16` on the same inputs; run through the fp16
emulation (fp16_emulation.py: what an fp16 engine computes) and natively; both must pass.
nhwc: against the NCHW model it wraps, on the same uint8 images, to core.tolerance.NHWC.

Prune bundles: both models' TopK score inputs are read from the graphs (core.scores), so a kept-set swap
the measured score error explains counts as agreeing, and a non-finite score error fails.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.comparison import (
    Check,
    CheckResult,
    OutputLayout,
    compare_outputs,
    summarize_checks,
)
from ..core.ort_session import runtime_label
from ..core.scores import ScoredSession, ScoreEvidence, ranking_topk, scored_session
from ..core.tolerance import Tolerance


def _tolerances(outputs: list[str], tol: Tolerance) -> dict[str, Tolerance]:
    return {name: tol for name in outputs}


def _topk(model_path: Path, outputs: list[str]) -> list[str]:
    import onnx

    return ranking_topk(onnx.load(str(model_path), load_external_data=False), "indices" in outputs)


def _run_checks(sess: ScoredSession, feeds: dict[int, np.ndarray], expected: dict[int, dict[str, np.ndarray]],
                ref_scores: dict[int, dict[str, np.ndarray]], *, source: str, tols: dict[str, Tolerance],
                layout: OutputLayout) -> list[Check]:
    checks: list[Check] = []
    for b, x in feeds.items():
        got, got_scores = sess.run("pixel_values", x if x.dtype == np.uint8 else x.astype(sess.input_dtype))
        got = {k: (v.astype(np.float32) if v.dtype == np.float16 else v) for k, v in got.items()}
        evidence = ScoreEvidence.from_runs(ref_scores[b], got_scores) if ref_scores.get(b) else None
        checks += compare_outputs(got, expected[b], source=source, tols=tols, layout=layout,
                                  evidence=evidence)
    return checks


def _failures(run: str, checks: list[Check]) -> list[str]:
    return [f"{run}, {c.where}: {f}" for c in checks for f in c.failures]


def check_fp16(variant: Path, fp32: Path, reference: dict[str, np.ndarray], batches: list[int],
               tol: Tolerance, layout: OutputLayout) -> CheckResult:
    """Run the fp16 variant on the golden inputs and compare with the golden (PyTorch) outputs.

    Two runs: the fp16 emulation (fp32 compute, every fp16 tensor rounded — what an fp16 engine
    computes; its figures are the check's) and the file as ONNX Runtime runs it natively (most ops
    upcast to fp32); both must pass. The emulation is skipped for graphs with control flow.

    Args:
        variant: the fp16 ONNX file; fp32: the bundle's model.onnx (only for the prune scores).
        reference: the bundle's reference.npz arrays; batches: its batch sizes.
        tol: thresholds for every output (core.tolerance.DEFAULTS["fp16"] unless overridden).
        layout: the bundle's token layout (OutputLayout.from_manifest).
    """
    import onnx

    from .fp16_emulation import emulate_fp16

    outputs = [o.name for o in onnx.load(str(fp32), load_external_data=False).graph.output]
    nodes = _topk(fp32, outputs)
    fp32_sess = scored_session(fp32, nodes)
    feeds = {b: reference[f"pixel_values.b{b}"] for b in batches}
    expected = {b: {n: reference[f"{n}.b{b}"] for n in outputs if f"{n}.b{b}" in reference} for b in batches}
    # The fp32 model runs only to read its prune scores (the golden reference has none).
    fp32_scores = {b: fp32_sess.run("pixel_values", x)[1] for b, x in feeds.items()} if fp32_sess.scores else {}
    tols = _tolerances(outputs, tol)
    native_sess = scored_session(variant, nodes)
    native = _run_checks(native_sess, feeds, expected, fp32_scores, source="golden", tols=tols, layout=layout)
    emulated_model = emulate_fp16(onnx.load(str(variant)))
    if emulated_model is None:
        checks, emulation = native, "unavailable (control-flow subgraphs): native run only"
        failures = _failures("native", native)
    else:
        checks = _run_checks(scored_session(emulated_model, nodes), feeds, expected, fp32_scores, source="golden",
                             tols=tols, layout=layout)
        emulation = "fp32 compute, every fp16 tensor rounded to fp16 (as the engine stores it)"
        failures = _failures("fp16 emulation", checks) + _failures("ONNX Runtime native", native)
    metrics = {"against": "golden reference (PyTorch fp32)", "batches": list(batches), "emulation": emulation,
               "runtime": runtime_label(native_sess.sess), "outputs": summarize_checks(checks),
               "onnxruntime_native": {"outputs": summarize_checks(native),
                                      "passed": all(c.passed for c in native)},
               "tolerance": tol.to_dict()}
    return CheckResult(bool(checks) and not failures, metrics, failures)


def uint8_images(batch: int, image_size: tuple[int, int], seed: int) -> np.ndarray:
    """Seeded random RGB frames, uint8 [B, H, W, 3] (what a camera hands the nhwc engine)."""
    h, w = image_size
    return np.random.default_rng(seed + batch).integers(0, 256, (batch, h, w, 3), dtype=np.uint8)


def nchw_from_uint8(images: np.ndarray, mean, std) -> np.ndarray:
    """The float NCHW input the base model expects: (x/255 − mean)/std in float32, same op order as
    the graph the nhwc wrapper adds."""
    m = np.asarray(mean, dtype=np.float32).reshape(1, 3, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(1, 3, 1, 1)
    x = images.astype(np.float32).transpose(0, 3, 1, 2)
    return ((x / np.float32(255.0) - m) / s).astype(np.float32)


def check_nhwc(variant: Path, base: Path, *, mean, std, image_size: tuple[int, int], batches: list[int],
               seed: int, tol: Tolerance, layout: OutputLayout) -> CheckResult:
    """Feed the same uint8 images to the nhwc variant and, normalised in numpy, to its NCHW base.

    Both runs use the same weights and precision, so outputs must agree to fp32 tolerance and indices
    exactly (bar swaps explained by a score difference between the two runs). Both models run through
    the fp16 emulation (a no-op for fp32 graphs): natively, ONNX Runtime would skip the wrapper's
    fp32 → fp16 input cast while the base is fed real fp16 values, a difference no engine has.
    """
    import onnx

    from .fp16_emulation import emulate_fp16

    outputs = [o.name for o in onnx.load(str(base), load_external_data=False).graph.output]
    nodes = _topk(base, outputs)
    emulated = [emulate_fp16(onnx.load(str(m))) for m in (base, variant)]
    if any(e is None for e in emulated):  # control flow: run the files as they are
        emulated = [base, variant]
    base_sess, sess = scored_session(emulated[0], nodes), scored_session(emulated[1], nodes)
    frames = {b: uint8_images(b, image_size, seed) for b in batches}
    expected, base_scores = {}, {}
    for b, images in frames.items():
        ref, base_scores[b] = base_sess.run("pixel_values",
                                            nchw_from_uint8(images, mean, std).astype(base_sess.input_dtype))
        expected[b] = {k: (v.astype(np.float32) if v.dtype == np.float16 else v) for k, v in ref.items()}
    checks = _run_checks(sess, frames, expected, base_scores if base_sess.scores else {}, source=base.name,
                         tols=_tolerances(outputs, tol), layout=layout)
    failures = _failures("nhwc", checks)
    metrics = {"against": f"{base.name} on the same images normalised in numpy", "batches": list(batches),
               "images": f"uniform uint8 RGB, numpy default_rng(seed={seed} + batch)",
               "runtime": runtime_label(sess.sess), "outputs": summarize_checks(checks),
               "tolerance": tol.to_dict()}
    return CheckResult(bool(checks) and not failures, metrics, failures)

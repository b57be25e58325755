"""The check an int8 (Q/DQ) variant must pass before it is registered: ONNX Runtime CPU vs the golden reference.

Tolerances are the int8 defaults of the one tolerance model (core/tolerance.py DEFAULTS["int8"]), so a
variant that `calibrate` accepts also passes `tokcomp validate --variant int8` on the same inputs:
per-token cosine ≥ 0.95, relative L2 ≤ 0.1, no elementwise bound, and for prune bundles a mean
kept-set Jaccard ≥ 0.7 (tokens compared where both runs kept the same grid cell). Quantisation error
is a fraction of each tensor's quantisation step, so it scales with the data: only scale-free
thresholds make sense. They are a floor that catches a broken calibration (a clipped range or a
wrong scale gives cosines well below 0.9 and rel L2 ≫ 0.1), not a promise of downstream accuracy.

How it runs: the Q/DQ graph goes through the fp16 emulation (export/fp16_emulation.py) — every op in
fp32, every tensor the model stores as fp16 rounded to fp16 — which is what a strongly typed engine
computes. The file is not run as it is because ONNX Runtime 1.24's CPU QuantizeLinear truncates fp16
inputs toward zero instead of rounding to nearest-even (microsoft/onnxruntime#18576, fixed upstream by
PR #32452): with ModelOpt's default fp16 high precision, half of all quantized values come out one step
low and the error grows ~4× (measured on tiny-clip: rel L2 0.28 natively vs 0.08 emulated). For an
fp32-high-precision graph the emulation changes nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..core.comparison import CheckResult


def check_int8(variant: Path, manifest: dict[str, Any], reference: dict[str, np.ndarray], batches: list[int],
               tolerances: dict[str, Any], held_out: tuple[np.ndarray, Path] | None = None) -> CheckResult:
    """Run the int8 variant on the bundle's golden inputs and judge it against the golden outputs; with
    `held_out`, also on calibration images that were kept out of the calibration.

    Golden inputs are uniform noise: they catch a broken calibration but not ranges that fit the
    calibration photos and nothing else. Held-back photos (real pixels the ranges were not measured on)
    are the check that speaks for images; both must pass.

    Args:
        variant: the Q/DQ ONNX file (float32 `pixel_values` input, as model.onnx).
        manifest: the bundle manifest (output names, compression layout for prune alignment).
        reference: the bundle's reference.npz arrays (`<tensor>.b<B>`).
        batches: reference batch sizes to run.
        tolerances: output name → core.tolerance.Tolerance.
        held_out: (pixel_values [N, 3, H, W] of the held-back images, the fp32 model.onnx whose outputs on
            them are the reference), or None.
    Returns:
        CheckResult (`metrics["held_out"]` with the held-back figures when given).
    """
    import onnx

    from ..core.comparison import OutputLayout, compare_outputs, summarize_checks
    from ..core.ort_session import runtime_label
    from ..core.scores import scored_session
    from ..export.fp16_emulation import emulate_fp16

    model = onnx.load(str(variant))
    emulated = emulate_fp16(model)
    how = ("fp16 emulation: every op in fp32, every fp16 tensor rounded to fp16 (as the engine stores it)"
           if emulated is not None else "as stored (control-flow subgraphs: no fp16 emulation)")
    sess = scored_session(emulated if emulated is not None else model, [])
    del model, emulated
    input_name = manifest["onnx"]["inputs"][0]["name"]
    outputs = [o["name"] for o in manifest["onnx"]["outputs"]]
    layout = OutputLayout.from_manifest(manifest)
    checks = []
    for b in batches:
        got, _ = sess.run(input_name, reference[f"{input_name}.b{b}"].astype(np.float32))
        expected = {n: reference[f"{n}.b{b}"] for n in outputs if f"{n}.b{b}" in reference}
        checks += compare_outputs(got, expected, source="golden", tols=tolerances, layout=layout)
    failures = [f"{c.where}: {f}" for c in checks for f in c.failures]
    metrics = {"against": "golden reference (PyTorch fp32)", "batches": list(batches),
               "runtime": runtime_label(sess.sess), "emulation": how,
               "outputs": summarize_checks(checks),
               "tolerance": {name: tol.to_dict() for name, tol in tolerances.items()}}
    passed = bool(checks) and not failures
    if held_out is not None:
        x, fp32 = held_out
        ref_sess = scored_session(fp32, [])
        expected, _ = ref_sess.run(input_name, x.astype(np.float32))
        got, _ = sess.run(input_name, x.astype(np.float32))
        held = compare_outputs(got, expected, source="held-out", tols=tolerances, layout=layout)
        held_failures = [f"{c.where}: {f}" for c in held for f in c.failures]
        metrics["held_out"] = {"images": int(len(x)), "against": "fp32 model.onnx on ONNX Runtime CPU",
                               "outputs": summarize_checks(held), "passed": bool(held) and not held_failures}
        failures += held_failures
        passed = passed and metrics["held_out"]["passed"]
    return CheckResult(passed, metrics, failures)

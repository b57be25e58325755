"""The checks a variant must pass before it is registered in a bundle, on ONNX Runtime CPU.

Both go through the one comparator (core.comparison) with the one tolerance model (core.tolerance):
fp16: against the golden (PyTorch fp32) reference with the fp16 defaults `validate` uses, so a variant
the export accepts passes `tokcomp validate --variant fp16` on the same inputs; run through the fp16
emulation (fp16_emulation.py: what an fp16 engine computes) and natively; both must pass.
nhwc: against the NCHW model it wraps, on the same uint8 images, to core.tolerance.NHWC.

Prune bundles: both models' TopK score inputs are read from the graphs (core.scores), so a kept-set swap
the measured score error explains counts as agreeing, and a non-finite score error fails.

ToMe bundles (fp16): a merge map that differs from the golden one is judged, when the fp32 PyTorch module
can be rebuilt (`TomeForcing`), by forcing PyTorch to take the variant's own merge decisions (read from
its per-block patch → row maps, export/tome_parity.py `explain_by_forcing`): every decision where they
differ from PyTorch's on the same tokens must be a near-tie in PyTorch's scores (≤ score_atol), and the
variant's outputs must then equal the forced run's within the fp16 tolerance; the golden per-image
Jaccard floor (min_image_jaccard) still holds. fp16 sits within its noise of many decisions at realistic
grids, so one flipped decision (export parity's replay) cannot explain it there.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

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


@dataclass
class TomeForcing:
    """How check_fp16 judges a differing ToMe merge map: the fp32 PyTorch module (built on first use, as
    rebuilding costs seconds and most variants never need it) and the merging blocks' patch → row tensors
    (manifest `blocks[].source`), in step order."""

    model: Callable[[], Any]
    sources: list[str]
    _built: Any = None

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> "TomeForcing | None":
        """For a ToMe bundle whose blocks carry their maps (None otherwise: older bundles stay strict)."""
        comp = manifest.get("compression") or {}
        blocks = {b["index"]: b.get("source") for b in manifest.get("blocks") or []}
        steps = [i for i, r in enumerate(comp.get("schedule") or []) if r]
        if comp.get("method") != "tome" or not steps or any(not blocks.get(i) for i in steps):
            return None

        def build():
            from .rebuild import model_from_manifest

            return model_from_manifest(manifest)

        return cls(build, [blocks[i] for i in steps])

    def module(self):
        if self._built is None:
            self._built = self.model()
        return self._built


def _judged_by_forcing(checks: list[Check], model_or_path, x: np.ndarray, got: dict[str, np.ndarray],
                       expected: dict[str, np.ndarray], outputs: list[str], *, source: str,
                       tols: dict[str, Tolerance], layout: OutputLayout, forcing: TomeForcing | None,
                       notes: list[str]) -> list[Check]:
    """One batch's checks again, against PyTorch forced to the variant's merge decisions, when its ToMe merge
    map differs and a check failed (otherwise as they are). What the forcing showed goes into `notes`."""
    from ..core.comparison_paired import NO_REPLAY
    from .tome_parity import explain_by_forcing

    mm = layout.merge_map
    if (forcing is None or layout.method != "tome" or not mm or all(c.passed for c in checks)
            or mm not in got or mm not in expected or np.array_equal(got[mm], expected[mm])):
        return checks
    import onnx

    from ..core.ort_session import session_with_outputs

    proto = onnx.load(str(model_or_path)) if isinstance(model_or_path, (str, Path)) else model_or_path
    sess = session_with_outputs(proto, {n: onnx.TensorProto.INT64 for n in forcing.sources})
    feed = x if x.dtype == np.uint8 or sess.get_inputs()[0].type != "tensor(float16)" else x.astype(np.float16)
    maps = [np.asarray(m) for m in sess.run(forcing.sources, {"pixel_values": feed})]
    try:
        model = forcing.module()
    except Exception as exc:  # noqa: BLE001 - a checkpoint or weights file gone: judged strictly, and said so
        why = [f"the PyTorch module could not be rebuilt to force the variant's decisions ({exc})"]
        verdict = None
    else:
        verdict = explain_by_forcing(model, x, expected, got, maps, outputs, mm, tols[mm])
        why = verdict.notes
    notes += [f"batch {len(x)}: {n}" for n in why]
    if verdict is None or verdict.expected is None:
        reason = "; ".join(why) or "the merge maps differ"
        return [Check(c.source, c.batch, c.output, c.kind, c.metrics, c.tolerance, c.passed,
                      [f.replace(NO_REPLAY, "") for f in c.failures]
                      + ([f"forcing PyTorch to the variant's merge decisions does not explain it: {reason}"]
                         if c.output == mm and not c.passed else []), c.grid) for c in checks]
    again = compare_outputs(got, {n: v for n, v in verdict.expected.items() if n in expected}, source=source,
                            tols=tols, layout=layout)
    floor = tols[mm].min_image_jaccard
    golden = next((c.metrics for c in checks if c.output == mm), {})
    raw = golden.get("jaccard_per_image") or []
    for c in again:
        c.metrics["against"] = "PyTorch fp32 forced to the variant's merge decisions"
        if c.output == mm:  # what the golden comparison said, kept beside the forced one
            c.metrics.update({f"golden_{k}": golden.get(k) for k in ("jaccard_mean", "jaccard_min",
                                                                     "patches_moved_total")})
        if c.output == mm and floor is not None and raw and not min(raw) >= floor:
            c.passed = False
            c.failures.append(f"image {int(np.argmin(raw))}: Jaccard of merge maps against the golden "
                              f"{min(raw):.4f} < {floor:g}, explained or not")
    if any(not c.passed for c in again):
        notes.append(f"batch {len(x)}: but the outputs differ from the forced run's beyond the tolerance")
    return again


def _tolerances(outputs: list[str], tol: Tolerance) -> dict[str, Tolerance]:
    return {name: tol for name in outputs}


def _topk(model_path: Path, outputs: list[str]) -> list[str]:
    import onnx

    return ranking_topk(onnx.load(str(model_path), load_external_data=False), "indices" in outputs)


def _run_checks(sess: ScoredSession, feeds: dict[int, np.ndarray], expected: dict[int, dict[str, np.ndarray]],
                ref_scores: dict[int, dict[str, np.ndarray]], *, source: str, tols: dict[str, Tolerance],
                layout: OutputLayout, forced: tuple[Any, TomeForcing, list[str], list[str]] | None = None
                ) -> list[Check]:
    """The checks of every batch; `forced` (the model the session runs, the forcing, the module's output
    names, the notes to fill) judges a differing ToMe merge map by _judged_by_forcing."""
    checks: list[Check] = []
    for b, x in feeds.items():
        got, got_scores = sess.run("pixel_values", x if x.dtype == np.uint8 else x.astype(sess.input_dtype))
        got = {k: (v.astype(np.float32) if v.dtype == np.float16 else v) for k, v in got.items()}
        evidence = ScoreEvidence.from_runs(ref_scores[b], got_scores) if ref_scores.get(b) else None
        batch = compare_outputs(got, expected[b], source=source, tols=tols, layout=layout, evidence=evidence)
        if forced is not None:
            model, forcing, names, notes = forced
            batch = _judged_by_forcing(batch, model, x, got, expected[b], names, source=source, tols=tols,
                                       layout=layout, forcing=forcing, notes=notes)
        checks += batch
    return checks


def _failures(run: str, checks: list[Check]) -> list[str]:
    return [f"{run}, {c.where}: {f}" for c in checks for f in c.failures]


def check_fp16(variant: Path, fp32: Path, reference: dict[str, np.ndarray], batches: list[int],
               tol: Tolerance, layout: OutputLayout, tome: TomeForcing | None = None) -> CheckResult:
    """Run the fp16 variant on the golden inputs and compare with the golden (PyTorch) outputs.

    Two runs: the fp16 emulation (fp32 compute, every fp16 tensor rounded — what an fp16 engine
    computes; its figures are the check's) and the file as ONNX Runtime runs it natively (most ops
    upcast to fp32); both must pass. The emulation is skipped for graphs with control flow.

    Args:
        variant: the fp16 ONNX file; fp32: the bundle's model.onnx (only for the prune scores).
        reference: the bundle's reference.npz arrays; batches: its batch sizes.
        tol: thresholds for every output (core.tolerance.DEFAULTS["fp16"] unless overridden).
        layout: the bundle's token layout (OutputLayout.from_manifest).
        tome: for a ToMe bundle, how to force PyTorch to the variant's merge decisions (TomeForcing); None:
            a differing merge map is judged as it is (min_jaccard).
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
    notes: dict[str, list[str]] = {"fp16 emulation": [], "ONNX Runtime native": []}
    native = _run_checks(native_sess, feeds, expected, fp32_scores, source="golden", tols=tols, layout=layout,
                         forced=(variant, tome, outputs, notes["ONNX Runtime native"]) if tome else None)
    emulated_model = emulate_fp16(onnx.load(str(variant)))
    if emulated_model is None:
        checks, emulation = native, "unavailable (control-flow subgraphs): native run only"
        failures = _failures("native", native)
    else:
        checks = _run_checks(scored_session(emulated_model, nodes), feeds, expected, fp32_scores, source="golden",
                             tols=tols, layout=layout,
                             forced=(emulated_model, tome, outputs, notes["fp16 emulation"]) if tome else None)
        emulation = "fp32 compute, every fp16 tensor rounded to fp16 (as the engine stores it)"
        failures = _failures("fp16 emulation", checks) + _failures("ONNX Runtime native", native)
    metrics = {"against": "golden reference (PyTorch fp32)", "batches": list(batches), "emulation": emulation,
               "runtime": runtime_label(native_sess.sess), "outputs": summarize_checks(checks),
               "onnxruntime_native": {"outputs": summarize_checks(native),
                                      "passed": all(c.passed for c in native)},
               "tolerance": tol.to_dict()}
    if any(notes.values()):
        metrics["tome_forced"] = [f"{run}, {n}" for run, ns in notes.items() for n in ns]
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

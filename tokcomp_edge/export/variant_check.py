"""The checks a variant must pass before it is registered in a bundle, on ONNX Runtime CPU.

fp16: against the golden (PyTorch fp32) reference, with fp16 tolerances (see `Fp16Tolerance`), run
through the fp16 emulation (fp16_emulation.py) and natively; both must pass.
nhwc: against the NCHW model it wraps, on the same uint8 images, to fp32 tolerance.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .variant_compare import (ScoredSession, aligned_rows, compare_indices, map_agreement, runtime_label,
                              score_topk_nodes, scored_session, token_errors)


@dataclass(frozen=True)
class Fp16Tolerance:
    """Accuracy an fp16 variant must keep against the fp32 golden reference.

    Why these numbers: fp16 stores 11 significant bits, a relative rounding error of 2^-11 ≈ 4.9e-4 per
    value; through a ViT's blocks the errors add up to ~1e-3 of the output scale (measured figures in
    the README, "How an fp16 variant is checked"), and the direction of each token barely moves (cosine ≈ 0.99999). A broken
    conversion (overflow to inf, a wrongly cast constant, a LayerNorm computed in fp16 from overflowing
    sums) moves tokens by O(1): cosine ≪ 0.99, error ≈ the scale.

    Merge maps (visionzip's `merge_map`): each non-dominant patch joins the target of highest key
    cosine; fp16 keys move those cosines by ~1e-3, so a patch whose two best targets are that close may
    join the other one. Such a move changes two contextual tokens by a fraction of one token each, which
    is why moved rows are left out of the token comparison and bounded here instead: on tiny-clip 1 of
    980 golden patches moved (ONNX Runtime native fp16); keys scrambled by a broken conversion leave
    about 1/C of the merged patches where they were, far below 0.9.

    Attributes:
        min_token_cosine: every token's cosine similarity to its reference token must reach this.
        max_error_ratio: max |fp16 − ref| must stay below this fraction of max |ref| (the output scale).
        min_index_agreement: prune outputs: in every image at least this share of the kept set must match
            (swaps explained by rounding are tolerated only this far; ties in flat regions swap a few).
        min_map_agreement: mean share of patches the merge map sends to the same output row as fp32.
    """

    min_token_cosine: float = 0.999
    max_error_ratio: float = 0.02
    min_index_agreement: float = 0.75
    min_map_agreement: float = 0.9


@dataclass(frozen=True)
class Fp32Tolerance:
    """Bound for the nhwc wrapper vs the NCHW model it wraps: |Δ| ≤ atol + rtol · max|ref|.

    The wrapper computes exactly what the NCHW path is fed ((x/255 − mean)/std in float32), so the two
    runs differ at most by float32 reassociation; 1e-5 of the scale is ~100× float32 epsilon while a
    wrong channel order, transpose or mean/std moves outputs by O(1).
    """

    atol: float = 1e-5
    rtol: float = 1e-5
    # float32 reassociation can move a patch of a merge map only on a near-exact tie of two targets.
    min_map_agreement: float = 0.99


def tolerance_dict(tol: Fp16Tolerance | Fp32Tolerance) -> dict[str, float]:
    return asdict(tol)


# --- the two checks ------------------------------------------------------------------------------


@dataclass
class CheckResult:
    """Outcome of a variant check; `metrics` go into the variant's manifest entry under `check`."""

    passed: bool
    metrics: dict[str, Any]

    def __bool__(self) -> bool:
        return self.passed

    def to_dict(self) -> dict[str, Any]:
        return {**self.metrics, "passed": self.passed}


def _input_dtype(sess) -> Any:
    return np.float16 if sess.get_inputs()[0].type == "tensor(float16)" else np.float32


def _accumulate(acc: dict[str, list], ref: dict[str, np.ndarray], got: dict[str, np.ndarray],
                ref_scores: np.ndarray | None, score_error: float | None, merged: int = 0) -> None:
    ref_idx, got_idx = ref.get("indices"), got.get("indices")
    ref_map, got_map = ref.get("merge_map"), got.get("merge_map")
    if ref_idx is not None and got_idx is not None:
        acc["indices"].append(compare_indices(ref_idx, got_idx, ref_scores, score_error))
    if ref_map is not None and got_map is not None:
        acc.setdefault("maps", []).append(map_agreement(ref_map, got_map))
    r, g = aligned_rows(ref["tokens"], got["tokens"].astype(np.float32), ref_idx, got_idx, merged, ref_map, got_map)
    acc["ref_rows"].append(r)
    acc["got_rows"].append(g)


def _summarise(acc: dict[str, list], score_errors: list[float]) -> dict[str, Any]:
    metrics: dict[str, Any] = token_errors(np.concatenate(acc["ref_rows"]), np.concatenate(acc["got_rows"]))
    if acc["indices"]:
        parts = acc["indices"]
        metrics["index_agreement"] = float(np.mean([p["index_agreement"] for p in parts]))
        metrics["min_index_agreement"] = float(min(p["min_index_agreement"] for p in parts))
        metrics["index_swaps"] = int(sum(p["index_swaps"] for p in parts))
        metrics["unexplained_swaps"] = int(sum(p["unexplained_swaps"] for p in parts))
        # max() skips NaN depending on order; a NaN or inf score error (fp16 overflow) must show as inf.
        finite = all(np.isfinite(e) for e in score_errors)
        metrics["score_error"] = (float(max(score_errors)) if finite else float("inf")) if score_errors else None
        metrics["matched_rows"] = int(sum(len(r) for r in acc["ref_rows"]))
    if acc.get("maps"):
        parts = acc["maps"]
        metrics["map_agreement"] = float(np.mean([p["map_agreement"] for p in parts]))
        metrics["min_map_agreement"] = float(min(p["min_map_agreement"] for p in parts))
        metrics["patches_moved"] = int(sum(p["patches_moved"] for p in parts))
    return metrics


def _topk_nodes(ref_model: Path, with_indices: bool) -> list[str]:
    import onnx

    nodes = score_topk_nodes(onnx.load(str(ref_model), load_external_data=False)) if with_indices else []
    return nodes if len(nodes) == 1 else []  # one ranking TopK = the prune; anything else: exact indices


def _score_error(ref_scores: dict[str, np.ndarray],
                 got_scores: dict[str, np.ndarray]) -> tuple[np.ndarray | None, float | None]:
    """The reference scores of the prune TopK and the largest score difference (None: no scores)."""
    node = next(iter(ref_scores), None)
    if node is None or node not in got_scores:
        return None, None
    return ref_scores[node], float(np.abs(ref_scores[node] - got_scores[node]).max(initial=0.0))


def _fp16_metrics(sess: ScoredSession, fp32_scores: dict[int, dict[str, np.ndarray]],
                  reference: dict[str, np.ndarray], batches: list[int], merged: int = 0) -> dict[str, Any]:
    dtype = _input_dtype(sess.sess)
    acc: dict[str, list] = {"indices": [], "ref_rows": [], "got_rows": []}
    errors: list[float] = []
    for b in batches:
        got, got_scores = sess.run("pixel_values", reference[f"pixel_values.b{b}"].astype(dtype))
        ref = {n: reference[f"{n}.b{b}"] for n in ("tokens", "indices", "merge_map") if f"{n}.b{b}" in reference}
        ref_scores, err = _score_error(fp32_scores[b], got_scores)
        if err is not None:
            errors.append(err)
        _accumulate(acc, ref, got, ref_scores, err, merged)
    metrics = _summarise(acc, errors)
    metrics["error_ratio"] = metrics["max_abs"] / metrics["scale"] if metrics["scale"] else 0.0
    return metrics


def _fp16_passed(m: dict[str, Any], tol: Fp16Tolerance) -> bool:
    ok = (m["min_token_cosine"] >= tol.min_token_cosine and m["error_ratio"] <= tol.max_error_ratio
          and m.get("unexplained_swaps", 0) == 0 and m.get("map_agreement", 1.0) >= tol.min_map_agreement)
    if "index_agreement" in m:
        # An index check must have compared something, with scores that are numbers, on sets that mostly agree.
        err = m.get("score_error")
        ok = (ok and m.get("matched_rows", 0) > 0 and m["min_index_agreement"] >= tol.min_index_agreement
              and (err is None or bool(np.isfinite(err))))
    return ok


def check_fp16(variant: Path, fp32: Path, reference: dict[str, np.ndarray], batches: list[int],
               tol: Fp16Tolerance, merged: int = 0) -> CheckResult:
    """Run the fp16 variant on the golden inputs and compare with the golden (PyTorch) outputs.

    Two runs: the fp16 emulation (fp32 compute, every fp16 tensor rounded — what an fp16 engine
    computes; its figures are the check's) and the file as ONNX Runtime runs it natively (most ops
    upcast to fp32); both must pass. The emulation is skipped for graphs with control flow.

    Args:
        variant: the fp16 ONNX file; fp32: the bundle's model.onnx (only for the prune scores).
        reference: the bundle's reference.npz arrays; batches: its batch sizes.
        merged: trailing tokens that carry no grid index (the manifest's compression.merged_out).
    """
    import onnx

    from .fp16_emulation import emulate_fp16

    nodes = _topk_nodes(fp32, any(k.startswith("indices.") for k in reference))
    fp32_sess = scored_session(fp32, nodes)
    # The fp32 model runs only to read its prune scores (the golden reference has none).
    fp32_scores = {b: (fp32_sess.run("pixel_values", reference[f"pixel_values.b{b}"])[1] if fp32_sess.scores else {})
                   for b in batches}
    native_sess = scored_session(variant, nodes)
    native = _fp16_metrics(native_sess, fp32_scores, reference, batches, merged)
    emulated_model = emulate_fp16(onnx.load(str(variant)))
    if emulated_model is None:
        metrics, emulation = dict(native), "unavailable (control-flow subgraphs): native run only"
    else:
        metrics = _fp16_metrics(scored_session(emulated_model, nodes), fp32_scores, reference, batches, merged)
        emulation = "fp32 compute, every fp16 tensor rounded to fp16 (as the engine stores it)"
    passed = _fp16_passed(metrics, tol) and _fp16_passed(native, tol)
    metrics.update({"against": "golden reference (PyTorch fp32)", "batches": list(batches),
                    "emulation": emulation, "runtime": runtime_label(native_sess.sess),
                    "onnxruntime_native": {k: native[k] for k in ("min_token_cosine", "max_abs", "error_ratio",
                                                                  "unexplained_swaps", "map_agreement") if k in native},
                    "tolerance": tolerance_dict(tol)})
    return CheckResult(passed, metrics)


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
               seed: int, tol: Fp32Tolerance, merged: int = 0) -> CheckResult:
    """Feed the same uint8 images to the nhwc variant and, normalised in numpy, to its NCHW base.

    Both runs use the same weights and precision, so outputs must agree to fp32 tolerance and indices
    exactly (bar swaps explained by a score difference between the two runs). Both models run through
    the fp16 emulation (a no-op for fp32 graphs): natively, ONNX Runtime would skip the wrapper's
    fp32 → fp16 input cast while the base is fed real fp16 values, a difference no engine has.
    """
    import onnx

    from .fp16_emulation import emulate_fp16

    outputs = [o.name for o in onnx.load(str(base), load_external_data=False).graph.output]
    nodes = _topk_nodes(base, "indices" in outputs)
    emulated = [emulate_fp16(onnx.load(str(m))) for m in (base, variant)]
    if any(e is None for e in emulated):  # control flow: run the files as they are
        emulated = [base, variant]
    base_sess, sess = scored_session(emulated[0], nodes), scored_session(emulated[1], nodes)
    base_dtype = _input_dtype(base_sess.sess)
    acc: dict[str, list] = {"indices": [], "ref_rows": [], "got_rows": []}
    errors: list[float] = []
    for b in batches:
        images = uint8_images(b, image_size, seed)
        ref, ref_all_scores = base_sess.run("pixel_values", nchw_from_uint8(images, mean, std).astype(base_dtype))
        got, got_scores = sess.run("pixel_values", images)
        ref = {k: (v.astype(np.float32) if k == "tokens" else v) for k, v in ref.items()}
        ref_scores, err = _score_error(ref_all_scores, got_scores)
        if err is not None:
            errors.append(err)
        _accumulate(acc, ref, got, ref_scores, err, merged)
    metrics = _summarise(acc, errors)
    metrics["bound"] = tol.atol + tol.rtol * metrics["scale"]
    passed = (metrics["max_abs"] <= metrics["bound"] and metrics.get("unexplained_swaps", 0) == 0
              and metrics.get("map_agreement", 1.0) >= tol.min_map_agreement)
    metrics.update({"against": f"{base.name} on the same images normalised in numpy", "batches": list(batches),
                    "images": f"uniform uint8 RGB, numpy default_rng(seed={seed} + batch)",
                    "runtime": runtime_label(sess.sess), "tolerance": tolerance_dict(tol)})
    return CheckResult(passed, metrics)

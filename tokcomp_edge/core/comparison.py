"""The one comparator: one runtime's outputs against expected ones, judged against core.tolerance.

Export parity, the fp16/nhwc/int8 variant checks, `validate` and `debug` all compare through
`compare_outputs`. Every comparison produces one Check per output, with its metrics, the tolerance it was judged by, and
one sentence per violated threshold (the report and the exit message quote them).

Prune outputs (`tokens` + `indices`): the kept grid-index sets are compared with the Jaccard index,
and `tokens` only where both runtimes kept the same grid cell (paired by grid index, so a different
order of equal sets is no error). A swap — a cell kept by one runtime and not the other — happens when
two scores tie within rounding; the `min_jaccard` threshold bounds how much of that is accepted
(fp32 accepts none).

Why not Polygraphy's Comparator: `Comparator.run` feeds inputs from its own DataLoader, while ours come
from the bundle's golden reference, real images and a PyTorch run made earlier in the same process; and
`compare_accuracy` judges elementwise atol/rtol only — it has no per-token cosine, no relative L2, and
no notion of two index outputs that may legitimately disagree on ties.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .metrics import (
    align_pruned,
    compare_tensors,
    cosine_grid,
    cosine_grid_pruned,
    elementwise_violations,
    map_jaccard,
    token_cosine,
)
from .check_summary import summarize_checks, worst_grid  # noqa: F401 - re-exported: callers import them here
from .scores import ScoreEvidence, explained_swaps
from .target_checks import TargetLayout, check_target
from .tolerance import Tolerance


@dataclass(frozen=True)
class OutputLayout:
    """How the compressed token sequence maps onto the image grid (from the manifest's compression)."""

    method: str
    prefix_out: int
    grid_in: tuple[int, int]
    grid_out: tuple[int, int] | None
    tokens: str = "tokens"
    indices: str | None = None
    merged_out: int = 0  # tokens after the indexed ones (VisionZip's contextual tokens)
    merge_map: str | None = None  # output row of each patch (visionzip, tome)
    target: TargetLayout | None = None  # what the target must be alone (core.target_checks)

    @classmethod
    def plain(cls, outputs: list[str], target: TargetLayout | None = None) -> "OutputLayout":
        """Every output compared elementwise as it is (export parity: same machine, same order); the
        target is still judged alone against `target` (the manifest-to-be) first."""
        return cls(method="none", prefix_out=0, grid_in=(0, 0), grid_out=None,
                   tokens=outputs[0] if outputs else "tokens", target=target)

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> "OutputLayout":
        # A hand-made bundle (a user's own ONNX) may have no compression section: no layout to use.
        comp = manifest.get("compression", {})
        outs = [o["name"] for o in manifest["onnx"]["outputs"]]
        idx = "indices" if "indices" in outs else None
        grid_out = comp.get("grid_out")
        if manifest.get("vlm"):
            # A VLM's tokens come after its own transform (pixel shuffle, pooling): their grid is the final one.
            grid_out = manifest.get("grid_out")
        gi = comp.get("grid_in") or manifest["encoder"].get("grid") or (0, 0)
        return cls(method=str(comp.get("method", "none")), prefix_out=int(comp.get("prefix_out", 0)),
                   grid_in=(int(gi[0]), int(gi[1])),
                   grid_out=(int(grid_out[0]), int(grid_out[1])) if grid_out else None,
                   tokens=next((o for o in outs if o != idx), outs[0]), indices=idx,
                   merged_out=int(comp.get("merged_out", 0) or 0),
                   merge_map="merge_map" if "merge_map" in outs else None,
                   target=TargetLayout.from_manifest(manifest))


@dataclass
class Check:
    """One output of one comparison, judged.

    Attributes:
        source: what the target was compared with: `golden` (bundle reference), `pytorch-seeded`,
            `pytorch-images`, or `pytorch-rebuild` (the rebuilt reference against the golden outputs).
        batch: images in the comparison.
        output: output name.
        kind: `tokens`, `indices` or `tensor`.
        metrics: TensorMetrics fields (+ prune agreement for `indices`, matched-token count for prune tokens).
        tolerance: the thresholds used.
        passed: all thresholds hold.
        failures: one sentence per violated threshold.
        grid: worst per-token cosine per grid cell (output grid; input grid for prune), for the heat-map.
    """

    source: str
    batch: int
    output: str
    kind: str
    metrics: dict[str, Any]
    tolerance: dict[str, Any]
    passed: bool
    failures: list[str] = field(default_factory=list)
    grid: list[list[float | None]] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def where(self) -> str:
        return f"{self.source} (batch {self.batch}) · {self.output}"


@dataclass
class CheckResult:
    """Outcome of a whole check (a variant's, the int8 check): `to_dict()` goes into the variant's
    manifest entry under `check`.

    Attributes:
        passed: every output of every batch met its tolerance (in every run the check makes).
        metrics: worst figures per output (`outputs`), what was compared, how it ran, the tolerance.
        failures: one sentence per violated threshold, naming the run, batch and output.
    """

    passed: bool
    metrics: dict[str, Any]
    failures: list[str]

    def __bool__(self) -> bool:
        return self.passed

    def to_dict(self) -> dict[str, Any]:
        return {**self.metrics, "failures": list(self.failures), "passed": self.passed}

    def failure_text(self, limit: int = 3) -> str:
        """The first few failure sentences on one line (the ParityError message)."""
        more = len(self.failures) - limit
        return "; ".join(self.failures[:limit]) + (f" (+{more} more)" if more > 0 else "")


def _g(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3g}"


def judge_tokens(metrics: dict[str, Any], actual: np.ndarray, expected: np.ndarray, tol: Tolerance) -> list[str]:
    """Sentences for every threshold `metrics` violates (empty list = pass)."""
    fails = []
    if not metrics.get("elements"):
        fails.append("0 elements compared: nothing was judged")
    if metrics.get("nonfinite"):
        fails.append(f"{metrics['nonfinite']} non-finite values (NaN/Inf) in the output")
    if tol.atol is not None:
        scale = metrics.get("ref_max_abs") or 0.0
        bound = tol.bound(scale)
        n_bad, worst = elementwise_violations(actual, expected, bound)
        metrics["bound"] = bound
        metrics["elementwise_violations"] = n_bad
        metrics["elementwise_worst_ratio"] = worst if np.isfinite(worst) else None
        if n_bad:
            fails.append(f"max abs error {_g(metrics['max_abs_err'])}: {n_bad} of {metrics['elements']} elements "
                         f"outside atol {tol.atol:g} + rtol {tol.rtol:g}·scale {_g(scale)} = {_g(bound)} "
                         f"(worst {_g(worst)}× the bound)")
    rel = metrics.get("rel_l2_err")
    if tol.max_rel_l2 is not None and not (rel is not None and rel <= tol.max_rel_l2):
        fails.append(f"rel L2 error {_g(rel)} > {tol.max_rel_l2:g}")
    cmin = metrics.get("cosine_min")
    if tol.min_cosine is not None and cmin is not None and not cmin >= tol.min_cosine:
        fails.append(f"min per-token cosine {cmin:.6f} < {tol.min_cosine:g} (image {metrics['worst_token'][0]}, "
                     f"token {metrics['worst_token'][1]})")
    return fails


def magnitude_fails(actual: np.ndarray, expected: np.ndarray, tol: Tolerance) -> list[str]:
    """The whole target tensor's largest magnitude against the reference's scale + the elementwise bound:
    rows a pairing leaves out (a swapped cell, a row with other patches) are not compared, but a finite
    1e30 there is no rounding either. Judged where the elementwise bound is (atol set)."""
    finite = np.abs(actual[np.isfinite(actual)].astype(np.float64))
    if tol.atol is None or not expected.size or not finite.size:
        return []
    scale = float(np.abs(expected.astype(np.float64)).max())
    top = float(finite.max())
    bound = scale + tol.bound(scale)
    if not (top <= bound):
        return [f"largest |value| of the whole target {top:.3g} > the reference's scale {scale:.3g} + bound "
                f"{tol.bound(scale):.3g} (unpaired rows included)"]
    return []


def compare_dense(actual: np.ndarray, expected: np.ndarray, *, source: str, output: str, tol: Tolerance,
                  layout: OutputLayout) -> Check:
    """Compare a grid-shaped (or any) output elementwise; an integer output (indices, a merge map) exactly."""
    if np.issubdtype(expected.dtype, np.integer) or np.issubdtype(actual.dtype, np.integer):
        return _compare_exact(actual, expected, source=source, output=output, tol=tol)
    try:
        m, cos = compare_tensors(actual, expected)
    except ValueError as exc:
        return Check(source, int(expected.shape[0]) if expected.ndim else 0, output, "tensor", {},
                     tol.to_dict(), False, [f"shape mismatch: {exc}"])
    md = m.to_dict()
    fails = judge_tokens(md, actual, expected, tol)
    grid = None
    if cos is not None and layout.grid_out and cos.shape[1] == layout.prefix_out + layout.grid_out[0] * layout.grid_out[1]:
        grid = cosine_grid(cos, layout.grid_out, layout.prefix_out)
    kind = "tokens" if cos is not None else "tensor"
    return Check(source, int(actual.shape[0]), output, kind, md, tol.to_dict(), not fails, fails, grid)


def _compare_exact(actual: np.ndarray, expected: np.ndarray, *, source: str, output: str, tol: Tolerance) -> Check:
    """Integer outputs are positions, not measurements: an index one off is another token, however large the
    grid, so they are never judged by atol + rtol·scale."""
    batch = int(expected.shape[0]) if expected.ndim else 0
    if actual.shape != expected.shape:
        return Check(source, batch, output, "indices", {}, tol.to_dict(), False,
                     [f"shape mismatch: {tuple(actual.shape)} vs {tuple(expected.shape)}"])
    differ = int((actual != expected).sum())
    m = {"elements": int(expected.size), "mismatches": differ, "compared": "exactly (integer output)",
         "max_abs_err": float(np.abs(actual.astype(np.float64) - expected.astype(np.float64)).max(initial=0.0))}
    fails = []
    if not expected.size:
        fails.append("0 elements compared: nothing was judged")
    if differ:
        pos = [int(i) for i in np.argwhere(actual != expected)[0]]
        fails.append(f"{differ} of {expected.size} integer values differ (first at {pos}: "
                     f"{actual[tuple(pos)]} vs {expected[tuple(pos)]}); integer outputs must match exactly")
    return Check(source, batch, output, "indices", m, tol.to_dict(), not fails, fails)


def _jaccard_fails(what: str, tol: Tolerance, mean: float, per_image: np.ndarray, detail: str) -> list[str]:
    fails = []
    if tol.min_jaccard is not None and not mean >= tol.min_jaccard:
        fails.append(f"mean Jaccard of {what} {mean:.4f} < {tol.min_jaccard:g} ({detail})")
    worst = float(per_image.min()) if per_image.size else 1.0
    if tol.min_image_jaccard is not None and not worst >= tol.min_image_jaccard:
        fails.append(f"image {int(np.argmin(per_image))}: Jaccard of {what} {worst:.4f} < "
                     f"{tol.min_image_jaccard:g}, explained or not")
    return fails


def compare_pruned(actual: dict[str, np.ndarray], expected: dict[str, np.ndarray], *, source: str,
                   tols: dict[str, Tolerance], layout: OutputLayout,
                   evidence: ScoreEvidence | None = None) -> list[Check]:
    """Compare prune outputs: kept-set agreement (`indices`) and the tokens both kept (`tokens`).

    With `evidence` (the reference's scores and the target's score error), swaps the error explains
    count as agreeing for the mean Jaccard; the per-image floor judges the raw sets.
    """
    tn, ixn = layout.tokens, layout.indices
    at, ai, et, ei = actual[tn], actual[ixn], expected[tn], expected[ixn]
    batch = int(et.shape[0])
    if at.shape != et.shape or ai.shape != ei.shape:
        msg = f"shape mismatch: tokens {tuple(at.shape)} vs {tuple(et.shape)}, indices {tuple(ai.shape)} vs {tuple(ei.shape)}"
        return [Check(source, batch, tn, "tokens", {}, tols[tn].to_dict(), False, [msg]),
                Check(source, batch, ixn, "indices", {}, tols[ixn].to_dict(), False, [msg])]
    cells = layout.grid_in[0] * layout.grid_in[1]
    mn = layout.merge_map if layout.merge_map in actual and layout.merge_map in expected else None
    am, em = (actual[mn], expected[mn]) if mn else (None, None)
    al = align_pruned(at, ai, et, ei, layout.prefix_out, cells, layout.merged_out, am, em)
    # indices check
    it = tols[ixn]
    k = int(ai.shape[1])
    explained = explained_swaps(ei, ai, evidence)
    eff = (k - al.swapped) + explained  # |A ∩ E| per image, explained swaps counted as agreeing
    judged = np.where(k > 0, eff / np.maximum(2 * k - eff, 1), 1.0)
    im = {"images": batch, "kept_per_image": k, "jaccard_mean": float(al.jaccard.mean()),
          "jaccard_min": float(al.jaccard.min()), "swapped_total": int(al.swapped.sum()),
          "images_with_swaps": int((al.swapped > 0).sum()), "invalid_total": int(al.invalid.sum()),
          "jaccard_per_image": [float(j) for j in al.jaccard]}
    if evidence is not None:
        im.update({"score_error": float(evidence.error) if evidence.usable else None,
                   "explained_swaps": int(explained.sum()),
                   "unexplained_swaps": int(al.swapped.sum() - explained.sum()),
                   "jaccard_mean_explained": float(judged.mean())})
    ifails = []  # indices off the grid or repeated: judged on the target alone (core.target_checks)
    if evidence is not None and not evidence.usable:
        ifails.append(f"the target's prune scores are not finite (score error {evidence.error}): fp16 overflow")
    ifails += _jaccard_fails("kept sets", it, float(judged.mean()), al.jaccard,
                             f"{im['swapped_total']} tokens swapped in {im['images_with_swaps']} of {batch} images"
                             + (f", {int(explained.sum())} explained by the score error" if evidence else ""))
    checks = [Check(source, batch, ixn, "indices", im, it.to_dict(), not ifails, ifails)]
    if mn:
        checks.append(_check_merge_map(am, em, source=source, tol=tols[mn], name=mn, rows=int(at.shape[1])))
    # tokens check, on the pairs
    tt = tols[tn]
    m, _ = compare_tensors(al.actual_tokens, al.expected_tokens)
    md = m.to_dict()
    md["matched_tokens"] = int(al.actual_tokens.shape[1])
    md["compared"] = "prefix tokens + tokens at grid cells both runtimes kept" + (
        " + merged tokens whose kept sets and member patches agree" if layout.merged_out else "")
    grid = None
    if al.actual_tokens.shape[1]:
        cos = token_cosine(al.actual_tokens[0], al.expected_tokens[0])
        cos = np.where(np.isfinite(cos), cos, -1.0)
        j = int(np.argmin(cos))
        md["worst_token"] = [int(al.image_of[j]), int(al.grid_of[j])]
        md["worst_token_is"] = "(image, grid cell; −1 = prefix token, −2 = merged token)"
        grid = cosine_grid_pruned(cos, al.image_of, al.grid_of, layout.grid_in)
    # No magnitude bound here: a swapped cell is another patch's token and may legitimately be larger.
    tfails = judge_tokens(md, al.actual_tokens, al.expected_tokens, tt)
    if md["matched_tokens"] == 0 and ai.shape[1] > 0:
        tfails.append("no kept token in common, nothing to compare")
    checks.insert(0, Check(source, batch, tn, "tokens", md, tt.to_dict(), not tfails, tfails, grid))
    return checks


def _check_merge_map(am: np.ndarray, em: np.ndarray, *, source: str, tol: Tolerance, name: str, rows: int) -> Check:
    """The merge map judged like kept sets: Jaccard of the (patch, row) pairs ≥ min_jaccard (1.0 in fp32)."""
    batch = int(em.shape[0])
    if am.shape != em.shape:
        return Check(source, batch, name, "indices", {}, tol.to_dict(), False,
                     [f"shape mismatch: {tuple(am.shape)} vs {tuple(em.shape)}"])
    jac = map_jaccard(am, em)
    moved = (am != em).sum(axis=-1)
    m = {"images": batch, "patches_per_image": int(em.shape[1]), "jaccard_mean": float(jac.mean()),
         "jaccard_min": float(jac.min()), "patches_moved_total": int(moved.sum()),
         "images_with_moves": int((moved > 0).sum()), "jaccard_per_image": [float(j) for j in jac],
         "compared": "(patch, output row) pairs: a/(2N−a) with a patches mapped to the same row"}
    # Entries outside the rows are judged on the target alone (core.target_checks).
    fails = _jaccard_fails("merge maps", tol, m["jaccard_mean"], jac,
                            f"{m['patches_moved_total']} patches merged elsewhere in {m['images_with_moves']} of {batch} images")
    return Check(source, batch, name, "indices", m, tol.to_dict(), not fails, fails)


def compare_merged(actual: dict[str, np.ndarray], expected: dict[str, np.ndarray], *, source: str,
                   tols: dict[str, Tolerance], layout: OutputLayout) -> list[Check]:
    """Compare ToMe outputs: the merge map like kept sets, `tokens` and `sizes` on the rows both runs built
    from the same patches (a merge decision that flipped on a near-tie changes which patches a row holds;
    those rows are not comparable, the map's Jaccard bounds how many there are)."""
    tn, mn = layout.tokens, layout.merge_map
    at, et, am, em = actual[tn], expected[tn], actual[mn], expected[mn]
    batch = int(et.shape[0])
    checks = [_check_merge_map(am, em, source=source, tol=tols[mn], name=mn, rows=int(et.shape[1]))]
    if at.shape != et.shape or am.shape != em.shape:
        msg = f"shape mismatch: tokens {tuple(at.shape)} vs {tuple(et.shape)}"
        return checks + [Check(source, batch, tn, "tokens", {}, tols[tn].to_dict(), False, [msg])]
    pa = []
    for b in range(batch):
        for row in range(et.shape[1]):
            if np.array_equal(am[b] == row, em[b] == row):  # same member patches (none: a prefix row)
                pa.append((b, row))
    rows_a = np.stack([at[b, r] for b, r in pa])[None] if pa else np.zeros((1, 0, et.shape[-1]), et.dtype)
    rows_e = np.stack([et[b, r] for b, r in pa])[None] if pa else np.zeros((1, 0, et.shape[-1]), et.dtype)
    m, _ = compare_tensors(rows_a, rows_e)
    md = m.to_dict()
    md["matched_tokens"] = len(pa)
    md["compared"] = "output rows both runtimes built from the same patches (prefix rows included)"
    tfails = judge_tokens(md, rows_a, rows_e, tols[tn]) + magnitude_fails(at, et, tols[tn])
    if not pa:
        tfails.append("no output row holds the same patches in both runs, nothing to compare")
    checks.insert(0, Check(source, batch, tn, "tokens", md, tols[tn].to_dict(), not tfails, tfails))
    sn = "sizes"
    if sn in expected and sn in actual:
        checks.append(_check_sizes(actual[sn], expected[sn], pa, source=source, tol=tols[sn], name=sn))
    return checks


def _check_sizes(actual: np.ndarray, expected: np.ndarray, pairs: list[tuple[int, int]], *, source: str,
                 tol: Tolerance, name: str) -> Check:
    """Sizes are patch counts: rows with the same members must count the same patches, within count_atol
    (0: exactly). NaN fails (`not (err <= bound)`); no paired row fails."""
    sa = np.asarray([actual[b, r] for b, r in pairs], np.float64)
    se = np.asarray([expected[b, r] for b, r in pairs], np.float64)
    worst = float(np.abs(sa - se).max()) if pairs else float("nan")
    m = {"elements": len(pairs), "max_abs_err": worst if np.isfinite(worst) else None, "compared_rows": len(pairs),
         "bound": tol.count_atol, "compared": "sizes of output rows both runs built from the same patches"}
    fails = []
    if not pairs:
        fails.append("0 rows compared: no row holds the same patches in both runs")
    elif not (worst <= tol.count_atol):
        fails.append(f"sizes differ by {worst:g} on rows with the same patches > count_atol {tol.count_atol:g}")
    return Check(source, int(expected.shape[0]), name, "tensor", m, tol.to_dict(), not fails, fails)


def _with_target(checks: list[Check], verdicts: dict) -> list[Check]:
    """Each output's target-alone verdict joins its Check: failures first, figures under `target`."""
    for c in checks:
        v = verdicts.get(c.output)
        if v is None:
            continue
        c.metrics["target"] = v.metrics
        if v.failures:
            c.failures = [f"target alone: {f}" for f in v.failures] + c.failures
            c.passed = False
    return checks


def compare_outputs(actual: dict[str, np.ndarray], expected: dict[str, np.ndarray], *, source: str,
                    tols: dict[str, Tolerance], layout: OutputLayout,
                    evidence: ScoreEvidence | None = None) -> list[Check]:
    """All checks of one comparison (every output present in `expected`).

    Args:
        actual: outputs of the runtime under test.
        expected: the outputs to match (golden reference or a PyTorch run).
        source: label of `expected` (see Check.source).
        tols: per-output tolerances.
        layout: token/grid layout from the manifest.
        evidence: the prune scores of reference and target (variant checks), which explain kept-set swaps.
    Returns:
        One Check per output.
    """
    verdicts = check_target({n: np.asarray(actual[n]) for n in expected if n in actual}, layout.target, tols)
    return _with_target(_compare_paired(actual, expected, source=source, tols=tols, layout=layout,
                                        evidence=evidence), verdicts)


def _compare_paired(actual: dict[str, np.ndarray], expected: dict[str, np.ndarray], *, source: str,
                    tols: dict[str, Tolerance], layout: OutputLayout,
                    evidence: ScoreEvidence | None = None) -> list[Check]:
    checks: list[Check] = []
    for name in expected:
        if name not in actual:
            checks.append(Check(source, int(expected[name].shape[0]), name, "tensor", {},
                                tols[name].to_dict(), False, [f"output {name} is missing from the target"]))
    if layout.indices and layout.indices in expected and layout.indices in actual and layout.tokens in actual:
        return checks + compare_pruned(actual, expected, source=source, tols=tols, layout=layout, evidence=evidence)
    if layout.method == "tome" and layout.merge_map in expected and layout.merge_map in actual \
            and layout.tokens in actual:
        return checks + compare_merged(actual, expected, source=source, tols=tols, layout=layout)
    for name in expected:
        if name in actual:
            checks.append(compare_dense(np.asarray(actual[name]), np.asarray(expected[name]), source=source,
                                        output=name, tol=tols[name], layout=layout))
    return checks

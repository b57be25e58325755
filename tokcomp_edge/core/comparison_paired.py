"""Outputs that must be paired before they are compared: prune's kept cells, ToMe's rows.

Prune (`tokens` + `indices`): kept sets by their Jaccard index (swaps the score evidence explains count as
agreeing for the mean), `tokens` only where both runs kept the same grid cell. ToMe (`tokens`, `sizes`,
`merge_map`): the merge map like kept sets, `tokens` and `sizes` on the rows both runs built from the same
patches. What the pairing leaves out is judged on the target alone first (core.target_checks).
"""

from __future__ import annotations

import numpy as np

from .comparison_dense import judge_tokens, magnitude_fails
from .comparison_types import Check, OutputLayout
from .metrics import align_pruned, compare_tensors, cosine_grid_pruned, map_jaccard, token_cosine
from .scores import ScoreEvidence, explained_swaps
from .tolerance import Tolerance


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


# Where a merge-map difference is judged by the score evidence, and what this comparator does not do: it
# has no PyTorch module to replay near-tie decisions with (export/tome_parity.py needs one), so a map
# that differs beyond min_jaccard fails as it is, and the sentence says where it would be judged. Where a
# PyTorch module is at hand (`validate --torch`: validation/tome_judge.py; the export's fp16 check:
# export/variant_check.py) the replays' or the forcing's verdict replaces it.
NO_REPLAY = ("; not judged by the match scores here: only export parity, the fp16 variant check and `validate "
             "--torch`, which run the PyTorch module, judge merge decisions by them (run them with the checkpoint "
             "available)")


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
    if fails:
        fails[-1] += NO_REPLAY
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

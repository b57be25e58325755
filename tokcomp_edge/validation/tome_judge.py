"""`validate --torch`: a ToMe merge map that differs from PyTorch's, judged by PyTorch's near-tie replays.

Export parity already judges this (export/tome_parity.py, issue 15 part 2b): a near-tie in ToMe's match
scores (a gap within Tolerance.score_atol) is a genuine numerical tie, so a target that decided it the other
way, and then merged other tokens in every later block, is right when its merge map equals PyTorch's run
with that one decision flipped and its outputs agree with that replay's. `validate` compares the target with
PyTorch in three places, and each gets the same judgement here when its merge map differs:

- `pytorch-seeded` / `pytorch-images`: the target against the PyTorch runner's run of the same images;
- `golden`: the target against the bundle's golden outputs (PyTorch's at export), replayed on the rebuilt
  module (a golden check run without PyTorch stays strict and says where it would be judged);
- `pytorch-rebuild`: the rebuilt module against the golden outputs (another device or torch version may
  take the other side of a tie), the roles swapped: the golden map must be one of the rebuilt module's
  replays.

The replays run on the very chunks the PyTorch runner ran (infer_batched's), so that their first run
reproduces the outputs being judged. Where no single flip explains a target's map (fp16 sits within its
noise of many decisions at realistic grids) and the target is an ONNX file of a ToMe bundle whose blocks
carry their patch → row maps (`forcing_maps`), PyTorch is forced to the target's own decisions instead
(export/tome_parity.py explain_by_forcing, the rule of the export's fp16 check): every decision where they
differ from PyTorch's on the same tokens must be a near-tie, and the target must equal the forced run
within the tolerance. Anything neither explains stays the failure it was, with the reasons added.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..core.comparison import Check, OutputLayout, compare_outputs
from ..core.comparison_paired import NO_REPLAY
from ..core.tolerance import Tolerance


@dataclass
class Rejudged:
    """The checks of one comparison after the replays, and what they showed.

    Attributes:
        checks: the comparison's checks (the original ones when nothing was replayed).
        notes: one sentence per differing image: the decision that explains it, or why none does.
        replays: PyTorch forwards run with a flipped decision.
    """

    checks: list[Check]
    notes: list[str] = field(default_factory=list)
    replays: int = 0


def _maps_differ(a: dict[str, np.ndarray], b: dict[str, np.ndarray], mm: str) -> bool:
    return mm in a and mm in b and np.shape(a[mm]) == np.shape(b[mm]) and not np.array_equal(a[mm], b[mm])


def needs_replay(checks: list[Check], actual: dict[str, np.ndarray], expected: dict[str, np.ndarray],
                 layout: OutputLayout) -> bool:
    """A ToMe comparison that failed while its merge maps differ (nothing else is replayed)."""
    mm = layout.merge_map
    return (layout.method == "tome" and bool(mm) and any(not c.passed for c in checks)
            and _maps_differ(actual, expected, mm))


def forcing_maps(runner, manifest) -> Callable[[np.ndarray], list[np.ndarray]] | None:
    """x (float32 NCHW) → the target's patch → row map after each ToMe step, for a target run on ONNX Runtime
    (OnnxRuntimeRunner, float input) of a ToMe bundle whose blocks carry the maps (export/variant_check.py
    TomeForcing); None for anything else (a TensorRT engine does not expose them). The maps come from a
    second session over the same graph (the emulated one for fp16 on CPU), same providers and threads;
    explain_by_forcing uses them only when that run's last map is the target's merge map being judged."""
    from ..export.variant_check import TomeForcing
    from .runners.onnxrt import OnnxRuntimeRunner

    forcing = TomeForcing.from_manifest(manifest)
    if forcing is None or not isinstance(runner, OnnxRuntimeRunner):
        return None
    state: dict = {}

    def maps(x: np.ndarray) -> list[np.ndarray]:
        if "sess" not in state:
            import onnx

            from ..core.ort_session import SessionSettings, session_with_outputs

            settings = SessionSettings(providers=tuple(runner.info.get("providers") or ("CPUExecutionProvider",)),
                                       threads=runner.threads or None)
            state["sess"] = session_with_outputs(runner.session_model(),
                                                 {n: onnx.TensorProto.INT64 for n in forcing.sources}, settings)
        sess = state["sess"]
        inp = sess.get_inputs()[0]
        if inp.type not in ("tensor(float)", "tensor(float16)"):
            return []
        feed = x.astype(np.float16 if inp.type == "tensor(float16)" else np.float32)
        return [np.asarray(m) for m in sess.run(forcing.sources, {inp.name: feed})]

    return maps


def rejudge(checks: list[Check], *, model, chunks: list[tuple[int, np.ndarray]], actual: dict[str, np.ndarray],
            expected: dict[str, np.ndarray], names: list[str], source: str, tols: dict[str, Tolerance],
            layout: OutputLayout, torch_is: str = "expected",
            target_maps: Callable[[np.ndarray], list[np.ndarray]] | None = None) -> Rejudged:
    """Judge a failed ToMe comparison again against PyTorch's near-tie replays.

    Args:
        checks: compare_outputs(actual, expected, ...) as it came out.
        model: the PyTorch module of the PyTorch side (TorchRunner.model).
        chunks: (first image, float32 NCHW input) of each forward the PyTorch side was made of.
        actual, expected: the compared outputs by name, over all images.
        names: the module's output names, in its output order.
        source: the comparison's label (Check.source).
        tols: per-output tolerances (the merge map's score_atol bounds a near-tie).
        layout: the manifest's output layout.
        torch_is: which side PyTorch's run is, `expected` (seeded, images; golden through the rebuilt
            module) or `actual` (the rebuild check: the golden map must be one of its replays).
        target_maps: forcing_maps of the target (`actual`), or None: where no single flip explains an
            image, PyTorch is forced to the target's own decisions (torch_is `expected` only).
    Returns:
        Rejudged: the checks compared against the replays when every differing image is explained,
        otherwise the original checks with the reasons added to the merge map's failures.
    """
    from ..export.tome_parity import ReplayVerdict, explain_by_forcing, explain_by_replay

    if not needs_replay(checks, actual, expected, layout):
        return Rejudged(checks)
    mm = layout.merge_map
    theirs, ours = (expected, actual) if torch_is == "expected" else (actual, expected)
    composite = {n: np.array(v, copy=True) for n, v in theirs.items()}
    notes: list[str] = []
    replays, explained = 0, True
    for start, x in chunks:
        stop = start + int(x.shape[0])
        mine = {n: np.asarray(v)[start:stop] for n, v in theirs.items()}
        other = {n: np.asarray(v)[start:stop] for n, v in ours.items()}
        if not _maps_differ(mine, other, mm):
            continue
        verdict = explain_by_replay(model, x, mine, other, names, mm, tols[mm])
        if verdict.expected is None and target_maps is not None and torch_is == "expected":
            maps = target_maps(x)
            if maps:
                forced = explain_by_forcing(model, x, mine, other, maps, names, mm, tols[mm])
                gist = "; ".join(verdict.notes)
                verdict = ReplayVerdict(forced.expected, [f"one flipped decision does not explain it ({gist}); "
                                                          f"{n}" for n in forced.notes] or verdict.notes,
                                        verdict.replays + forced.replays)
        replays += verdict.replays
        at = f"images {start}–{stop - 1}: " if len(chunks) > 1 else ""
        notes += [at + n for n in verdict.notes]
        if verdict.expected is None:
            explained = False
            continue
        for n, v in verdict.expected.items():
            if n in composite:
                composite[n][start:stop] = v
    if not explained:
        why = "; ".join(notes) or "the merge maps differ"
        # The comparator's "not judged here" pointer (core NO_REPLAY) is answered by the replays' verdict.
        out = [Check(c.source, c.batch, c.output, c.kind, c.metrics, c.tolerance, c.passed,
                     [f.replace(NO_REPLAY, "") for f in c.failures]
                     + ([f"PyTorch's near-tie replays do not explain it: {why}"] if c.output == mm and not c.passed
                        else []), c.grid) for c in checks]
        if all(c.passed or c.output != mm for c in checks):  # the failure was elsewhere: say it once, on it
            first = next(i for i, c in enumerate(out) if not c.passed)
            out[first].failures.append(f"PyTorch's near-tie replays do not explain the merge map: {why}")
        return Rejudged(out, notes, replays)
    pair = (actual, composite) if torch_is == "expected" else (composite, expected)
    again = compare_outputs(pair[0], pair[1], source=source, tols=tols, layout=layout)
    if any(not c.passed for c in again):
        notes.append("but the outputs differ from that replay's beyond the tolerance")
    return Rejudged(again, notes, replays)


def chunked(pixel_values: np.ndarray, hi: int) -> list[tuple[int, np.ndarray]]:
    """The (first image, input) chunks infer_batched(runner, ..., lo=1, hi) runs."""
    return [(s, np.ascontiguousarray(pixel_values[s:s + hi], dtype=np.float32))
            for s in range(0, len(pixel_values), hi)]


def torch_judged(checks: list[Check], runner, actual: dict[str, np.ndarray], expected: dict[str, np.ndarray],
                 pixel_values: np.ndarray, hi: int, *, source: str, tols: dict[str, Tolerance],
                 layout: OutputLayout, notes: list[str], torch_is: str = "expected",
                 target_maps: Callable[[np.ndarray], list[np.ndarray]] | None = None) -> list[Check]:
    """The checks of compare_outputs(actual, expected, ...) for a comparison with PyTorch's runner
    (TorchRunner, active) on one side, whose run was infer_batched(runner, ..., 1, hi) of `pixel_values`:
    a differing ToMe merge map judged by the replays (rejudge); what they showed goes into `notes` (the
    report's)."""
    r = rejudge(checks, model=runner.model, chunks=chunked(pixel_values, hi), actual=actual, expected=expected,
                names=runner.output_names, source=source, tols=tols, layout=layout, torch_is=torch_is,
                target_maps=target_maps)
    notes += [f"{source} (batch {len(pixel_values)}) · {layout.merge_map}: {n}" for n in r.notes]
    return r.checks


def golden_rejudged(checks: list[Check], runner, golden: dict[int, tuple[dict, dict, np.ndarray]], *,
                    tols: dict[str, Tolerance], layout: OutputLayout, notes: list[str],
                    target_maps: Callable[[np.ndarray], list[np.ndarray]] | None = None) -> list[Check]:
    """The golden checks again, each batch whose ToMe merge map differed judged by the rebuilt module's
    replays (golden: batch → (target outputs, golden outputs, golden pixel_values)); other checks as
    they were, after them."""
    out = []
    for b, (actual, expected, px) in golden.items():
        group = [c for c in checks if c.source == "golden" and c.batch == b]
        r = rejudge(group, model=runner.model, chunks=[(0, np.ascontiguousarray(px, dtype=np.float32))],
                    actual=actual, expected=expected, names=runner.output_names, source="golden", tols=tols,
                    layout=layout, target_maps=target_maps)
        notes += [f"golden (batch {b}) · {layout.merge_map}: {n}" for n in r.notes]
        out += r.checks
    return out + [c for c in checks if not (c.source == "golden" and c.batch in golden)]

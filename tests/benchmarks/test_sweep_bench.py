"""benchmarks/sweep_bench.py on a tiny subset (4 held-out pairs, 3 candidates) of the committed trained shapes
VLM: the table's columns, the task accuracy recounted independently from the sweep's own sweep.json (answer
token ids decoded here, compared with the held-out ground truth here), the per-budget verdicts, and the
statistics helpers against scipy."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

from benchmarks import shapes_vlm as V
from benchmarks import sweep_bench as B

PAIRS = 4


@pytest.fixture(autouse=True)
def _few_threads(one_torch_thread):
    """One PyTorch thread (tests/conftest.py says why)."""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sweep_bench")
    # The committed checkpoint, not fixture_path(): this tests the bench's bookkeeping, which holds for any
    # trained weights, and must not start a training run when the fixture's code is being changed.
    res = B.bench_sweep(tmp, Console(file=io.StringIO()), pairs=PAIRS, budgets=(16, 8),
                        candidates="pool:2,prune:8:cls-attn", latency="pytorch", latency_runs=1,
                        folder=V.COMMITTED)
    return tmp, res


def test_table_columns_and_rows(run):
    _, res = run
    t = B.sweep_table(res)
    heads = [c.header for c in t.columns]
    assert heads[:7] == ["candidate", "tokens", "top1 [95 %]", "kl", "match", "ms", "task [95 %]"]
    assert heads[-1] == "budget"
    assert heads[7:-1] == [B.KIND_LABEL[k] for k in res["kinds"]]
    assert res["kinds"] == sorted({it.kind for it in V.heldout(PAIRS)})
    assert t.row_count == 3 and [r["spec"] for r in res["candidates"]][0] == "none"
    assert {r["spec"] for r in res["candidates"]} == {"none", "pool:2", "prune:8:cls-attn"}
    none = res["candidates"][0]
    assert (none["top1"], none["kl"], none["match"]) == (1.0, 0.0, 1.0)
    assert all(r["latency_ms"] is not None and r["latency_ms"] > 0 for r in res["candidates"])
    out = io.StringIO()
    B.print_sweep(res, Console(file=out, width=200))
    assert "--tokens 16" in out.getvalue() and "--tokens 8" in out.getvalue() and "Spearman" in out.getvalue()
    json.dumps(res)  # JSON-ready as run.py writes it


def test_task_accuracy_recounted_from_sweep_json(run):
    from transformers import AutoTokenizer

    tmp, res = run
    sweep = json.loads((tmp / "sweep-out" / "sweep.json").read_text())
    items = V.heldout(PAIRS)
    assert [p["prompt"] for p in sweep["pairs"]] == [it.question for it in items]
    tok = AutoTokenizer.from_pretrained(V.COMMITTED)
    mine = {r["spec"]: r for r in res["candidates"]}
    for cand in sweep["candidates"]:
        said = [tok.decode(p["answer"], skip_special_tokens=True).strip().lower() for p in cand["per_pair"]]
        ok = [a == it.answer for a, it in zip(said, items, strict=True)]
        row = mine[cand["spec"]]
        assert row["task"]["correct"] == sum(ok) and row["task"]["total"] == PAIRS
        assert row["task"]["accuracy"] == sum(ok) / PAIRS
        for kind in {it.kind for it in items}:
            k_ok = [o for o, it in zip(ok, items) if it.kind == kind]
            assert row["task"]["by_kind"][kind]["correct"] == sum(k_ok)
            assert row["task"]["by_kind"][kind]["total"] == len(k_ok)
        assert (row["top1"], row["kl"], row["match"]) == (cand["top1"], cand["kl"], cand["match"])
    # none's answers are transformers' own generate on the same items (shapes_vlm.answer)
    assert res["none_vs_generate"] == {"equal": PAIRS, "pairs": PAIRS,
                                       "generate_accuracy": mine["none"]["task"]["accuracy"]}


def test_budget_verdicts(run):
    _, res = run
    rows = res["candidates"]
    for v in res["verdicts"]:
        within = [r for r in rows if r["tokens"] <= v["tokens"]]
        best = max(r["task"]["correct"] for r in within)
        pick = next(r for r in within if r["spec"] == v["pick"])
        # the pick is the best top1 within the budget (the chooser's rule), whatever its task accuracy
        assert pick["top1"] == max(r["top1"] for r in within)
        assert v["best_correct"] == best and set(v["best"]) == {r["spec"] for r in within
                                                                if r["task"]["correct"] == best}
        assert v["pick_is_best"] == (pick["task"]["correct"] == best)
        assert v["gap_pairs"] == best - pick["task"]["correct"]
    assert [v["tokens"] for v in res["verdicts"]] == [16, 8]
    assert res["verdicts"][1]["candidates"] == 1 and res["verdicts"][1]["pick"] == "prune:8:cls-attn"


def test_bench_grid_has_every_method_within_each_budget():
    from tokcomp_edge.sweep import parse_candidates
    from tokcomp_edge.vlm import resolve_vlm

    vlm = resolve_vlm(f"hf:{V.COMMITTED}")
    cands = parse_candidates(",".join(B.bench_specs(vlm, (16, 8))), vlm)
    refused = [c.spec for c in cands if c.refused]
    assert refused == ["unshuffle:2"]
    def method(spec):  # prune's score is a method of its own
        parts = spec.split(":")
        return f"prune:{parts[2]}" if parts[0] == "prune" else parts[0]

    for n in (16, 8):
        tokens = {}
        for c in cands:
            if c.tokens is not None and c.tokens <= n:
                tokens.setdefault(method(c.spec), set()).add(c.tokens)
        methods = ("pool", "bilinear", "prune:norm", "prune:cls-attn", "prune:cls-sim", "visionzip", "tome")
        assert set(methods) <= set(tokens)
        # every method but pooling (whose sizes on an 8×8 grid are 16, 9, 4) meets the budget exactly
        assert all(n in tokens[m] for m in methods if m != "pool")


def test_spearman_and_wilson_against_scipy():
    stats = pytest.importorskip("scipy.stats")
    x = [0.81, 0.79, 0.79, 0.70, 0.66, 0.83]
    y = [0.50, 0.47, 0.52, 0.30, 0.30, 0.55]
    assert B.spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
    ci = stats.binomtest(9, 14).proportion_ci(confidence_level=0.95, method="wilson")
    assert B.wilson(9, 14) == pytest.approx([ci.low, ci.high], abs=1e-6)


def test_figure_marks_every_candidate_and_rings_the_picks(run, tmp_path):
    """The docs figure (benchmarks/sweep_figure.py): a standalone SVG with one mark per candidate placed at its
    (top1, task accuracy), and one red ring per budget's pick, drawn on the pick's own mark."""
    import xml.etree.ElementTree as ET

    from benchmarks.sweep_figure import PICK_RING

    _, res = run
    dest = tmp_path / "fig.svg"
    B._figure(res, dest, Console(file=io.StringIO()))
    ns = {"s": "http://www.w3.org/2000/svg"}
    root = ET.fromstring(dest.read_text())
    titled = [c for c in root.iter("{http://www.w3.org/2000/svg}circle") if c.find("s:title", ns) is not None]
    assert sorted(c.find("s:title", ns).text.split(": ")[0] for c in titled) == sorted(r["spec"] for r in res["candidates"])
    rings = [c for c in root.iter("{http://www.w3.org/2000/svg}circle")
             if c.get("stroke") == PICK_RING and c.find("s:title", ns) is None]
    picks = {v["pick"] for v in res["verdicts"] if v.get("pick")}
    at = {(c.get("cx"), c.get("cy")) for c in titled if c.find("s:title", ns).text.split(": ")[0] in picks}
    # the legend's ring sits outside the plot; the others sit exactly on the picks' marks
    assert {(c.get("cx"), c.get("cy")) for c in rings} - at and at <= {(c.get("cx"), c.get("cy")) for c in rings}
    assert len(rings) == len(picks) + 1
    # the order on the x axis follows top1, on the y axis (SVG y grows downwards) task accuracy
    by = {c.find("s:title", ns).text.split(": ")[0]: (float(c.get("cx")), float(c.get("cy"))) for c in titled}
    rows = sorted(res["candidates"], key=lambda r: r["top1"])
    assert [by[r["spec"]][0] for r in rows] == sorted(by[r["spec"]][0] for r in rows)
    rows = sorted(res["candidates"], key=lambda r: r["task"]["accuracy"])
    assert [by[r["spec"]][1] for r in rows] == sorted((by[r["spec"]][1] for r in rows), reverse=True)

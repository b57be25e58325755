"""The sweep part of `make bench`: `tokcomp sweep` on the trained shapes VLM, scored against the ground truth.

The fixture (benchmarks/shapes_vlm.py, whatever weights are committed or cached for its code) answers
one-word questions about generated scenes, so each candidate's own greedy answer can be checked against the
scene's true answer. The bench runs the library's sweep (`run_sweep`, `answers=True`) on held-out scenes,
each with its own question (`--pairs`, the question types in turn), over a grid holding every method the
family allows at each token budget — pool, bilinear, prune with each score, ToMe, VisionZip; unshuffle is
listed with LLaVA's refusal — and reports per candidate:

- the sweep's own figures: tokens, top1 with its 95 % interval, kl, match, vision-path latency (median);
- the task accuracy: the share of pairs whose decoded answer equals the ground truth (shapes_vlm.accuracy,
  the fixture's own rule), overall with a Wilson 95 % interval, and per question type.

Per budget N, the chooser's pick (`--tokens N`: the library's `choose` on the sweep's rows) against the
candidate with the best task accuracy within N tokens: whether the pick is (one of) the best, and the gap.
Over the compressed candidates, the Spearman rank correlation of top1 with task accuracy: how well the
agreement with the uncompressed model, which a user can measure, predicts what a user cannot.

A cross-check: the `none` candidate's answers equal transformers' own `generate` on the same items
(shapes_vlm.answer), counted and reported.
"""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run.py and this file run as scripts; the fixture module is benchmarks.shapes_vlm
    sys.path.insert(0, str(ROOT))

BUDGETS = (16, 8)  # tokens per image, of the fixture's 64 (an 8×8 grid)
PAIRS = 280  # 40 per question type (7 types); ≈ 1 min of fidelity for the 15 candidates on 2 cores
ANSWER_TOKENS = 3  # the fixture answers one word then </s>
# One PyTorch thread: the model is tiny (a 4 × 64 tower, a 2 × 128 LLM), so its ops are too small to split, and
# on a shared 2-core machine two threads spin-waiting for each other made the same sweep 17× slower (28 pairs:
# 165 s against 9.6 s of fidelity while other jobs ran).
THREADS = 1
LATENCY_RUNS = 31  # a call is ~1 ms here; more runs make the median steadier on a shared machine


def bench_specs(vlm, budgets=BUDGETS) -> list[str]:
    """Every method at ≤ each budget: pool:S (the mildest pooling within it), bilinear:HxW, prune:N with each
    score, visionzip with ≈ 1/6.4 contextual tokens (the grid's rule), tome (the grid's schedule), then
    unshuffle:2 (refused by LLaVA, listed so the refusal shows). Unlike the sweep's default grid, a method
    whose nearest size overshoots a budget (pool:3 = 9 tokens for 8) takes the next size down."""
    from tokcomp_edge.encoders.tower import resolve_layer
    from tokcomp_edge.sweep.candidates import tome_spec

    h, w = vlm.tower.grid
    native = h * w
    layers = resolve_layer(vlm.tower_layer, vlm.tower.num_layers)
    specs = ["none"]
    for n in budgets:
        s = next(s for s in range(2, max(h, w) + 1) if math.ceil(h / s) * math.ceil(w / s) <= n)
        specs.append(f"pool:{s}")
        rows = max(1, math.isqrt(n))
        specs.append(f"bilinear:{rows}x{n // rows}")
        specs += [f"prune:{n}:{score}" for score in ("norm", "cls-attn", "cls-sim")]
        ctx = max(1, round(n / 6.4))
        specs.append(f"visionzip:{n - ctx}:{ctx}")
        if layers:
            specs.append(tome_spec(native, native - n, layers, vlm.tower.prefix_tokens))
    specs.append("unshuffle:2")
    return list(dict.fromkeys(specs))


def write_pairs(folder: Path, items) -> tuple[Path, Path]:
    """items → folder/images/NNN.png (lossless) and folder/pairs.tsv (`NNN.png<TAB>question`, one a line)."""
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, it in enumerate(items):
        it.image.save(images / f"{i:03d}.png")
        lines.append(f"{i:03d}.png\t{it.question}")
    (folder / "pairs.tsv").write_text("\n".join(lines) + "\n")
    return images, folder / "pairs.tsv"


def wilson(correct: int, total: int, z: float = 1.959964) -> list[float]:
    """Wilson score 95 % interval of a proportion."""
    if not total:
        return [math.nan, math.nan]
    p = correct / total
    d = 1 + z * z / total
    c = (p + z * z / (2 * total)) / d
    h = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / d
    return [max(0.0, c - h), min(1.0, c + h)]


def ranks(values) -> list[float]:
    """1-based ranks, ties given their average rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def spearman(x, y) -> float:
    """Spearman's rho: Pearson's correlation of the average ranks (nan when either side is constant)."""
    rx, ry = ranks(list(x)), ranks(list(y))
    n = len(rx)
    mx, my = sum(rx) / n, sum(ry) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sxx, syy = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    return sxy / math.sqrt(sxx * syy) if sxx and syy else math.nan


def decode(tokenizer, ids) -> str:
    """A candidate's answer token ids → the text shapes_vlm.answer would give (special tokens dropped)."""
    return tokenizer.decode(list(ids), skip_special_tokens=True).strip()


def task_accuracy(answers: list[str], items) -> dict:
    from benchmarks import shapes_vlm as V

    acc = V.accuracy(answers, items)
    d = acc.to_dict()
    return {"correct": acc.correct, "total": acc.total, "accuracy": acc.value, "ci": wilson(acc.correct, acc.total),
            "by_kind": d["by_kind"]}


def budget_verdicts(rows: list[dict], budgets) -> list[dict]:
    """Per budget N: the library chooser's pick at `--tokens N` against the best task accuracy within N."""
    from tokcomp_edge.sweep import Constraint, choose

    out = []
    for n in budgets:
        within = [r for r in rows if r["tokens"] <= n]
        if not within:
            out.append({"tokens": n, "pick": None, "reason": f"no candidate within {n} tokens"})
            continue
        pick = choose(rows, Constraint(tokens=n))
        best_correct = max(r["task"]["correct"] for r in within)
        best = [r["spec"] for r in within if r["task"]["correct"] == best_correct]
        total = pick["task"]["total"]
        pc = pick["task"]["correct"]
        out.append({"tokens": n, "candidates": len(within), "pick": pick["spec"], "pick_top1": pick["top1"],
                    "pick_task": pc / total, "pick_correct": pc, "best": best, "best_task": best_correct / total,
                    "best_correct": best_correct, "pick_is_best": pc == best_correct,
                    "gap": (best_correct - pc) / total, "gap_pairs": best_correct - pc,
                    "pick_task_rank": 1 + sum(r["task"]["correct"] > pc for r in within)})
    return out


def _fixture_facts(folder: Path) -> dict:
    from benchmarks import shapes_vlm as V

    weights = folder / "model.safetensors"
    info = {"path": str(folder.relative_to(ROOT)) if folder.is_relative_to(ROOT) else str(folder),
            "key": V.recorded_key(folder), "weights_sha256": hashlib.sha256(weights.read_bytes()).hexdigest()}
    try:
        prov = json.loads((folder / V.PROVENANCE).read_text())
        info["recorded_heldout_accuracy"] = prov.get("heldout", {}).get("accuracy")
    except (OSError, ValueError):
        pass
    try:  # the commit that last changed the committed fixture (None for a cached, uncommitted one)
        rev = subprocess.run(["git", "log", "-1", "--format=%h", "--", str(folder)], cwd=ROOT, capture_output=True,
                             text=True, timeout=20).stdout.strip()
        info["commit"] = rev or None
    except (OSError, subprocess.SubprocessError):
        info["commit"] = None
    return info


def bench_sweep(tmp: Path, console, pairs: int = PAIRS, budgets=BUDGETS, candidates: str | None = None,
                latency: str = "onnxruntime", latency_runs: int = LATENCY_RUNS, folder: Path | None = None,
                check_generate: bool = True, threads: int = THREADS) -> dict:
    """Run the sweep on `pairs` held-out items of the fixture and score it (see the module docstring).

    Args:
        tmp: a scratch folder: the images and pairs file go to tmp/sweep-inputs, the sweep's own sweep.json
            and sweep.html (every candidate's answer as token ids) to tmp/sweep-out.
        candidates: a `--candidates` text; None → bench_specs(budgets).
        latency: the sweep's latency backend (`onnxruntime`, `pytorch`, `none`).
        folder: the fixture folder; None → shapes_vlm.fixture_path() (trained when neither committed nor cached).
        threads: PyTorch threads for the run (restored after): THREADS.
    Returns:
        a JSON-ready dict: fixture facts, the items, per candidate the sweep's figures + task accuracy and
        the decoded answers, the per-budget verdicts, Spearman, the generate cross-check, timings.
    """
    import torch

    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _bench_sweep(tmp, console, pairs, budgets, candidates, latency, latency_runs, folder, check_generate)
    finally:
        torch.set_num_threads(prev)


def _bench_sweep(tmp, console, pairs, budgets, candidates, latency, latency_runs, folder, check_generate) -> dict:
    from benchmarks import shapes_vlm as V

    from tokcomp_edge.sweep import SweepConfig, run_sweep
    from tokcomp_edge.vlm import resolve_vlm

    t0 = time.perf_counter()
    folder = Path(folder) if folder is not None else V.fixture_path()
    model_id = f"hf:{folder}"
    items = V.heldout(pairs)
    images, pairs_file = write_pairs(Path(tmp) / "sweep-inputs", items)
    if candidates is None:
        candidates = ",".join(bench_specs(resolve_vlm(model_id), budgets))
    console.print(f"sweep: {pairs} held-out pairs of the shapes VLM ({folder.name}), candidates {candidates} …")
    cfg = SweepConfig(model=model_id, images=images, pairs=pairs_file, candidates=candidates,
                      answer_tokens=ANSWER_TOKENS, out=Path(tmp) / "sweep-out", force=True, latency=latency,
                      latency_runs=latency_runs, answers=True, quiet=True)
    r = run_sweep(cfg)
    sweep_s = time.perf_counter() - t0
    model, processor = V.load(folder)
    tok = processor.tokenizer
    rows = []
    for c in r.candidates:
        answers = [decode(tok, p["answer"]) for p in c["per_pair"]]
        rows.append({"spec": c["spec"], "tokens": c["tokens"], "top1": c["top1"], "top1_ci": c["top1_ci"],
                     "top1_lo": c["top1_lo"], "kl": c["kl"], "match": c["match"], "match_ci": c["match_ci"],
                     "latency_ms": c["latency_ms"], "task": task_accuracy(answers, items), "answers": answers})
    rows.sort(key=lambda x: (-x["tokens"], -x["task"]["correct"], -x["top1"], x["spec"]))
    compressed = [x for x in rows if x["spec"] != "none"]
    rho = spearman([x["top1"] for x in compressed], [x["task"]["accuracy"] for x in compressed]) \
        if len(compressed) >= 3 else math.nan
    res = {"fixture": _fixture_facts(folder), "pairs": len(items), "answer_tokens": ANSWER_TOKENS,
           "budgets": list(budgets), "latency": r.latency, "kinds": sorted({it.kind for it in items}),
           "items": [{"image": f"{i:03d}.png", "question": it.question, "truth": it.answer, "kind": it.kind}
                     for i, it in enumerate(items)],
           "candidates": rows, "refused": r.refused, "verdicts": budget_verdicts(rows, budgets),
           "spearman_top1_task": {"rho": rho, "candidates": len(compressed)},
           "timing": {"sweep_s": round(sweep_s, 1), "fidelity_s": round(r.timing["fidelity_s"], 1),
                      "latency_s": round(r.timing["latency_s"], 1),
                      "per_candidate_pair_s": round(r.timing["per_candidate_pair_s"], 4),
                      "candidates": r.timing["candidates"]}}
    if check_generate:
        # transformers' own generate on the same items: the `none` candidate's answers should be these.
        mine = next(x["answers"] for x in rows if x["spec"] == "none")
        theirs = V.answer(model, processor, items)
        res["none_vs_generate"] = {"equal": sum(a == b for a, b in zip(mine, theirs)), "pairs": len(items),
                                   "generate_accuracy": V.accuracy(theirs, items).value}
    res["timing"]["total_s"] = round(time.perf_counter() - t0, 1)
    return res


KIND_LABEL = {"colour": "col", "position": "pos", "count": "cnt", "count_colour": "cnt-c", "mark": "mark",
              "size": "size", "side": "side"}


def sweep_table(res: dict):
    """The rich table: one row per candidate, the budget marks, task accuracy overall and per question type."""
    from rich import box
    from rich.table import Table

    fx = res["fixture"]
    t = Table(title=f"sweep on the trained shapes VLM ({fx.get('commit') or fx['path']}, weights "
                    f"{fx['weights_sha256'][:12]}): {res['pairs']} held-out pairs, task accuracy vs ground truth "
                    "(per question type: correct of type/pairs)", box=box.SIMPLE_HEAD)
    marks: dict[str, list[str]] = {}
    for v in res["verdicts"]:
        if v.get("pick"):
            for spec in dict.fromkeys([v["pick"], *v["best"]]):
                what = "/".join(w for w, ok in (("pick", spec == v["pick"]), ("best", spec in v["best"])) if ok)
                marks.setdefault(spec, []).append(f"{what}≤{v['tokens']}")
    per_kind = {k: sum(it["kind"] == k for it in res["items"]) for k in res["kinds"]}
    cols = ["candidate", "tokens", "top1 [95 %]", "kl", "match", "ms", "task [95 %]"]
    cols += [KIND_LABEL.get(k, k) for k in res["kinds"]] + ["budget"]
    totals = sorted(set(per_kind.values()))
    of = f"of {totals[0]}" if len(totals) == 1 else "of " + ", ".join(f"{KIND_LABEL.get(k, k)} {n}"
                                                                     for k, n in per_kind.items())
    t.title = t.title.replace("correct of type/pairs", f"correct {of}")
    for c in cols:
        t.add_column(c, justify="left" if c in ("candidate", "budget") else "right", no_wrap=True)
    for r in res["candidates"]:
        a = r["task"]
        lo, hi = r["top1_ci"]
        ms = "" if r["latency_ms"] is None else f"{r['latency_ms']:.2f}"
        kinds = [str(a["by_kind"][k]["correct"]) if k in a["by_kind"] else "" for k in res["kinds"]]
        t.add_row(r["spec"], str(r["tokens"]), f"{r['top1']:.3f} [{lo:.2f}, {hi:.2f}]", f"{r['kl']:.3f}",
                  f"{r['match']:.3f}", ms, f"{a['accuracy']:.3f} [{a['ci'][0]:.2f}, {a['ci'][1]:.2f}]", *kinds, " ".join(marks.get(r["spec"], [])))
    return t


def print_sweep(res: dict, console) -> None:
    console.print(sweep_table(res))
    for v in res["verdicts"]:
        if not v.get("pick"):
            console.print(f"--tokens {v['tokens']}: {v['reason']}")
            continue
        verdict = "the best" if v["pick_is_best"] else \
            f"NOT the best: {v['gap_pairs']} pairs ({100 * v['gap']:.1f} points) behind, rank {v['pick_task_rank']}"
        console.print(f"--tokens {v['tokens']} ({v['candidates']} candidates): pick {v['pick']} (top1 "
                      f"{v['pick_top1']:.3f}, task {v['pick_correct']}/{res['pairs']}) — best task within "
                      f"{v['tokens']}: {', '.join(v['best'])} ({v['best_correct']}/{res['pairs']}) → {verdict}")
    s = res["spearman_top1_task"]
    console.print(f"Spearman(top1, task accuracy) over the {s['candidates']} compressed candidates: {s['rho']:.3f}")
    if "none_vs_generate" in res:
        g = res["none_vs_generate"]
        console.print(f"none's answers = transformers' generate on {g['equal']}/{g['pairs']} pairs "
                      f"(generate's task accuracy {g['generate_accuracy']:.3f})")
    for ref in res["refused"]:
        console.print(f"refused: {ref['spec']} — {ref['refused']}")
    tm = res["timing"]
    console.print(f"sweep {tm['sweep_s']} s ({tm['candidates']} candidates × {res['pairs']} pairs: fidelity "
                  f"{tm['fidelity_s']} s, {tm['per_candidate_pair_s']} s per candidate × pair; latency "
                  f"{tm['latency_s']} s, {res['latency'].get('label', '')}); total {tm['total_s']} s")


def main(argv=None) -> int:
    """`python benchmarks/sweep_bench.py`: this section alone; prints the table, writes the JSON as run.py does."""
    import argparse
    import tempfile

    from rich.console import Console

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=PAIRS, help=f"held-out pairs (default {PAIRS})")
    ap.add_argument("--fixture", type=Path, default=None,
                    help="the checkpoint folder (default shapes_vlm.fixture_path(): trained when missing)")
    ap.add_argument("--latency", default="onnxruntime", choices=("onnxruntime", "pytorch", "none"))
    ap.add_argument("--candidates", default=None, help="a --candidates text instead of the bench grid")
    ap.add_argument("--show", type=Path, default=None,
                    help="print the table of a bench JSON already written (run.py's `sweep` or this one's)")
    ap.add_argument("--figure", type=Path, default=None,
                    help="also write the top1-vs-task-accuracy figure (SVG) of the result shown or measured")
    args = ap.parse_args(argv)
    c = Console(width=170)
    if args.show is not None:
        data = json.loads(args.show.read_text())
        print_sweep(data.get("sweep", data), c)
        _figure(data.get("sweep", data), args.figure, c)
        return 0
    with tempfile.TemporaryDirectory(prefix="tokcomp-sweep-bench-") as d:
        r = bench_sweep(Path(d), c, pairs=args.pairs, candidates=args.candidates, latency=args.latency,
                        folder=args.fixture)
    dest = ROOT / "benchmarks" / "results"
    dest.mkdir(parents=True, exist_ok=True)
    from datetime import datetime, timezone

    from tokcomp_edge.atomic import write_text_atomic

    path = dest / f"sweep-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%SZ')}.json"
    write_text_atomic(path, json.dumps(r, indent=1) + "\n")
    print_sweep(r, c)
    c.print(f"written {path.relative_to(ROOT)}")
    _figure(r, args.figure, c)
    return 0


def _figure(res: dict, dest: Path | None, console) -> None:
    if dest is None:
        return
    from benchmarks.sweep_figure import figure_svg

    from tokcomp_edge.atomic import write_text_atomic

    dest.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(dest, figure_svg(res) + "\n")
    console.print(f"written {dest}")


if __name__ == "__main__":
    sys.exit(main())

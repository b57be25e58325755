"""The sweep on the trained shapes VLM (benchmarks/fixtures/shapes-vlm), where compressions really change
the answers: `none` stays exact, the candidates measurably differ, and the pick follows the table."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import shapes_vlm as V
from tokcomp_edge.sweep import SweepConfig, run_sweep


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes_sweep")
    (root / "img").mkdir()
    lines = []
    for i, item in enumerate(V.heldout(12)):
        item.image.save(root / "img" / f"{i:03d}.png")
        lines.append(f"{i:03d}.png\t{item.question}")
    (root / "pairs.tsv").write_text("\n".join(lines) + "\n")
    return root


def test_trained_model_tells_the_candidates_apart(inputs):
    folder = V.fixture_path(train=False)
    r = run_sweep(SweepConfig(model=f"hf:{folder}", images=inputs / "img", pairs=inputs / "pairs.tsv",
                              candidates="pool:2,prune:16:norm,tome:32,16,8", answer_tokens=3, tokens=16,
                              out=inputs / "out", latency="none", answers=True, quiet=True))
    rows = {c["spec"]: c for c in r.candidates}
    assert (rows["none"]["top1"], rows["none"]["kl"], rows["none"]["match"]) == (1.0, 0.0, 1.0)
    compressed = [rows[s] for s in ("pool:2", "prune:16:norm", "tome:32,16,8")]
    assert all(c["top1"] < 1 and c["kl"] > 0.01 for c in compressed)  # a trained model notices
    assert len({round(c["top1"], 6) for c in compressed}) > 1  # and the methods differ
    best = max((c for c in r.candidates if c["tokens"] <= 16), key=lambda c: (c["top1"], -c["tokens"], -c["kl"]))
    assert r.pick == best["spec"]
    assert Path(r.out, "sweep.html").is_file()

"""Issue 17's fp16 case on a Qwen vision path: `tokcomp debug --variant fp16` names the Qwen2.5-VL vision
block whose SwiGLU MLP overflows fp16 (planted_qwen.py: on one patch of the golden batch-1 image, unseen by
AutoCast's calibration), also when it is the last block, and `--fix` makes a variant that passes; the healthy
twin reports no broken block (exit 0).

The tiny Qwen2.5-VL is saved with save_pretrained in 3+ shards and exported as `hf:` (a 112×112 tile: 8×8
patches, 2×2 windows, block 1 with full attention), batches 1 and 2, without the lint, to stay within seconds.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tokcomp_edge.export import ExportConfig, export_bundle

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
try:
    import planted_qwen
finally:
    sys.path.remove(str(HERE))

DEPTH = 3  # tiny-qwen2.5-vl's vision blocks
CASES = {"healthy": None, "mid": 1, "last": DEPTH - 1}


@pytest.fixture(scope="module")
def qwen_bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("debug_qwen")
    for name, block in CASES.items():
        folder = planted_qwen.save(root / f"{name}_hf", block)
        assert len(list(folder.glob("model-*.safetensors"))) >= 3
        export_bundle(ExportConfig(model=f"hf:{folder}", out=root / name, image_size=planted_qwen.TILE,
                                   batch_max=2, quiet=True, lint=False))
    return root


def _cli(*args):
    """`tokcomp debug ...` in-process (a child would re-import torch): (exit code, stdout, what to show)."""
    from typer.testing import CliRunner

    from tokcomp_edge.cli.app import app

    res = CliRunner().invoke(app, ["debug", *map(str, args)])
    return res.exit_code, res.stdout, res.stdout[-2000:] + repr(res.exception)


def _names(d):
    return [(b["index"], b["name"]) for b in d["blocks"]]


WANT = [(i, f"tower.visual.blocks.{i}") for i in range(DEPTH)]


def test_healthy_qwen_path_has_no_broken_block(qwen_bundles):
    manifest = json.loads((qwen_bundles / "healthy" / "manifest.json").read_text())
    assert [b["module"] for b in manifest["blocks"]] == [name for _, name in WANT]
    code, out, why = _cli(qwen_bundles / "healthy", "--variant", "fp16", "--json")
    assert code == 0, why
    d = json.loads(out)
    assert _names(d) == WANT and d["culprit"] is None
    assert not any(b["breaks"] for b in d["blocks"])


@pytest.mark.parametrize("name", ["mid", "last"])
def test_planted_mlp_overflow_is_named_and_fixed(qwen_bundles, name, tmp_path):
    import shutil

    from tokcomp_edge.core.bundle import Bundle

    block = CASES[name]
    folder = tmp_path / name
    shutil.copytree(qwen_bundles / name, folder)
    code, out, why = _cli(folder, "--variant", "fp16", "--json")
    assert code == 1, why
    d = json.loads(out)
    planted = f"tower.visual.blocks.{block}"
    assert _names(d) == WANT
    assert d["culprit"]["index"] == block and d["culprit"]["name"] == planted, d["culprit"]
    assert not any(b["breaks"] for b in d["blocks"][:block])
    hit = d["blocks"][block]
    assert hit["first_nonfinite"] is not None and hit["overflow_margin"] < 1
    assert "fp16" not in Bundle.load(folder).variants()  # the shipped fp16 check refused the variant

    code, out, why = _cli(folder, "--variant", "fp16", "--fix", "--json")
    assert code == 0, why
    fixed = json.loads(out)
    assert fixed["culprit"] is None and fixed["fix"]["before"]["culprit"]["name"] == planted
    entry = Bundle.load(folder).variants()["fp16"]  # Bundle.load verifies every checksum
    assert entry["check"]["passed"] and planted in entry["fp32_islands"]["blocks"]
    assert d["culprit"]["node"] in entry["fp32_islands"]["nodes"]
    assert all(b["rel_l2"] < 1e-2 for b in fixed["blocks"])

"""Issue 15 part 3: debug knows the blocks from the export (manifest `blocks`), never from names."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tokcomp_edge.errors import BundleError
from tokcomp_edge.export import ExportConfig, export_bundle

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def timm_bundles(tmp_path_factory):
    pytest.importorskip("timm")
    root = tmp_path_factory.mktemp("timm_blocks")
    sys.path.insert(0, str(HERE))
    try:
        for name in ("healthy", "mid", "last", "constant_bias"):
            export_bundle(ExportConfig(model=f"py:timm_user_tower:{name}", compress="none", out=root / name,
                                       batch_max=2, quiet=True))
    finally:
        sys.path.remove(str(HERE))
    return root


class _Ran:
    def __init__(self, res):
        self.returncode, self.stdout, self.stderr = res.exit_code, res.stdout, repr(res.exception or "")


def _cli(folder: Path):
    """`tokcomp debug FOLDER --variant fp16 --json`, the app in-process (a child would re-import torch)."""
    from typer.testing import CliRunner

    from tokcomp_edge.cli.app import app

    return _Ran(CliRunner().invoke(app, ["debug", str(folder), "--variant", "fp16", "--json"]))


def test_timm_module_records_its_four_blocks_and_is_healthy(timm_bundles):
    manifest = json.loads((timm_bundles / "healthy" / "manifest.json").read_text())
    assert [b["module"] for b in manifest["blocks"]] == [f"tower.user.vit.blocks.{i}" for i in range(4)]
    r = _cli(timm_bundles / "healthy")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr
    d = json.loads(r.stdout)
    assert [b["index"] for b in d["blocks"]] == [0, 1, 2, 3] and d["culprit"] is None


@pytest.mark.parametrize("name,depth", [("mid", 4), ("last", 3)])
def test_planted_mlp_overflow_names_its_block(timm_bundles, name, depth):
    """Block 2's MLP writes 3e5 on one token of the batch-1 image (timm_user_tower: calibration never sees
    it, so the fp16 variant overflows): debug exits 1 and names block 2 — also when block 2 is the last
    block, whose MLP an after-the-fact guess counted in no block."""
    r = _cli(timm_bundles / name)
    assert r.returncode == 1, r.stdout[-2000:] + r.stderr
    d = json.loads(r.stdout)
    assert [b["index"] for b in d["blocks"]] == list(range(depth))
    assert d["culprit"]["index"] == 2 and d["culprit"]["name"] == "tower.user.vit.blocks.2", d["culprit"]
    assert [b["breaks"] for b in d["blocks"][:2]] == [False, False]
    assert d["blocks"][2]["first_nonfinite"] is not None


def test_constant_bias_plant_is_kept_in_fp32_by_autocast(timm_bundles):
    """The issue's literal plant (fc2 bias 3e5, on every token): AutoCast's data_max guard sees it on its
    calibration batch and keeps those nodes in fp32, so the variant is right and debug says so (exit 0),
    with no fp16-stored activation beyond fp16's range."""
    from tokcomp_edge.debug import DebugConfig, debug

    res = debug(DebugConfig(target=timm_bundles / "constant_bias", variant="fp16", write=False, quiet=True))
    assert res.culprit is None and len(res.blocks) == 4
    assert all(b.overflow_margin is not None and b.overflow_margin > 1 for b in res.blocks)


def test_block_output_is_the_block_output_not_norm2(tower_bundles):
    """Each recorded output is the tensor the next block reads: its residual Add, after the MLP."""
    import onnx

    from tokcomp_edge.debug.blocks import find_blocks

    folder = tower_bundles["healthy"]
    manifest = json.loads((folder / "manifest.json").read_text())
    model = onnx.load(str(folder / "model.onnx"))
    producers = {o: n for n in model.graph.node for o in n.output}
    blocks = find_blocks(model, manifest)
    assert len(blocks) == manifest["encoder"]["layers_run"] == 3
    for b in blocks:
        assert producers[b.output].op_type == "Add"
        ops = [n.op_type for n in model.graph.node if n.name in set(b.nodes)]
        # norm1, norm2 and the MLP's activation all belong to the block (the last MLP is no longer lost).
        assert ops.count("LayerNormalization") == 2 and ("Gelu" in ops or "Erf" in ops), ops


def test_old_bundle_without_blocks_is_refused(tower_bundles):
    import onnx

    from tokcomp_edge.debug.blocks import find_blocks

    folder = tower_bundles["healthy"]
    m = json.loads((folder / "manifest.json").read_text())
    del m["blocks"]
    with pytest.raises(BundleError, match="exported before"):
        find_blocks(onnx.load(str(folder / "model.onnx")), m)
    with pytest.raises(BundleError, match="records no transformer blocks: no list"):
        find_blocks(onnx.load(str(folder / "model.onnx")), {**m, "blocks": [], "blocks_note": "no list"})

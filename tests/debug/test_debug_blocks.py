"""Issue 15 part 3: debug knows the blocks from the export (manifest `blocks`), never from names."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tokcomp_edge.errors import BundleError
from tokcomp_edge.export import ExportConfig, export_bundle

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


@pytest.fixture(scope="module")
def timm_bundles(tmp_path_factory):
    pytest.importorskip("timm")
    root = tmp_path_factory.mktemp("timm_blocks")
    sys.path.insert(0, str(HERE))
    try:
        for name in ("healthy", "mid", "last"):
            export_bundle(ExportConfig(model=f"py:timm_user_tower:{name}", compress="none", out=root / name,
                                       batch_max=2, quiet=True))
    finally:
        sys.path.remove(str(HERE))
    return root


def _cli(folder: Path):
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), "debug", str(folder), "--variant", "fp16",
                           "--json"], capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_timm_module_records_its_four_blocks_and_is_healthy(timm_bundles):
    manifest = json.loads((timm_bundles / "healthy" / "manifest.json").read_text())
    assert [b["module"] for b in manifest["blocks"]] == [f"tower.user.vit.blocks.{i}" for i in range(4)]
    r = _cli(timm_bundles / "healthy")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr
    d = json.loads(r.stdout)
    assert [b["index"] for b in d["blocks"]] == [0, 1, 2, 3] and d["culprit"] is None


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

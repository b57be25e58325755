"""Issue 15 part 3 on every preset family and a VLM path: the export records the tower's blocks, debug
reads them; ToMe block outputs (CLS, CLS + registers) are compared by merge membership, not row index.

Exports at 64 px, batches 1–2, without the lint, to stay within seconds: the block recording and the
comparison do not depend on the grid size.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from tokcomp_edge.core.tolerance import default_tolerance
from tokcomp_edge.export import ExportConfig, export_bundle

HERE = Path(__file__).resolve().parent
# One per preset family; ToMe on the two with prefix tokens (CLIP: CLS; DINOv2: CLS + 4 registers).
FAMILIES = {"tiny-clip": "tome:2", "tiny-dinov2": "tome:2", "tiny-siglip": "none", "tiny-vit": "none"}


@pytest.fixture(scope="module")
def family_bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("debug_families")
    for model, spec in FAMILIES.items():
        export_bundle(ExportConfig(model=model, compress=spec, out=root / model, image_size=64, batch_max=2,
                                   quiet=True, lint=False))
    return root


def _debug(folder: Path):
    from tokcomp_edge.debug import DebugConfig, debug

    return debug(DebugConfig(target=folder, variant="fp16", write=False, quiet=True))


@pytest.mark.parametrize("model", list(FAMILIES))
def test_every_family_records_its_blocks_and_debugs_healthy(family_bundles, model):
    folder = family_bundles / model
    manifest = json.loads((folder / "manifest.json").read_text())
    assert len(manifest["blocks"]) == manifest["encoder"]["layers_run"] == 2
    assert all(b["module"].startswith("tower.") for b in manifest["blocks"])
    res = _debug(folder)
    assert res and res.culprit is None, [b.reasons for b in res.blocks]
    assert [b.index for b in res.blocks] == [0, 1]
    tome = FAMILIES[model].startswith("tome")
    assert all((b.membership is not None) == tome for b in res.blocks)
    if tome:  # the fp16 variant merged the same sets here: every patch's row agrees, nothing blamed
        assert all(b.membership["moved"] == 0 and b.first_nonfinite is None for b in res.blocks)


def _tome_runs(folder: Path):
    """(blocks, fp32 runs) of the CLIP ToMe bundle: each block output and its patch → row map, per batch."""
    import onnx

    from tokcomp_edge.core.bundle import Bundle
    from tokcomp_edge.debug.analyse import _run, _session
    from tokcomp_edge.debug.blocks import find_blocks
    from tokcomp_edge.debug.inputs import golden_batches
    from tokcomp_edge.debug.instrument import instrument

    bundle = Bundle.load(folder)
    model = onnx.load(str(bundle.onnx_path("fp32")))
    blocks = find_blocks(model, bundle.manifest)
    inst = instrument(model, [t for b in blocks for t in (b.output, b.source)], [])
    inputs, _ = golden_batches(bundle)
    return blocks, _run(_session(inst.model), inputs, [o.name for o in inst.model.graph.output])


def test_tome_rows_are_paired_by_membership_not_index(family_bundles):
    """A variant run whose ToMe rows hold the same merged sets in another order compares equal; a patch
    whose merge went the other way is a membership difference, not numeric error."""
    from tokcomp_edge.debug.analyse import output_errors

    blocks, ref = _tome_runs(family_bundles / "tiny-clip")
    b = blocks[-1]
    tol = default_tolerance("fp16")
    rng = np.random.default_rng(0)
    shuffled = []
    for r in ref:
        x, src = r[b.output], r[b.source]
        perm = np.concatenate([[0], 1 + rng.permutation(x.shape[1] - 1)])  # CLS stays row 0
        inv = np.argsort(perm)
        shuffled.append({b.output: x[:, perm], b.source: inv[src]})
    err, reasons, membership = output_errors(b, ref, shuffled, b.output, b.source, tol)
    assert err["rel_l2"] == 0.0 and err["min_cosine"] > 0.999999 and not reasons, (err, reasons)
    assert membership["moved"] == 0 and membership["agreement"] == 1.0

    # Move one patch of batch 1 into another row: both rows' member sets now differ.
    moved = [dict(r) for r in ref]
    src = moved[0][b.source].copy()
    a, c = int(src[0, 0]), int(src[0, -1])
    assert a != c
    members = int((src[0] == a).sum() + (src[0] == c).sum())
    src[0, 0] = c
    moved[0][b.source] = src
    err, reasons, membership = output_errors(b, ref, moved, b.output, b.source, tol)
    assert membership["moved"] == members and err["rel_l2"] == 0.0
    assert membership["agreement"] == pytest.approx(1 - members / membership["patches"])
    # Below min_jaccard the block breaks for its membership, said in those words.
    strict = dataclasses.replace(tol, min_jaccard=1.0)
    _, reasons, _ = output_errors(b, ref, moved, b.output, b.source, strict)
    assert len(reasons) == 1 and reasons[0].startswith("merge membership:")


def test_vlm_bundle_lists_only_tower_blocks(tmp_path):
    """A VLM folder (tiny LLaVA: CLIP tower, LLaMA text model, projector): the blocks are the tower's
    layers the features are read from, not the projector's or the language model's."""
    sys.path.insert(0, str(HERE.parent / "vlm"))
    try:
        from vlm_helpers import build_vlm, save_vlm
    finally:
        sys.path.remove(str(HERE.parent / "vlm"))
    folder = save_vlm(build_vlm("llava"), tmp_path / "llava")
    export_bundle(ExportConfig(model=f"hf:{folder}", out=tmp_path / "b", batch_max=2, quiet=True, lint=False))
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    modules = [b["module"] for b in manifest["blocks"]]
    assert len(modules) == manifest["encoder"]["layers_run"] >= 1
    assert all(m.startswith("tower.") and ".encoder.layers." in m for m in modules), modules
    res = _debug(tmp_path / "b")
    assert res and [b.index for b in res.blocks] == list(range(len(modules)))

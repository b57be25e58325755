"""The manifest schema accepts what the exporter writes and refuses the issue's re-signed manifests.

Acceptance across every kind: `Bundle.load` runs the schema, so every export test that loads a bundle
(tests/export/test_matrix.py: each tiny tower × each spec; tests/vlm: each VLM family; the variants tests)
checks it too. Here: the three session bundles (prune with fp16 / nhwc variants, ToMe, a VLM path), and the
issue's cases by name.
"""

from __future__ import annotations

import json

import pytest

from fuzz_helpers import copy_bundle, mutate, run_main, write_manifest
from tokcomp_edge.core.bundle import MANIFEST, Bundle
from tokcomp_edge.core.manifest_schema import check_manifest
from tokcomp_edge.core.reference_check import check_reference


@pytest.mark.parametrize("kind", ["prune", "tome", "vlm"])
def test_exported_manifests_pass(fuzz_bundles, kind):
    b = Bundle.load(fuzz_bundles[kind])
    check_manifest(b.manifest)
    check_reference(b.reference(), b.manifest)
    if kind == "prune":
        assert {"fp16", "nhwc"} <= set(b.variants())


# (mutation, the key the one line must name): a dropped key and a wrong type gave inspect / build --dry-run
# KeyError / TypeError / AttributeError before the schema.
CASES = [
    (("onnx", "batch"), "drop", None, "onnx.batch"),
    (("onnx", "inputs"), "set", "pixel_values", "onnx.inputs"),
    (("compression", "tokens_out"), "set", "16", "compression.tokens_out"),
    (("encoder",), "drop", None, "encoder"),
    (("variants", "fp32", "file"), "set", 3, "variants.fp32.file"),
    (("files", "model.onnx", "sha256"), "set", None, "files.model.onnx.sha256"),
    (("compression", "prefix_out"), "set", 1, "compression.tokens_out"),
    (("name",), "set", "../../elsewhere", "name"),
]


@pytest.mark.parametrize("command", ["inspect", "build"])
@pytest.mark.parametrize("path,op,new,key", CASES)
def test_resigned_manifest_is_one_line(fuzz_bundles, tmp_path, capsys, command, path, op, new, key):
    bundle = copy_bundle(fuzz_bundles["prune"], tmp_path / "bundle")
    manifest = json.loads((bundle / MANIFEST).read_text())
    write_manifest(bundle, mutate(manifest, path, op, new))
    argv = [command, bundle] + (["--dry-run", "--engines-dir", tmp_path / "engines"] if command == "build" else [])
    code, out, err = run_main(capsys, *argv)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1, err
    assert f"manifest key {key} " in lines[0] and "re-export" in lines[0].lower(), lines[0]
    assert not (tmp_path / "engines").exists()

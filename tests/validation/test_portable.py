"""A bundle validates from any current directory (issue 16 §3): the manifest records the hf: folder and the
weights file absolute; when they are gone, `--torch auto` falls back to the golden reference and says so,
and `--torch require` fails naming the file."""

import json
import shutil

import pytest

from tokcomp_edge.errors import BundleError
from tokcomp_edge.validation import ValidateConfig, validate

from .conftest import FAST


@pytest.fixture(scope="module")
def relative_bundle(tmp_path_factory):
    """A tiny CLIP tower saved as an hf: folder and exported as `hf:tower` from the folder above it."""
    import os

    import torch
    import transformers as T

    from tokcomp_edge.export import ExportConfig, export_bundle

    root = tmp_path_factory.mktemp("portable")
    torch.manual_seed(0)
    cfg = T.CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                             image_size=32, patch_size=8)
    T.CLIPVisionModel(cfg).save_pretrained(root / "tower")
    here = os.getcwd()
    os.chdir(root)
    try:
        export_bundle(ExportConfig(model="hf:tower", out=root / "bundle", batch_max=2, quiet=True))
    finally:
        os.chdir(here)
    return root


def test_manifest_records_paths_that_resolve_from_anywhere(relative_bundle):
    enc = json.loads((relative_bundle / "bundle" / "manifest.json").read_text())["encoder"]
    assert enc["name"] == f"hf:{relative_bundle / 'tower'}"
    assert enc["weights"]["path"] == str(relative_bundle / "tower" / "model.safetensors")


def test_validate_from_another_directory_uses_pytorch(relative_bundle, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = validate(ValidateConfig(target=relative_bundle / "bundle", iterations=2, warmup=0, extra_inputs=2,
                                  quiet=True, out_dir=tmp_path / "r"))
    assert res.passed and res.report["reference"]["pytorch"]["used"] is True, res.failures


def test_weights_gone_auto_falls_back_and_require_fails(relative_bundle, tmp_path, cli):
    b = tmp_path / "bundle"
    shutil.copytree(relative_bundle / "bundle", b, ignore=shutil.ignore_patterns("reports"))
    moved = relative_bundle / "tower.moved"
    (relative_bundle / "tower").rename(moved)
    try:
        res = validate(ValidateConfig(target=b, iterations=2, warmup=0, extra_inputs=2, quiet=True,
                                      out_dir=tmp_path / "r"))
        why = res.report["reference"]["pytorch"]
        assert res.passed and why["used"] is False and "is not there (golden reference only" in why["reason"]
        code, _, exc = cli("validate", b, *FAST, "--torch", "require", "--out", tmp_path / "r2")
        assert code == 2 and isinstance(exc, BundleError) and "is not there" in exc.message
        code, out, _ = cli("validate", b, *FAST, "--out", tmp_path / "r3")
        assert code == 0 and "PyTorch reference not used: the bundle's" in out
    finally:
        moved.rename(relative_bundle / "tower")

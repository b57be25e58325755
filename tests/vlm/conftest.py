"""Tiny VLM folders, written once per session (save_pretrained of random transformers models)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# The suite runs with --import-mode=importlib (no test dir on sys.path): make the helper importable.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from vlm_helpers import build_vlm, save_vlm  # noqa: E402


@pytest.fixture(autouse=True)
def _few_threads(one_torch_thread):
    """Every test here on one PyTorch thread (tests/conftest.py says why)."""


@pytest.fixture(scope="session")
def vlm_folder(tmp_path_factory):
    """vlm_folder(family) -> (folder, model): a saved tiny VLM and the transformers model it came from."""
    root = tmp_path_factory.mktemp("vlms")
    cache = {}

    def make(family: str):
        if family not in cache:
            model = build_vlm(family)
            cache[family] = (save_vlm(model, root / family), model)
        return cache[family]

    return make


@pytest.fixture(scope="session")
def vlm_bundle(vlm_folder, tmp_path_factory):
    """vlm_bundle(family, compress="none", **kw) -> ExportResult of `hf:<tiny VLM folder>` (once per session)."""
    from tokcomp_edge.export import ExportConfig, export_bundle

    root = tmp_path_factory.mktemp("vlm_bundles")
    cache = {}

    def make(family: str, compress: str = "none", **kw):
        key = (family, compress, tuple(sorted(kw.items())))
        if key not in cache:
            folder, _ = vlm_folder(family)
            out = root / f"{family}_{compress.replace(':', '-')}_{len(cache)}"
            cache[key] = export_bundle(ExportConfig(model=f"hf:{folder}", compress=compress, out=out,
                                                    batch_max=4, quiet=True, **kw))
        return cache[key]

    return make

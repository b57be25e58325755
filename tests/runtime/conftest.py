"""Tiny VLM bundles for the runtime tests, exported once per session (an export costs seconds)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# The suite runs with --import-mode=importlib (no test dir on sys.path): make the helpers importable.
sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(scope="session")
def family_bundle(tmp_path_factory):
    """family_bundle(family, compress="none", **export_kw) -> (folder, transformers model, bundle path)."""
    from runtime_helpers import export, make_folder

    root = tmp_path_factory.mktemp("rt_bundles")
    cache = {}

    def make(family: str, compress: str = "none", **kw):
        key = (family, compress, tuple(sorted(kw.items())))
        if family not in cache:
            cache[family] = make_folder(family, root / "folders")
        if key not in cache:
            folder, model = cache[family]
            out = root / f"{family}_{compress.replace(':', '-')}_{len(cache)}"
            cache[key] = (folder, model, export(folder, out, compress, **kw).path)
        return cache[key]

    return make

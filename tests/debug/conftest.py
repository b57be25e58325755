"""Fixtures for the debug tests: the planted massive-activation tower and its healthy twin as bundles."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="session")
def tower_bundles(tmp_path_factory):
    """{"massive": folder, "healthy": folder}: py:planted_tower:<factory> exported with compress none, batch 1–4."""
    from tokcomp_edge.export import ExportConfig, export_bundle

    sys.path.insert(0, str(HERE))
    root = tmp_path_factory.mktemp("debug_bundles")
    try:
        for name in ("massive", "healthy"):
            export_bundle(ExportConfig(model=f"py:planted_tower:{name}", compress="none", out=root / name,
                                       batch_max=4, quiet=True))
    finally:
        sys.path.remove(str(HERE))
    return {"massive": root / "massive", "healthy": root / "healthy"}


@pytest.fixture
def fresh(tower_bundles, tmp_path):
    """A private copy of one of the session bundles (tests that register variants change it)."""

    def copy(name: str) -> Path:
        dest = tmp_path / name
        shutil.copytree(tower_bundles[name], dest)
        return dest

    return copy

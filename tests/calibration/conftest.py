"""Fixtures for the calibration tests: one tiny exported bundle per module, fresh copies per test, and
calibration images written as PNGs (see calib_helpers.py)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

# The suite runs with --import-mode=importlib (no test dir on sys.path): make the helper importable.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from calib_helpers import write_pngs  # noqa: E402


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """A tiny-clip pool:2 bundle (exported once per module; copy it before changing it)."""
    from tokcomp_edge.export import ExportConfig, export_bundle

    out = tmp_path_factory.mktemp("export") / "tiny_pool2"
    export_bundle(ExportConfig(model="tiny-clip", compress="pool:2", out=out, batch_max=4, quiet=True))
    return out


@pytest.fixture(scope="module")
def calib_images(tmp_path_factory) -> Path:
    return write_pngs(tmp_path_factory.mktemp("calib") / "images", 12)


@pytest.fixture
def bundle_dir(exported, tmp_path) -> Path:
    """A private copy of the exported bundle."""
    dst = tmp_path / "bundle"
    shutil.copytree(exported, dst)
    return dst

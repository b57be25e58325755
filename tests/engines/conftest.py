"""Fixtures for the engine tests: tiny hand-made bundles (see tiny_bundle.py) and folder snapshots.

Plan / profile / CLI tests need neither torch nor an export: a bundle is made in milliseconds.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# The suite runs with --import-mode=importlib (no test dir on sys.path): make the helper importable.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from tiny_bundle import write_bundle  # noqa: E402


@pytest.fixture
def make_bundle(tmp_path):
    """Factory: make_bundle(name=…, batch=(lo, hi), extra_variants={…}) → bundle folder under tmp_path."""
    count = {"n": 0}

    def make(**kw) -> Path:
        count["n"] += 1
        return write_bundle(tmp_path / f"bundle{count['n']}", **kw)

    return make


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` with its content (to prove nothing changed)."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def snapshot():
    """tree(folder) → {relative path: bytes} of every file under it (empty when it does not exist)."""
    return tree

"""Stages import downward only (issue 9 Part 2): an AST scan of every module's imports, lazy ones included."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "tokcomp_edge"
# Lower index = lower layer. A module may import its own layer and those below it.
LAYERS = [
    {"errors", "atomic", "console", "extras", "image_policy", "__init__", "core"},
    {"encoders", "compression"},
    {"vlm"},
    {"export"},
    {"calibration"},
    {"engines"},
    {"runtime"},     # the device side: core install only (no torch), may read bundles and engines
    {"validation"},
    {"debug"},
    {"sweep"},       # the compression chooser: workstation side, runs the VLM's own LLM
    {"demo", "cli"},
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def _stage(parts: tuple[str, ...]) -> str:
    name = parts[0]
    return name[:-3] if name.endswith(".py") else name


def _imported_stages(path: Path) -> set[tuple[str, int]]:
    rel = path.relative_to(PKG).parts
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 0:
                if node.module and node.module.startswith("tokcomp_edge."):
                    found.add((node.module.split(".")[1], node.lineno))
                continue
            base = list(rel[:-1])[: len(rel) - node.level]  # the package `from ..x` resolves against
            target = base + (node.module.split(".") if node.module else [])
            if target:
                found.add((target[0] if len(target) > 0 else rel[0], node.lineno))
            elif node.level == len(rel):  # `from .. import x` at the top package
                for alias in node.names:
                    found.add((alias.name, node.lineno))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("tokcomp_edge."):
                    found.add((alias.name.split(".")[1], node.lineno))
    return found


def test_stages_import_downward_only():
    upward = []
    for path in sorted(PKG.rglob("*.py")):
        own = _stage(path.relative_to(PKG).parts)
        if own not in RANK:
            upward.append(f"{path.relative_to(PKG)}: stage {own!r} is not in the layer table")
            continue
        for stage, line in _imported_stages(path):
            stage = stage[:-3] if stage.endswith(".py") else stage
            if stage in RANK and RANK[stage] > RANK[own]:
                upward.append(f"{path.relative_to(PKG)}:{line} imports {stage} (above {own})")
    assert not upward, "\n".join(upward)


def test_the_scan_sees_lazy_and_relative_imports(tmp_path):
    """The scan itself must catch what it is for: a lazy relative import of a higher stage."""
    probe = PKG / "export" / "_layering_probe.py"
    probe.write_text("def f():\n    from ..validation.pipeline import validate\n    from ..core.bundle import Bundle\n")
    try:
        assert ("validation", 2) in _imported_stages(probe) and ("core", 3) in _imported_stages(probe)
    finally:
        probe.unlink()

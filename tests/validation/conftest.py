"""Shared fixtures: tiny bundles exported once per session, copies to damage, a CLI invoker."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from tokcomp_edge.errors import TokcompError


@pytest.fixture(scope="session")
def bundles(tmp_path_factory):
    """Export (once per session) tiny bundles keyed by name: `pool` (tiny-clip pool:2), `prune` (prune:8:norm)."""
    from tokcomp_edge.export import ExportConfig, export_bundle

    root = tmp_path_factory.mktemp("val-bundles")
    specs = {"pool": ("tiny-clip", "pool:2"), "prune": ("tiny-clip", "prune:8:norm")}
    cache: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in cache:
            model, spec = specs[name]
            cache[name] = export_bundle(ExportConfig(model=model, compress=spec, out=root / name, batch_max=4,
                                                     quiet=True)).path
        return cache[name]

    return get


@pytest.fixture
def bundle_copy(bundles, tmp_path):
    """A private copy of a session bundle (tests may damage it); reports of the shared ones stay apart."""

    def copy(name: str) -> Path:
        dest = tmp_path / name
        shutil.copytree(bundles(name), dest, ignore=shutil.ignore_patterns("reports"))
        return dest

    return copy


@pytest.fixture
def cli():
    """Invoke the validation commands on a fresh Typer app; returns (exit code, output, exception).

    A TokcompError escaping the command gets its class's exit code, as `tokcomp_edge.cli.app.main` does.
    """
    from tokcomp_edge.cli import validate_cmds

    app = typer.Typer()
    validate_cmds.register(app)
    runner = CliRunner()

    def invoke(*args: str):
        res = runner.invoke(app, [str(a) for a in args])
        exc = res.exception
        code = exc.exit_code if isinstance(exc, TokcompError) else res.exit_code
        return code, res.output, exc

    return invoke


FAST = ("--iterations", "2", "--warmup", "0", "--quiet", "--extra-inputs", "2")


def write_pngs(folder: Path, sizes=((300, 200), (224, 224), (180, 260))) -> list[Path]:
    """A few PNG images of different shapes: a magenta square on a colour gradient."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (w, h) in enumerate(sizes):
        x = np.zeros((h, w, 3), np.uint8)
        x[..., 0] = np.linspace(0, 255, w, dtype=np.uint8)[None, :]
        x[..., 1] = np.linspace(0, 255, h, dtype=np.uint8)[:, None]
        x[..., 2] = 40 * i
        x[h // 4: h // 2, w // 4: w // 2] = (255, 0, 255)
        p = folder / f"img{i}.png"
        Image.fromarray(x).save(p)
        paths.append(p)
    return paths

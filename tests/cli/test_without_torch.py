"""The Jetson path: a bundle is inspected, linted, planned and validated where PyTorch, transformers, timm
and ModelOpt cannot be imported (JetPack ships TensorRT, not PyTorch)."""

import subprocess
import sys
import textwrap

import pytest

from tokcomp_edge.export import ExportConfig, export_bundle

BLOCKER = textwrap.dedent("""
    import sys
    for m in ("torch", "transformers", "timm", "modelopt", "onnxslim"):
        sys.modules[m] = None  # importing them now raises ImportError
    from tokcomp_edge.cli.app import main
    main(sys.argv[1:])
""")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("nt") / "b"
    export_bundle(ExportConfig(model="tiny-clip", compress="prune:16:norm", out=out, batch_max=4, quiet=True))
    return out


def run(*args, cwd):
    return subprocess.run([sys.executable, "-c", BLOCKER, *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


@pytest.mark.parametrize("args", [
    ("inspect", "{b}"),
    ("lint", "{b}"),
    ("build", "{b}", "--profile", "fp32", "--dry-run", "--engines-dir", "{tmp}/engines"),
    ("validate", "{b}", "--batch", "1", "--iterations", "2", "--warmup", "1", "-q"),
])
def test_command_runs_without_torch(bundle, tmp_path, args):
    argv = [a.format(b=bundle, tmp=tmp_path) for a in args]
    res = run(*argv, cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr


def test_validate_without_torch_says_so_in_the_report(bundle, tmp_path):
    import json

    res = run("validate", bundle, "--batch", "1", "--iterations", "1", "--warmup", "0", "-q", "--out", tmp_path,
              cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    report = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert report["reference"]["pytorch"]["used"] is False
    assert report["passed"] is True

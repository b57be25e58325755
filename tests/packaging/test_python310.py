"""JetPack 6 runs Python 3.10: no 3.11-only syntax or standard library in the package.

No development machine has a 3.10 interpreter, so this checks statically with vermin (a [test] extra),
which knows the version every syntax feature, module, function and keyword argument appeared in.
Annotations are evaluated (`--eval-annotations`) because typer reads the CLI's at run time. A guarded
import of a newer module carries a `# novm` comment saying why it is safe (engines/profile.py: tomllib,
with tomli on 3.10).
"""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_the_package_needs_no_more_than_python_310():
    pytest.importorskip("vermin", reason="vermin comes with the [test] extra: pip install -e '.[test]'")
    code = ("import sys; from vermin.main import main; "
            "sys.argv = ['vermin', '--target=3.10-', '--violations', '--no-tips', '--eval-annotations', "
            "'tokcomp_edge', 'cli.py']; sys.exit(main())")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr


def test_requires_python_says_310():
    text = (ROOT / "pyproject.toml").read_text()
    assert 'requires-python = ">=3.10"' in text and 'tomli>=1.1; python_version < \\"3.11\\"' in text

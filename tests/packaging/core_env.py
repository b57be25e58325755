"""A real core-only virtual environment: tokcomp-edge and its core dependencies, nothing else.

Used by tests/packaging/test_core_install.py and by `make bench` (size and start-up time). Built under
`.cache/core-venv` (git-ignored) and reused while the pinned package list is unchanged, so a test run pays
for it once (~30 s); tokcomp-edge itself is reinstalled from a freshly built wheel every time, since the
source changes between runs (one wheel per process and source state, shared by the environments it builds).

How it is built — the README's Jetson lines, pinned so pip needs no resolver round trips:
1. `python -m venv --without-pip .cache/core-venv` (pip runs from this environment with `--python`, so the
   measured environment holds only what tokcomp-edge needs);
2. `pip install --no-deps` of the core dependency closure: pyproject's `dependencies`, resolved
   recursively through the installed packages' metadata to the versions this (workstation) environment has;
3. a wheel of this checkout, installed with `--no-deps` (non-editable: the test runs the installed copy);
4. `pip check`: the core closure is complete — exactly what `pip install tokcomp-edge` would have pulled.

`build_core_env(ORT_CACHE, extra="ort")` builds the same way a second environment, `.cache/core-ort-venv`:
the core plus pyproject's `[ort]` extra (`pip install 'tokcomp-edge[ort]'`, a Jetson-like install that runs
bundles on ONNX Runtime), so the core environment itself stays free of ONNX Runtime. This workstation has
`onnxruntime-gpu` (nvidia-modelopt's choice on x86-64), one project with `onnxruntime` under another name: the
CPU `onnxruntime` is pinned to its version, so both environments run the same ONNX Runtime release.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache" / "core-venv"
ORT_CACHE = ROOT / ".cache" / "core-ort-venv"
STAMP = ".tokcomp-core-pins.json"


class IndexUnreachable(RuntimeError):
    """pip could not reach any package index (the one reason the core-install test may skip)."""


@dataclass(frozen=True)
class CoreEnv:
    path: Path
    python: Path
    tokcomp: Path
    pins: dict[str, str]

    def env(self) -> dict[str, str]:
        """A process environment that sees only this venv (no PYTHONPATH from the test run)."""
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
        env["PATH"] = f"{self.path / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env["VIRTUAL_ENV"] = str(self.path)
        env.setdefault("COLUMNS", "160")
        return env


# An extra's distribution that this environment holds under another name: the same project and release,
# built for CUDA, with the same requirements (its CUDA ones sit behind its own extras, which stay off).
SAME_PROJECT = {"onnxruntime": ("onnxruntime-gpu",)}


def _pyproject() -> dict:
    try:
        import tomllib  # novm: the tests run on the workstation's Python
    except ModuleNotFoundError:  # pragma: no cover
        import tomli as tomllib
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def core_requirements() -> list[str]:
    """pyproject.toml's `[project] dependencies` (the core install)."""
    return list(_pyproject()["dependencies"])


def extra_requirements(extra: str) -> list[str]:
    """pyproject.toml's `[project.optional-dependencies] <extra>`, e.g. `ort` → ["onnxruntime>=1.22"]."""
    extras = _pyproject().get("optional-dependencies", {})
    if extra not in extras:
        raise RuntimeError(f"pyproject.toml has no [{extra}] extra (it has {sorted(extras)})")
    return list(extras[extra])


def resolve_closure(requirements: list[str]) -> dict[str, str]:
    """{distribution: version} of `requirements` and everything they need, as installed here.

    Markers are evaluated for this interpreter with no extra selected, so optional dependencies of the
    core packages stay out — as `pip install tokcomp-edge` would leave them out.
    """
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins: dict[str, str] = {}
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        name = canonicalize_name(req.name)
        if name in pins:
            continue
        dist = _installed(req.name)
        if dist is None:
            raise RuntimeError(f"dependency {req.name} is not installed in this environment; "
                               "run `make venv` first")
        if req.specifier and not req.specifier.contains(dist.version, prereleases=True):
            raise RuntimeError(f"{req} is needed but this environment has {dist.metadata['Name']} {dist.version}")
        pins[name] = dist.version
        todo += [Requirement(r) for r in (dist.requires or [])]
    return dict(sorted(pins.items()))


def _installed(name: str):
    """The installed distribution `name`, or one of SAME_PROJECT's other names for it; None when neither."""
    for candidate in (name, *SAME_PROJECT.get(name, ())):
        try:
            return metadata.distribution(candidate)
        except metadata.PackageNotFoundError:
            continue
    return None


def _pip(*args: str, python: Path | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    if python is not None:
        cmd += ["--python", str(python)]
    return subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=timeout)


def _check(res: subprocess.CompletedProcess, what: str) -> None:
    if res.returncode == 0:
        return
    # Only an unreachable index excuses a failure; any other pip error is a real one.
    probe = _pip("download", "--no-deps", "--dest", tempfile.mkdtemp(prefix="tokcomp-probe-"), "pip", timeout=300)
    if probe.returncode != 0:
        raise IndexUnreachable(f"pip cannot reach any package index ({probe.stderr.strip().splitlines()[-1:]})")
    raise RuntimeError(f"{what} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")


def _build_wheel(dest: Path) -> Path:
    """A wheel of this checkout, built from a clean copy (no build/ or egg-info left in the work tree)."""
    with tempfile.TemporaryDirectory(prefix="tokcomp-src-") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        for name in ("pyproject.toml", "README.md"):
            shutil.copy2(ROOT / name, src / name)
        shutil.copytree(ROOT / "tokcomp_edge", src / "tokcomp_edge",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        res = _pip("wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", str(dest), str(src))
        _check(res, "building the tokcomp-edge wheel")
    return next(dest.glob("tokcomp_edge-*.whl"))


_WHEELS: dict[str, Path] = {}


def _source_digest() -> str:
    """sha256 over what the wheel is built from (paths and bytes), so an edit between builds is seen."""
    h = hashlib.sha256()
    files = [ROOT / "pyproject.toml", ROOT / "README.md", *(ROOT / "tokcomp_edge").rglob("*")]
    for f in sorted(files):
        if f.is_file() and "__pycache__" not in f.parts and f.suffix != ".pyc":
            h.update(str(f.relative_to(ROOT)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def _wheel() -> Path:
    """This checkout's wheel, built once per process and source state: both environments install the same one."""
    key = _source_digest()
    if key not in _WHEELS or not _WHEELS[key].is_file():
        dest = Path(tempfile.mkdtemp(prefix="tokcomp-wheel-"))
        atexit.register(shutil.rmtree, dest, ignore_errors=True)
        _WHEELS[key] = _build_wheel(dest)
    return _WHEELS[key]


def build_core_env(path: Path = CACHE, extra: str | None = None) -> CoreEnv:
    """Create or refresh the core-only venv at `path` (with `extra`: the core plus that extra's closure).

    Returns where its python and tokcomp are. The pins (the extra's included) key the cache.

    Raises:
        IndexUnreachable: pip reached no index (callers skip).
        RuntimeError: any other failure (callers fail), including an incomplete closure (`pip check`).
    """
    pins = resolve_closure(core_requirements() + (extra_requirements(extra) if extra else []))
    key = json.dumps({"python": sys.version, "pins": pins}, sort_keys=True)
    python = path / "bin" / "python"
    stamp = path / STAMP
    if not (python.exists() and stamp.is_file() and stamp.read_text() == key):
        shutil.rmtree(path, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, timeout=300)
        res = _pip("install", "--no-deps", "--quiet", *[f"{n}=={v}" for n, v in pins.items()], python=python)
        _check(res, "installing the core dependencies")
        stamp.write_text(key)
    res = _pip("install", "--no-deps", "--force-reinstall", "--quiet", str(_wheel()), python=python)
    _check(res, "installing tokcomp-edge into the core environment")
    res = _pip("check", python=python)
    if res.returncode != 0:
        raise RuntimeError(f"the core environment is incomplete (pip check):\n{res.stdout}{res.stderr}")
    return CoreEnv(path=path, python=python, tokcomp=path / "bin" / "tokcomp", pins=pins)


def tree_bytes(path: Path) -> int:
    """Bytes of every regular file under `path` (what `du --apparent-size` counts)."""
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            p = Path(root) / f
            if not p.is_symlink():
                total += p.stat().st_size
    return total


def distribution_sizes(env: CoreEnv) -> dict[str, int]:
    """Bytes per installed distribution in the venv (from each one's RECORD), largest first."""
    code = ("import json, importlib.metadata as m\n"
            "out = {}\n"
            "for d in m.distributions():\n"
            "    total = 0\n"
            "    for f in d.files or []:\n"
            "        p = f.locate()\n"
            "        if p.is_file():\n"
            "            total += p.stat().st_size\n"
            "    out[d.metadata['Name']] = total\n"
            "print(json.dumps(out))")
    res = subprocess.run([str(env.python), "-c", code], capture_output=True, text=True, env=env.env(), check=True)
    return dict(sorted(json.loads(res.stdout).items(), key=lambda kv: -kv[1]))

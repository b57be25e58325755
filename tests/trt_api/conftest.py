"""The real TensorRT Python bindings of 10.3 (JetPack 6) and 11.x, importable on a CPU-only machine.

`tensorrt-cu12-bindings` / `tensorrt-cu13-bindings` are genuine PyPI wheels (~1.3 MB). Their
`tensorrt_bindings/tensorrt.so` links three NVIDIA libraries and needs only nine C entry points from
them; stand-ins compiled from a few lines of C (returning NULL / 0) placed beside it let
`import tensorrt_bindings` succeed, so the whole API surface can be introspected. Constructing a
Builder still fails (the factories return NULL) — these tests check names and kinds, not behaviour.

Everything is cached under `.cache/trt-bindings/` in the repository (git-ignored). The fixture
skips only when PyPI cannot be reached; any other failure (a wheel that does not unpack, gcc
missing, an import that fails) fails the test run.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# The suite runs with --import-mode=importlib (no test dir on sys.path): make the scanner importable.
sys.path.insert(0, str(Path(__file__).resolve().parent))
CACHE = REPO / ".cache" / "trt-bindings"
# (label, distribution, version, soname major). 10.3.0 is JetPack 6's TensorRT.
VERSIONS = [
    ("10.3", "tensorrt-cu12-bindings", "10.3.0", 10),
    ("11.4", "tensorrt-cu13-bindings", "11.4.0.106", 11),
]
# The C symbols tensorrt.so imports from libnvinfer / libnvinfer_plugin / libnvonnxparser
# (`nm -D --undefined-only tensorrt.so`, identical for 10.3 and 11.4).
STUB_C = """
void *createInferBuilder_INTERNAL(void *logger, int version) { return 0; }
void *createInferRefitter_INTERNAL(void *engine, void *logger, int version) { return 0; }
void *createInferRuntime_INTERNAL(void *logger, int version) { return 0; }
void *createNvOnnxParser_INTERNAL(void *network, void *logger, int version) { return 0; }
void *createNvOnnxParserRefitter_INTERNAL(void *refitter, void *logger, int version) { return 0; }
void *getBuilderPluginRegistry(int capability) { return 0; }
void *getPluginRegistry(void) { return 0; }
int getNvOnnxParserVersion(void) { return 0; }
int initLibNvInferPlugins(void *logger, const char *ns) { return 0; }
"""
STUB_LIBS = ("libnvinfer", "libnvinfer_plugin", "libnvonnxparser")


@dataclass(frozen=True)
class Bindings:
    """One unpacked bindings wheel with its stand-in libraries: put `root` on sys.path."""

    label: str
    version: str
    major: int
    root: Path

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(self.root), str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        return env

    def run(self, code: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run Python code in a fresh interpreter that can `import tensorrt_bindings`."""
        return subprocess.run([sys.executable, "-c", code, *args], env=self.env(), capture_output=True, text=True,
                              timeout=timeout, cwd=str(REPO))


def _pypi_reachable() -> bool:
    try:
        with socket.create_connection(("pypi.org", 443), timeout=5):
            return True
    except OSError:
        return False


def _download(dist: str, version: str, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    prefix = dist.replace("-", "_") + f"-{version}-"
    found = sorted(dest.glob(prefix + "*.whl"))
    if found:
        return found[0]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
           "-q", f"{dist}=={version}", "-d", str(dest)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    found = sorted(dest.glob(prefix + "*.whl"))
    if proc.returncode != 0 or not found:
        if not _pypi_reachable():
            pytest.skip(f"PyPI is unreachable, cannot download {dist}=={version} for the API conformance check")
        pytest.fail(f"pip download {dist}=={version} failed although PyPI is reachable:\n{proc.stdout}{proc.stderr}")
    return found[0]


def _compile_stubs(pkg: Path, major: int) -> None:
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        pytest.fail("gcc is needed to compile the TensorRT stand-in libraries (apt install gcc)")
    src = pkg / "trt_stub.c"
    src.write_text(STUB_C)
    for lib in STUB_LIBS:
        so = f"{lib}.so.{major}"
        proc = subprocess.run([cc, "-shared", "-fPIC", "-o", str(pkg / so), f"-Wl,-soname,{so}", str(src)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.fail(f"compiling the stand-in {so} failed:\n{proc.stderr}")


def prepare(label: str, dist: str, version: str, major: int) -> Bindings:
    """Download (once), unpack, add stand-ins; returns the importable root."""
    root = CACHE / f"{dist}-{version}"
    pkg = root / "tensorrt_bindings"
    ready = all((pkg / f"{lib}.so.{major}").is_file() for lib in STUB_LIBS) and (pkg / "__init__.py").is_file()
    if not ready:
        wheel = _download(dist, version, CACHE / "wheels")
        tmp = CACHE / f".{root.name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(tmp)
        _compile_stubs(tmp / "tensorrt_bindings", major)
        shutil.rmtree(root, ignore_errors=True)
        tmp.rename(root)
    bindings = Bindings(label=label, version=version, major=major, root=root)
    proc = bindings.run("import tensorrt_bindings as trt; print(trt.__version__)")
    if proc.returncode != 0 or proc.stdout.strip() != version:
        pytest.fail(f"the {dist} {version} bindings do not import with the stand-ins:\n{proc.stderr[-2000:]}")
    return bindings


@pytest.fixture(scope="session")
def trt_bindings() -> list[Bindings]:
    """Both TensorRT bindings versions, ready to import in a subprocess."""
    return [prepare(*v) for v in VERSIONS]

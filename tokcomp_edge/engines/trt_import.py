"""The one place `tensorrt` is imported (lazily), and the GPU check that goes with it.

TensorRT is an optional runtime: PyPI only carries the small bindings wheels, the libraries come from
NVIDIA's own index (x86) or JetPack (Jetson), so it is never a package dependency and never installed
at run time. Everything that needs it calls `import_tensorrt()` and binds the result as `trt`; its
absence is `RuntimeMissing` (exit 3) with one line saying how to get it.
"""

from __future__ import annotations

import importlib
import platform
from dataclasses import dataclass
from types import ModuleType

from ..errors import RuntimeMissing
from .gpu import GpuInfo, detect_gpus

SUPPORTED_MAJORS = (10, 11)
# Module names, in the order tried: the full wheel / JetPack package, then the bare bindings wheel
# (tensorrt-cuXX-bindings), which carries the same API under another name.
_MODULES = ("tensorrt", "tensorrt_bindings")


def install_hint() -> str:
    """How to get TensorRT on this kind of machine (one line)."""
    if platform.machine() in ("aarch64", "arm64"):
        return ("on a Jetson TensorRT ships with JetPack: `sudo apt install python3-libnvinfer` and create the "
                "venv with --system-site-packages")
    return ("install it from NVIDIA's index: `pip install tensorrt-cu12 --extra-index-url https://pypi.nvidia.com` "
            "(tensorrt-cu13 for CUDA 13), or build on the Jetson where JetPack provides it")


def version_major(version: str) -> int:
    try:
        return int(version.split(".")[0])
    except ValueError:
        return -1


def trt_version(trt: ModuleType) -> str:
    """The imported module's version string (`10.3.0.30`)."""
    return str(getattr(trt, "__version__", "0"))


def import_tensorrt() -> ModuleType:
    """Import TensorRT's Python bindings; bind the result as `trt`.

    Returns:
        the `tensorrt` module (or the bare `tensorrt_bindings`, same API); `trt_version(trt)` is its version.

    Raises:
        RuntimeMissing: not installed, its native libraries do not load, or a major version other than
            10 or 11 (older ones lack strongly typed networks).
    """
    failures = []
    for name in _MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:  # the package exists but something it imports is missing
                failures.append(f"{name}: {exc}")
            continue
        except (ImportError, OSError) as exc:  # bindings present, libnvinfer & co. not loadable
            failures.append(f"{name}: {exc}")
            continue
        version = trt_version(module)
        if version_major(version) not in SUPPORTED_MAJORS:
            raise RuntimeMissing(
                f"TensorRT {version} found, tokcomp builds with TensorRT 10.x or 11.x (strongly typed networks)",
                "upgrade TensorRT (JetPack 6 ships 10.3)")
        return module
    detail = f" ({'; '.join(failures)})" if failures else ""
    raise RuntimeMissing(f"TensorRT is not installed in this Python{detail}", install_hint())


def require_gpu() -> GpuInfo:
    """The CUDA device engines are built for (device 0).

    Raises:
        RuntimeMissing: no driver, or no CUDA device — TensorRT cannot build without one.
    """
    devices, reason = detect_gpus()
    if not devices:
        raise RuntimeMissing(f"no CUDA GPU available: {reason}",
                             "build on a machine with an NVIDIA GPU and driver (or on the Jetson itself); "
                             "`tokcomp build --dry-run` prints the plan and the trtexec command without one")
    return devices[0]


@dataclass(frozen=True)
class BuildTarget:
    """What this machine would build for; either part may be unknown (dry runs on a laptop).

    Attributes:
        gpu: the CUDA device, or None.
        trt_version: TensorRT's version string, or None.
        missing: one phrase per missing part, for the dry-run notes.
    """

    gpu: GpuInfo | None
    trt_version: str | None
    missing: tuple[str, ...] = ()

    @property
    def trt_major(self) -> int | None:
        return version_major(self.trt_version) if self.trt_version else None

    @property
    def trt_short(self) -> str | None:
        return ".".join(self.trt_version.split(".")[:3]) if self.trt_version else None


def probe_target() -> BuildTarget:
    """Find the GPU and TensorRT version without raising (for `--dry-run` and the plan's names)."""
    missing = []
    devices, reason = detect_gpus()
    if not devices:
        missing.append(reason)
    try:
        version: str | None = trt_version(import_tensorrt())
    except RuntimeMissing as exc:
        version = None
        missing.append(exc.message)
    return BuildTarget(gpu=devices[0] if devices else None, trt_version=version, missing=tuple(missing))


def require_target() -> tuple[ModuleType, GpuInfo]:
    """TensorRT and a GPU, both present, or RuntimeMissing (TensorRT first: without it nothing else matters).

    Returns:
        (trt, gpu): the tensorrt module and the CUDA device to build for.
    """
    trt = import_tensorrt()
    gpu = require_gpu()
    return trt, gpu

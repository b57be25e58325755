"""What machine and software produced a report: package versions, CPU, GPU, ONNX Runtime providers."""

from __future__ import annotations

import contextlib
import os
import platform
import sys
from importlib import metadata
from pathlib import Path

# Distributions whose versions explain a result (a missing one is recorded as None).
PACKAGES = ("tokcomp-edge", "numpy", "onnx", "onnxruntime-gpu", "onnxruntime", "torch", "tensorrt",
            "tensorrt-cu12", "tensorrt-cu13", "polygraphy", "nvidia-modelopt", "transformers", "timm", "pillow")


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def cpu_model() -> str:
    """The CPU's marketing name (Linux /proc/cpuinfo; platform.processor elsewhere)."""
    with contextlib.suppress(OSError):  # no /proc (macOS, containers without it): use the fallback below
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def board_model() -> str | None:
    """Jetson and other boards name themselves in the device tree."""
    try:
        return Path("/proc/device-tree/model").read_text().strip("\x00\n ") or None
    except OSError:
        return None


def nvidia_gpus() -> list[dict[str, str]]:
    """GPUs the NVIDIA driver lists in /proc (no nvidia-smi call, no CUDA context)."""
    gpus = []
    root = Path("/proc/driver/nvidia/gpus")
    if root.is_dir():
        for d in sorted(root.iterdir()):
            info: dict[str, str] = {"bus": d.name}
            with contextlib.suppress(OSError):  # a GPU entry without details still counts as a GPU
                for line in (d / "information").read_text().splitlines():
                    if ":" in line:
                        k, v = line.split(":", 1)
                        info[k.strip().lower().replace(" ", "_")] = v.strip()
            gpus.append(info)
    return gpus


def driver_version() -> str | None:
    try:
        first = Path("/proc/driver/nvidia/version").read_text().splitlines()[0]
    except (OSError, IndexError):
        return None
    return first.strip()


def ort_providers() -> list[str] | None:
    try:
        import onnxruntime

        return list(onnxruntime.get_available_providers())
    except ImportError:
        return None


def collect() -> dict:
    """The report's `environment` section."""
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "board": board_model(),
        "gpus": nvidia_gpus(),
        "nvidia_driver": driver_version(),
        "onnxruntime_available_providers": ort_providers(),
        "packages": package_versions(),
    }

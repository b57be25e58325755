"""Which CUDA GPU is here: name and compute capability, read from the CUDA driver with ctypes.

Why the driver library and not torch or TensorRT: a Jetson that builds engines may have neither torch
nor a working `trt.Builder` yet, but every machine with an NVIDIA driver (JetPack included) has
`libcuda.so.1`. Asking it costs nothing, needs no package, and works the same on x86 and aarch64.
"""

from __future__ import annotations

import ctypes
import re
from dataclasses import asdict, dataclass
from typing import Any

# CUdevice_attribute values from cuda.h (stable since CUDA 2.x).
_ATTR_CC_MAJOR = 75
_ATTR_CC_MINOR = 76
_DRIVER_LIBS = ("libcuda.so.1", "libcuda.so")


@dataclass(frozen=True)
class GpuInfo:
    """One CUDA device as engine names and engine.json record it.

    Attributes:
        name: the driver's device name (`NVIDIA H100 80GB HBM3`, `Orin`).
        compute_capability: (major, minor), e.g. (8, 7) for Orin.
        index: CUDA device ordinal.
    """

    name: str
    compute_capability: tuple[int, int]
    index: int = 0

    @property
    def sm(self) -> str:
        major, minor = self.compute_capability
        return f"sm{major}{minor}"

    @property
    def slug(self) -> str:
        """File-name-safe id: `orin-sm87`, `h100-80gb-hbm3-sm90` (engines are not portable across GPUs)."""
        return gpu_slug(self.name, self.compute_capability)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["compute_capability"] = f"{self.compute_capability[0]}.{self.compute_capability[1]}"
        d["slug"] = self.slug
        return d


def gpu_slug(name: str, compute_capability: tuple[int, int]) -> str:
    """`NVIDIA GeForce RTX 4090`, (8, 9) → `geforce-rtx-4090-sm89`.

    The vendor word is dropped (every name has it); the compute capability is appended because two
    boards with the same marketing name can differ in SM version, and engines follow the SM.
    """
    words = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-").split("-")
    words = [w for w in words if w and w != "nvidia"]
    major, minor = compute_capability
    return "-".join([*words, f"sm{major}{minor}"]) if words else f"gpu-sm{major}{minor}"


def _load_driver() -> ctypes.CDLL | None:
    for lib in _DRIVER_LIBS:
        try:
            return ctypes.CDLL(lib)
        except OSError:
            continue
    return None


def detect_gpus() -> tuple[list[GpuInfo], str]:
    """All CUDA devices the driver reports, and a reason when there are none.

    Returns:
        (devices, reason): `reason` is empty when at least one device was found, else one phrase
        saying why not (no driver library, cuInit failed with its code, zero devices).
    """
    cuda = _load_driver()
    if cuda is None:
        return [], "no NVIDIA driver (libcuda.so.1 not found)"
    rc = cuda.cuInit(0)
    if rc != 0:
        return [], f"the CUDA driver did not initialise (cuInit error {rc})"
    count = ctypes.c_int(0)
    if cuda.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value == 0:
        return [], "the CUDA driver reports no devices"
    devices = []
    for i in range(count.value):
        dev = ctypes.c_int(0)
        if cuda.cuDeviceGet(ctypes.byref(dev), i) != 0:
            continue
        buf = ctypes.create_string_buffer(256)
        cuda.cuDeviceGetName(buf, len(buf), dev)
        major, minor = ctypes.c_int(0), ctypes.c_int(0)
        cuda.cuDeviceGetAttribute(ctypes.byref(major), _ATTR_CC_MAJOR, dev)
        cuda.cuDeviceGetAttribute(ctypes.byref(minor), _ATTR_CC_MINOR, dev)
        devices.append(GpuInfo(name=buf.value.decode(errors="replace").strip() or f"cuda{i}",
                               compute_capability=(major.value, minor.value), index=i))
    if not devices:
        return [], "the CUDA driver reports devices but none could be queried"
    return devices, ""


def detect_gpu() -> GpuInfo | None:
    """The first CUDA device (the one TensorRT builds for by default), or None."""
    devices, _ = detect_gpus()
    return devices[0] if devices else None

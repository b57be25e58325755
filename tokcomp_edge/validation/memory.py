"""Peak memory: host RSS of this process, and device memory where a GPU runs the model.

psutil is not a dependency: Linux exposes the peak resident set size as VmHWM in /proc/self/status,
and writing "5" to /proc/self/clear_refs resets it (Linux ≥ 4.0), which lets each runner's peak be
measured on its own inside one process. Where that reset is refused (some containers), the peak is the
whole process's so far and the report says so. Elsewhere resource.getrusage gives the process peak.
"""

from __future__ import annotations

import contextlib
import resource
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kib(field: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def current_rss_bytes() -> int | None:
    """Resident set size now (None where /proc is not available)."""
    kib = _status_kib("VmRSS")
    return kib * 1024 if kib is not None else None


def peak_rss_bytes() -> int:
    """Peak RSS since process start or the last successful reset_peak()."""
    kib = _status_kib("VmHWM")
    if kib is not None:
        return kib * 1024
    ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return ru if sys.platform == "darwin" else ru * 1024  # macOS reports bytes, Linux KiB


def reset_peak() -> bool:
    """Reset the kernel's peak-RSS counter to the current RSS; False where not permitted."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


@dataclass
class HostPeak:
    """Host memory around one phase.

    Attributes:
        baseline_bytes: RSS when the phase began.
        peak_bytes: peak RSS during the phase (or since process start, see `isolated`).
        isolated: True when the peak counter was reset at the start, so the peak belongs to this phase.
    """

    baseline_bytes: int | None = None
    peak_bytes: int | None = None
    isolated: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


@contextlib.contextmanager
def track_host_peak() -> Iterator[HostPeak]:
    """Measure peak RSS over the `with` body (fills the yielded HostPeak on exit)."""
    rec = HostPeak(baseline_bytes=current_rss_bytes(), isolated=reset_peak())
    try:
        yield rec
    finally:
        rec.peak_bytes = peak_rss_bytes()


def cuda_mem_info() -> tuple[int, int] | None:
    """(free, total) bytes of the current CUDA device via the CUDA runtime, or None without one.

    Uses Polygraphy's ctypes wrapper of libcudart (no PyTorch or cuda-python needed on a Jetson).
    """
    import ctypes

    try:
        from polygraphy import cuda

        handle = cuda.wrapper().handle
        free, total = ctypes.c_size_t(), ctypes.c_size_t()
        if handle.cudaMemGetInfo(ctypes.byref(free), ctypes.byref(total)) != 0:
            return None
        return int(free.value), int(total.value)
    except Exception:  # no libcudart, no driver, no device: there is simply no GPU figure
        return None


def fmt_bytes(n: int | None) -> str:
    """Human-readable size (MiB/GiB), '—' for unknown."""
    if n is None:
        return "—"
    if n >= 1 << 30:
        return f"{n / (1 << 30):.2f} GiB"
    return f"{n / (1 << 20):.1f} MiB"

"""GPU detection through the CUDA driver (ctypes), against a stand-in libcuda compiled here."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tokcomp_edge.engines import gpu
from tokcomp_edge.engines.trt_import import require_gpu
from tokcomp_edge.errors import RuntimeMissing

# The five driver entry points gpu.py calls, answering like a Jetson AGX Orin (or failing on demand).
FAKE_LIBCUDA = r"""
#include <string.h>
#include <stdlib.h>
static int count(void) { const char *n = getenv("FAKE_CUDA_DEVICES"); return n ? atoi(n) : 1; }
int cuInit(unsigned flags) { const char *e = getenv("FAKE_CUDA_INIT_ERROR"); return e ? atoi(e) : 0; }
int cuDeviceGetCount(int *n) { *n = count(); return 0; }
int cuDeviceGet(int *dev, int ordinal) { *dev = ordinal; return 0; }
int cuDeviceGetName(char *name, int len, int dev) {
    strncpy(name, dev ? "NVIDIA H100 80GB HBM3" : "Orin", len); return 0; }
int cuDeviceGetAttribute(int *v, int attr, int dev) {
    if (attr == 75) *v = dev ? 9 : 8; else if (attr == 76) *v = dev ? 0 : 7; else return 1; return 0; }
"""


@pytest.fixture(scope="module")
def fake_libcuda(tmp_path_factory):
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler to build the stand-in libcuda")
    d = tmp_path_factory.mktemp("cuda")
    (d / "fake.c").write_text(FAKE_LIBCUDA)
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(d / "libcuda.so.1"), str(d / "fake.c")], check=True)
    return d / "libcuda.so.1"


def test_detects_devices_through_the_driver(fake_libcuda, monkeypatch):
    monkeypatch.setattr(gpu, "_DRIVER_LIBS", (str(fake_libcuda),))
    monkeypatch.setenv("FAKE_CUDA_DEVICES", "2")
    devices, reason = gpu.detect_gpus()
    assert reason == ""
    assert [(d.name, d.compute_capability, d.index, d.slug) for d in devices] == [
        ("Orin", (8, 7), 0, "orin-sm87"), ("NVIDIA H100 80GB HBM3", (9, 0), 1, "h100-80gb-hbm3-sm90")]
    assert gpu.detect_gpu().name == "Orin" and require_gpu().slug == "orin-sm87"


def test_driver_without_devices(fake_libcuda, monkeypatch):
    monkeypatch.setattr(gpu, "_DRIVER_LIBS", (str(fake_libcuda),))
    monkeypatch.setenv("FAKE_CUDA_DEVICES", "0")
    assert gpu.detect_gpus() == ([], "the CUDA driver reports no devices")
    monkeypatch.setenv("FAKE_CUDA_DEVICES", "1")
    monkeypatch.setenv("FAKE_CUDA_INIT_ERROR", "100")
    assert gpu.detect_gpus() == ([], "the CUDA driver did not initialise (cuInit error 100)")
    with pytest.raises(RuntimeMissing) as exc:
        require_gpu()
    assert "cuInit error 100" in exc.value.message and "--dry-run" in exc.value.hint and exc.value.exit_code == 3


def test_no_driver(monkeypatch):
    monkeypatch.setattr(gpu, "_DRIVER_LIBS", ("libcuda-not-here.so.1",))
    assert gpu.detect_gpu() is None
    with pytest.raises(RuntimeMissing, match="libcuda.so.1 not found"):
        require_gpu()

"""The lazy TensorRT import: absent → RuntimeMissing (exit 3) with a how-to; version checks; probing."""

from __future__ import annotations

import sys

import pytest

from tokcomp_edge.engines import gpu, trt_import
from tokcomp_edge.errors import RuntimeMissing


@pytest.fixture
def no_tensorrt(monkeypatch):
    monkeypatch.setattr(trt_import, "_MODULES", ("tensorrt_absent_in_this_test",))


def test_absent_tensorrt_is_exit_3_with_install_hint(no_tensorrt, monkeypatch):
    monkeypatch.setattr(trt_import.platform, "machine", lambda: "x86_64")
    with pytest.raises(RuntimeMissing) as exc:
        trt_import.import_tensorrt()
    assert exc.value.exit_code == 3
    assert "TensorRT is not installed" in exc.value.message
    assert "pip install tensorrt-cu12 --extra-index-url https://pypi.nvidia.com" in exc.value.hint


def test_jetson_hint_names_jetpack(no_tensorrt, monkeypatch):
    monkeypatch.setattr(trt_import.platform, "machine", lambda: "aarch64")
    with pytest.raises(RuntimeMissing) as exc:
        trt_import.import_tensorrt()
    assert "JetPack" in exc.value.hint and "python3-libnvinfer" in exc.value.hint


def _fake_module(tmp_path, monkeypatch, name, body):
    (tmp_path / f"{name}.py").write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(trt_import, "_MODULES", (name,))
    monkeypatch.delitem(sys.modules, name, raising=False)


def test_old_major_is_refused(tmp_path, monkeypatch):
    _fake_module(tmp_path, monkeypatch, "fake_trt_eight", "__version__ = '8.6.1'\n")
    with pytest.raises(RuntimeMissing, match="TensorRT 8.6.1 found"):
        trt_import.import_tensorrt()


def test_supported_major_is_returned_as_the_module(tmp_path, monkeypatch):
    _fake_module(tmp_path, monkeypatch, "fake_trt_ten", "__version__ = '10.3.0.30'\n")
    trt = trt_import.import_tensorrt()
    assert trt.__name__ == "fake_trt_ten" and trt_import.trt_version(trt) == "10.3.0.30"


def test_broken_native_libraries_are_reported(tmp_path, monkeypatch):
    _fake_module(tmp_path, monkeypatch, "fake_trt_broken",
                 "raise ImportError('libnvinfer.so.10: cannot open shared object file')\n")
    with pytest.raises(RuntimeMissing) as exc:
        trt_import.import_tensorrt()
    assert "libnvinfer.so.10" in exc.value.message


def test_probe_target_never_raises(no_tensorrt, monkeypatch):
    monkeypatch.setattr(gpu, "_DRIVER_LIBS", ("libcuda-not-here.so.1",))
    target = trt_import.probe_target()
    assert target.gpu is None and target.trt_version is None and target.trt_major is None
    assert len(target.missing) == 2 and "libcuda" in target.missing[0]


def test_require_target_checks_tensorrt_first(no_tensorrt, monkeypatch):
    monkeypatch.setattr(gpu, "_DRIVER_LIBS", ("libcuda-not-here.so.1",))
    with pytest.raises(RuntimeMissing, match="TensorRT is not installed"):
        trt_import.require_target()


def test_build_target_versions():
    t = trt_import.BuildTarget(gpu=None, trt_version="11.4.0.106")
    assert (t.trt_major, t.trt_short) == (11, "11.4.0")
    assert trt_import.version_major("x") == -1

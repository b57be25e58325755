"""`tokcomp sweep --backend tensorrt` against the real 10.3 and 11.4 bindings: the TensorRT it touches (its own
module, the builder and the device runtime's TrtBackend it reuses) is in the name scan and every name exists;
and with the bindings importable but no GPU (this machine) it exits 3 naming the GPU, before any model loads."""

from __future__ import annotations

import subprocess
import sys

import pytest
from trt_api_scan import PACKAGE, REPO, check_uses, scan_files, trt_source_files

SWEEP_TRT = PACKAGE / "sweep" / "trt_latency.py"
REUSED = [PACKAGE / "engines" / "trt_build.py", PACKAGE / "runtime" / "backends.py"]


def test_the_sweep_backend_is_scanned():
    files = trt_source_files()
    assert SWEEP_TRT in files and all(f in files for f in REUSED)
    # The sweep's module names no TensorRT API itself (it reuses build_engine and TrtBackend); should it ever,
    # the scan above covers it, and the test below checks its names with the modules it drives.
    assert "trt." not in SWEEP_TRT.read_text().replace("trt_", "")


@pytest.mark.parametrize("label", ["10.3", "11.4"])
def test_names_the_sweep_backend_reaches_exist(trt_bindings, tmp_path, label):
    bindings = next(b for b in trt_bindings if b.label == label)
    uses = scan_files([SWEEP_TRT, *REUSED])
    assert len(uses) > 40
    problems = check_uses(bindings, uses, tmp_path)
    assert not problems, f"TensorRT {bindings.version}: {problems}"


def test_bindings_without_gpu_exit_3_before_loading(trt_bindings, tmp_path):
    bindings = trt_bindings[0]
    fixture = REPO / "benchmarks" / "fixtures" / "shapes-vlm"
    photos = REPO / "tests" / "calibration" / "photos"
    code = ("import sys\nimport tokcomp_edge.sweep.llm as llm, tokcomp_edge.vlm as vlm\n"
            "def no(*a, **k): raise SystemExit('a model was loaded')\n"
            "llm.load_language_model = vlm.load_vlm = no\n"
            "from tokcomp_edge.cli.app import main\n"
            f"sys.exit(main(['sweep', 'hf:{fixture}', '--images', '{photos}', '--backend', 'tensorrt', "
            f"'--tokens', '16', '--out', '{tmp_path / 'o'}', '-q']))")
    res = subprocess.run([sys.executable, "-c", code], env=bindings.env(), capture_output=True, text=True,
                         timeout=120, cwd=str(REPO))
    assert res.returncode == 3, res.stderr
    assert "no CUDA GPU" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []

"""With the real TensorRT bindings importable but no GPU: versions are reported, builds exit 3, write nothing."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engines"))
from tiny_bundle import write_bundle  # noqa: E402

# Runs in a subprocess whose sys.path has one bindings version; TensorRT is forced to come from the
# stand-in bindings and the driver to be absent, whatever this machine has.
SCRIPT = r"""
import json, sys
from pathlib import Path
from tokcomp_edge.engines import gpu, trt_import
from tokcomp_edge.engines.build import BuildConfig, build_engine
from tokcomp_edge.errors import RuntimeMissing
trt_import._MODULES = ("tensorrt_bindings",)
gpu._DRIVER_LIBS = ("libcuda-absent-in-this-test.so.1",)
trt = trt_import.import_tensorrt()
target = trt_import.probe_target()
out = {"module": trt.__name__, "version": trt_import.trt_version(trt), "probe": target.trt_version,
       "major": target.trt_major, "gpu": target.gpu is not None}
dry = build_engine(BuildConfig(bundle=Path(sys.argv[1]), profile="fp16", engines_dir=Path(sys.argv[2]),
                               dry_run=True))
out["dry_engine"] = dry.plan.engine_path.name
out["dry_majors"] = sorted(dry.trtexec)
try:
    build_engine(BuildConfig(bundle=Path(sys.argv[1]), profile="fp16", engines_dir=Path(sys.argv[2]), quiet=True))
    out["exit"] = 0
except RuntimeMissing as exc:
    out["exit"], out["message"] = exc.exit_code, exc.message
print(json.dumps(out))
"""


@pytest.mark.parametrize("label", ["10.3", "11.4"])
def test_build_without_gpu_exits_3_and_writes_nothing(trt_bindings, tmp_path, label):
    bindings = next(b for b in trt_bindings if b.label == label)
    bundle = write_bundle(tmp_path / "bundle", name="tiny")
    engines = tmp_path / "engines"
    before = {p.name: p.read_bytes() for p in bundle.iterdir()}
    proc = bindings.run(SCRIPT, str(bundle), str(engines))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["module"] == "tensorrt_bindings" and out["version"] == bindings.version
    assert out["probe"] == bindings.version and out["major"] == bindings.major and out["gpu"] is False
    # half known: the TensorRT part of the name is filled in, the GPU part stays a marked placeholder
    short = ".".join(bindings.version.split(".")[:3])
    assert out["dry_engine"] == f"{{gpu}}-trt{short}-fp16.plan" and out["dry_majors"] == [bindings.major]
    assert out["exit"] == 3 and "no CUDA GPU" in out["message"]
    assert not engines.exists()
    assert {p.name: p.read_bytes() for p in bundle.iterdir()} == before


HELPERS = r"""
import json
import tensorrt_bindings as trt
from tokcomp_edge.engines.trt_build import dtype_names, make_logger
logger = make_logger(trt)
assert isinstance(logger, trt.ILogger)
# TensorRT calls log() from C++ through the ILogger trampoline; calling it from Python takes the same path.
trt.ILogger.log(logger, trt.ILogger.Severity.ERROR, "parse failed")
logger.log(trt.ILogger.Severity.INTERNAL_ERROR, "internal")
logger.log(trt.ILogger.Severity.WARNING, "slow tactic")
logger.log(trt.ILogger.Severity.INFO, "info is dropped")
names = dtype_names(trt)
print(json.dumps({"errors": logger.errors, "warnings": logger.warnings,
                  "half": names[trt.DataType.HALF], "uint8": names[trt.DataType.UINT8], "n": len(names)}))
"""


@pytest.mark.parametrize("label", ["10.3", "11.4"])
def test_adapter_helpers_work_with_the_real_bindings(trt_bindings, label):
    """The logger subclass and the dtype table are built from real TensorRT classes and enums."""
    bindings = next(b for b in trt_bindings if b.label == label)
    proc = bindings.run(HELPERS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out == {"errors": ["parse failed", "internal"], "warnings": ["slow tactic"], "half": "float16",
                   "uint8": "uint8", "n": 8}

"""The engine path (debug/trt.py): needs TensorRT and an NVIDIA GPU, skipped with the reason elsewhere."""

from __future__ import annotations

import pytest

from tokcomp_edge.engines.trt_import import probe_target

pytestmark = pytest.mark.tensorrt


def test_engine_debug_reports_every_block(fresh, tmp_path):
    t = probe_target()
    if t.gpu is None or t.trt_version is None:
        pytest.skip("needs TensorRT and an NVIDIA GPU: " + "; ".join(t.missing))
    from tokcomp_edge.debug import DebugConfig, debug
    from tokcomp_edge.engines.build import BuildConfig, build_engine

    folder = fresh("healthy")
    built = build_engine(BuildConfig(bundle=folder, profile="fp16", engines_dir=tmp_path / "engines", quiet=True))
    result = debug(DebugConfig(target=built.engine_path, bundle=folder, quiet=True))
    assert [b.index for b in result.blocks] == [0, 1, 2] and result.culprit is None

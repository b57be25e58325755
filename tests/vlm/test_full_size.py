"""Full-size VLM vision path (slow): a published preset's tower + transform + projector at its real size."""

from __future__ import annotations

import pytest


@pytest.mark.slow
def test_smolvlm_256m_vision_path_exports_with_parity(tmp_path):
    from tokcomp_edge.export import ExportConfig, export_bundle

    res = export_bundle(ExportConfig(model="smolvlm-256m", out=tmp_path / "b", batch_max=2, quiet=True))
    m = res.manifest
    assert res.parity.passed
    assert m["vlm"]["family"] == "idefics3" and m["vlm"]["arithmetic"] == \
        "1024 → pixel shuffle 4×4 → 64 → linear → 64 × 576"
    assert m["onnx"]["outputs"][0]["shape"][1:] == [64, 576]
    assert m["encoder"]["layers_run"] == 12 and m["vlm"]["llm"]["hidden"] == 576

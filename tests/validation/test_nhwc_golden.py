"""An nhwc (uint8 input) variant is checked against the golden reference without PyTorch — the Jetson
case. Regression: golden inputs used to be continuous noise that no uint8 frame reproduces, so an
nhwc engine on a machine without PyTorch had nothing to compare and failed."""

import numpy as np

from tokcomp_edge.core.bundle import Bundle
from tokcomp_edge.export import ExportConfig, export_bundle
from tokcomp_edge.validation import ValidateConfig, validate


def test_golden_inputs_are_exact_8bit_images(tmp_path):
    res = export_bundle(ExportConfig(model="tiny-siglip", compress="pool:2", out=tmp_path / "b", batch_max=4,
                                     quiet=True))
    b = Bundle.load(res.path)
    x = b.reference()["pixel_values.b1"]
    mean = np.asarray(b.encoder["mean"], np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(b.encoder["std"], np.float32).reshape(1, 3, 1, 1)
    u8 = (x * std + mean) * 255
    assert np.abs(u8 - np.round(u8)).max() < 1e-3


def test_nhwc_variant_validates_on_golden_without_torch(tmp_path):
    res = export_bundle(ExportConfig(model="tiny-clip", compress="prune:16:norm", out=tmp_path / "b", batch_max=4,
                                     variants=("nhwc",), quiet=True))
    result = validate(ValidateConfig(target=res.path, variant="nhwc", torch="off", iterations=0, extra_inputs=0,
                                     quiet=True))
    assert result.passed, result.failures
    sources = {c["source"] for c in result.report["accuracy"]["checks"]}
    assert sources == {"golden"}

"""The full-size presets build and run (slow: hundreds of millions of random parameters)."""

from __future__ import annotations

import pytest
import torch

from tokcomp_edge.encoders import EncoderConfig, build_encoder, list_presets

REAL = [s.name for s in list_presets() if not s.name.startswith("tiny-")]


@pytest.mark.slow
@pytest.mark.parametrize("name", REAL)
def test_real_preset_builds_and_runs(name):
    enc = build_encoder(EncoderConfig(name, layer=-2))
    spec = enc.spec
    x = torch.zeros(1, 3, *spec.image_size)
    with torch.no_grad():
        y, _ = enc.tower(x, with_cls_attention=spec.has_cls)
    assert y.shape == (1, spec.prefix_tokens + spec.patch_tokens, spec.hidden_size)
    assert torch.isfinite(y).all()

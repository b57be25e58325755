"""Every tiny tower exports with the dynamo exporter and a dynamic batch (no data-dependent Python)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from tokcomp_edge.encoders import EncoderConfig, build_encoder


class TokensOnly(torch.nn.Module):
    def __init__(self, tower, with_cls_attention: bool):
        super().__init__()
        self.tower = tower
        self.with_cls_attention = with_cls_attention

    def forward(self, x):
        y, attn = self.tower(x, with_cls_attention=self.with_cls_attention)
        return (y, attn) if self.with_cls_attention else y


@pytest.mark.parametrize("name", ["tiny-clip", "tiny-siglip", "tiny-dinov2", "tiny-vit", "timm:test_vit"])
def test_dynamo_export_dynamic_batch(name, pixels, tmp_path):
    import onnxruntime as ort

    enc = build_encoder(EncoderConfig(name, layer=-2 if name == "tiny-clip" else -1))
    size = enc.spec.image_size[0]
    wrapper = TokensOnly(enc.tower, enc.spec.has_cls).eval()
    x = pixels(batch=2, size=size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prog = torch.onnx.export(wrapper, (x,), dynamo=True, verbose=False,
                                 dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=8)}})
    path = tmp_path / "m.onnx"
    prog.save(str(path), external_data=False)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    for batch in (1, 3):  # batch sizes other than the traced one
        xb = pixels(batch=batch, size=size, seed=batch)
        got = sess.run(None, {sess.get_inputs()[0].name: xb.numpy()})
        with torch.no_grad():
            want = wrapper(xb)
        want = want if isinstance(want, tuple) else (want,)
        assert len(got) == len(want)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w.numpy(), rtol=1e-4, atol=1e-4)

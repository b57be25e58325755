"""Per family: tiny random VLM → save_pretrained → `hf:` export → ONNX Runtime equals transformers'
`get_image_features` for one tile (batch 1 and 2), the same path a real checkpoint takes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from vlm_helpers import FAMILIES, hf_features, tile_pixels

from tokcomp_edge.core.ort_session import ort_session

# get_image_features' token counts for the tiny configs (8x8 grid): CLS dropped, shuffle 2, pool 2.
TOKENS = {"llava": 64, "llava_onevision": 64, "internvl": 16, "idefics3": 16, "smolvlm": 16, "gemma3": 16,
          "paligemma": 64}


def _close(got: np.ndarray, want: np.ndarray) -> None:
    scale = float(np.abs(want).max())
    assert scale > 1e-3, "the reference is (near) zero: the comparison would prove nothing"
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 + 1e-4 * scale)


@pytest.mark.parametrize("family", FAMILIES)
def test_onnx_equals_get_image_features(vlm_folder, vlm_bundle, family):
    _, model = vlm_folder(family)
    res = vlm_bundle(family)
    m = res.manifest
    assert m["vlm"]["family"] == family and m["vlm"]["projector"] is True
    assert m["tokens_out"] == TOKENS[family] and m["onnx"]["outputs"][0]["shape"][1:] == [TOKENS[family], 48]
    assert m["encoder"]["weights"]["kind"] == "file"
    assert m["encoder"]["weights"]["covers"] == "vision-path tensors"
    sess = ort_session(res.path / "model.onnx")
    for batch in (1, 2):
        x = tile_pixels(batch, seed=batch)
        want = hf_features(model, family, x).numpy()
        (got,) = sess.run(["tokens"], {"pixel_values": x.numpy()})
        assert got.shape == want.shape == (batch, TOKENS[family], 48)
        _close(got, want)


def test_manifest_records_the_vlm(vlm_bundle):
    m = vlm_bundle("internvl").manifest
    v = m["vlm"]
    assert v["transformers_class"] == "transformers.InternVLForConditionalGeneration"
    assert (v["feature_layer"], v["select"], v["shuffle"], v["final_norm"]) == (-1, "default", 2, True)
    assert v["projector_class"].endswith("InternVLMultiModalProjector")
    assert v["llm"] == {"model_type": "qwen2", "hidden": 48, "layers": 1, "heads": 2, "kv_heads": 1, "mlp": 64,
                        "gated": True, "kv_layers": 1}
    assert v["native_tokens_per_tile"] == v["tokens_per_tile"] == 16
    assert v["arithmetic"] == "65 → drop CLS → 64 → pixel shuffle 2×2 → 16 → mlp1 → 16 × 48"
    assert (m["tokens_in"], m["tokens_out"], m["dim_out"], m["grid_out"]) == (16, 16, 48, [4, 4])


def test_layers_after_the_feature_layer_are_not_exported(vlm_bundle):
    """LLaVA reads hidden_states[-2]: the last CLIP block is dead weight and must not be in the graph."""
    import onnx

    res = vlm_bundle("llava")
    assert res.manifest["encoder"]["layers_run"] == 2  # of 3
    names = {i.name for i in onnx.load(str(res.path / "model.onnx")).graph.initializer}
    text = " ".join(names) + " " + " ".join(n.name for n in onnx.load(str(res.path / "model.onnx")).graph.node)
    assert "layers.1" in text and "layers.2" not in text


def test_idefics3_pixel_shuffle_is_internvl_order():
    """The connector's pixel_shuffle is the same permutation as InternVL's (and not torch's)."""
    import transformers as T
    from transformers.models.idefics3.modeling_idefics3 import Idefics3Connector
    from vlm_helpers import vlm_config

    from tokcomp_edge.compression.functional import unshuffle_tokens

    conn = Idefics3Connector(vlm_config("idefics3"))
    x = torch.randn(2, 64, 32)
    want = conn.pixel_shuffle(x, 2)
    assert torch.equal(unshuffle_tokens(x, 8, 8, 2, "internvl"), want)
    assert not torch.equal(unshuffle_tokens(x, 8, 8, 2, "torch"), want)
    model = T.InternVLModel(vlm_config("internvl"))
    g = model.pixel_shuffle(x.reshape(2, 8, 8, 32), scale_factor=0.5).reshape(2, 16, -1)
    assert torch.equal(g, want)

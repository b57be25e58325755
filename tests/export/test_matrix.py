"""Every compressor × every tiny preset exports, passes parity, and has the documented token counts;
each compressor equals an independent computation on the `none` tokens of the same seeded encoder."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tokcomp_edge.core.bundle import Bundle

TINY = ["tiny-clip", "tiny-siglip", "tiny-dinov2", "tiny-vit"]
SPECS = ["none", "pool:2", "pool:3:max", "pool:4", "bilinear:5x7", "unshuffle:2", "unshuffle:3:internvl:pad",
         "prune:32:norm", "prune:32:cls-sim", "prune:32:cls-attn"]
GRID = (14, 14)  # tiny presets: patch 16 at 224


def expected_tokens(spec, prefix_out):
    h, w = GRID
    return prefix_out + {
        "none": h * w, "pool:2": 49, "pool:3:max": 25, "pool:4": 16, "bilinear:5x7": 35, "unshuffle:2": 49,
        "unshuffle:3:internvl:pad": 25, "prune:32:norm": 32, "prune:32:cls-sim": 32, "prune:32:cls-attn": 32,
    }[spec]


def cases():
    for model in TINY:
        for spec in SPECS:
            if spec.endswith("cls-attn") and model == "tiny-siglip":
                continue  # no CLS token: rejected before export (tested in test_errors)
            yield model, spec


@pytest.mark.parametrize("model,spec", list(cases()))
def test_export_passes_parity_and_counts(make_bundle, model, spec):
    # tiny-vit keeps its CLS by default, and unshuffled tokens cannot sit beside it
    res = make_bundle(model, spec, prefix="drop" if spec.startswith("unshuffle") else None)
    assert res.parity.passed
    b = Bundle.load(res.path)  # checksums verified
    m = b.manifest
    comp = m["compression"]
    assert comp["tokens_out"] == expected_tokens(spec, comp["prefix_out"]) == m["tokens_out"]
    ref = b.reference()
    for batch in b.reference_batches():
        tok = ref[f"tokens.b{batch}"]
        assert tok.shape == (batch, comp["tokens_out"], comp["dim_out"])
        if spec.startswith("prune"):
            idx = ref[f"indices.b{batch}"]
            assert idx.shape == (batch, 32) and idx.dtype == np.int64
            assert np.all(np.diff(idx, axis=1) > 0), "kept tokens must be in grid order"
    shapes = {o["name"]: o["shape"] for o in m["onnx"]["outputs"]}
    assert shapes["tokens"] == ["batch", comp["tokens_out"], comp["dim_out"]]
    assert len(b.reference_batches()) >= 2


def none_tokens(make_bundle, model):
    """Tokens of the uncompressed encoder with prefix kept, per reference batch."""
    b = Bundle.load(make_bundle(model, "none", prefix="keep").path)
    return b.reference(), b.manifest["compression"]["prefix_in"]


def np_pool(x, s, mode):
    b, _, c = x.shape
    h, w = GRID
    g = x.reshape(b, h, w, c)
    ho, wo = -(-h // s), -(-w // s)
    out = np.zeros((b, ho * wo, c))
    for i in range(ho):
        for j in range(wo):
            win = g[:, i * s:(i + 1) * s, j * s:(j + 1) * s].reshape(b, -1, c)
            out[:, i * wo + j] = win.mean(1) if mode == "avg" else win.max(1)
    return out


def independent(spec, patches, prefix, attn=None):
    """The compressor written independently of tokcomp_edge.compression, from the `none` tokens."""
    h, w = GRID
    b, n, c = patches.shape
    x = torch.from_numpy(patches)
    grid = x.transpose(1, 2).reshape(b, c, h, w)
    if spec == "pool:2":
        return np_pool(patches, 2, "avg"), None
    if spec == "pool:3:max":
        return np_pool(patches, 3, "max"), None
    if spec == "pool:4":
        return np_pool(patches, 4, "avg"), None
    if spec == "bilinear:5x7":
        y = F.interpolate(grid, size=(5, 7), mode="bilinear", align_corners=False)
        return y.reshape(b, c, 35).transpose(1, 2).numpy(), None
    if spec == "unshuffle:2":
        return F.pixel_unshuffle(grid, 2).reshape(b, c * 4, 49).transpose(1, 2).numpy(), None
    if spec == "unshuffle:3:internvl:pad":
        g = F.pad(grid, (0, 1, 0, 1)).permute(0, 2, 3, 1)  # [b, 15, 15, c]
        n_, w_, h_, c_ = g.shape  # InternVL pixel_shuffle, scale 1/3
        g = g.reshape(n_, w_, h_ // 3, c_ * 3).permute(0, 2, 1, 3).reshape(n_, h_ // 3, w_ // 3, c_ * 9)
        return g.permute(0, 2, 1, 3).reshape(b, 25, c * 9).numpy(), None
    if spec.startswith("prune"):
        score = spec.split(":")[2]
        if score == "norm":
            s = np.linalg.norm(patches, axis=-1)
        elif score == "cls-sim":
            ref = prefix[:, 0] if prefix.shape[1] else patches.mean(1)
            s = np.einsum("bnc,bc->bn", patches / np.linalg.norm(patches, axis=-1, keepdims=True),
                          ref / np.linalg.norm(ref, axis=-1, keepdims=True))
        else:
            s = attn
        idx = np.sort(np.argsort(-s, axis=1, kind="stable")[:, :32], axis=1)
        return np.take_along_axis(patches, idx[..., None], axis=1), idx
    raise AssertionError(spec)


@pytest.mark.parametrize("model", TINY)
@pytest.mark.parametrize("spec", [s for s in SPECS if s != "none" and not s.endswith("cls-attn")])
def test_compressor_equals_independent_computation(make_bundle, model, spec):
    ref_none, p = none_tokens(make_bundle, model)
    b = Bundle.load(make_bundle(model, spec, prefix="drop").path)
    got = b.reference()
    for batch in b.reference_batches():
        full = ref_none[f"tokens.b{batch}"].astype(np.float64)
        want, idx = independent(spec, full[:, p:], full[:, :p])
        if idx is not None:
            np.testing.assert_array_equal(got[f"indices.b{batch}"], idx)
        np.testing.assert_allclose(got[f"tokens.b{batch}"], want, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("model", ["tiny-clip", "tiny-dinov2", "tiny-vit"])
def test_cls_attn_equals_hf_eager_attention(make_bundle, model):
    """prune:cls-attn keeps the top-K of the CLS row that HF's own eager attention reports."""
    from tokcomp_edge.encoders import EncoderConfig, build_encoder

    b = Bundle.load(make_bundle(model, "prune:32:cls-attn", prefix="drop").path)
    ref_none, p = none_tokens(make_bundle, model)
    hf = build_encoder(EncoderConfig(model=model, seed=0)).tower.hf
    hf.set_attn_implementation("eager")
    got = b.reference()
    for batch in b.reference_batches():
        with torch.no_grad():
            out = hf(pixel_values=torch.from_numpy(got[f"pixel_values.b{batch}"]), output_attentions=True)
        row = out.attentions[-1][:, :, 0, :].mean(1)[:, p:].numpy()  # last layer, CLS query, mean over heads
        idx = np.sort(np.argsort(-row, axis=1, kind="stable")[:, :32], axis=1)
        np.testing.assert_array_equal(got[f"indices.b{batch}"], idx)
        patches = ref_none[f"tokens.b{batch}"][:, p:]
        np.testing.assert_allclose(got[f"tokens.b{batch}"], np.take_along_axis(patches, idx[..., None], 1),
                                   atol=2e-5)

"""Each compressor against an independent computation (numpy loops / reference code), odd and even grids."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tokcomp_edge.compression import functional as Fc
from tokcomp_edge.compression.module import TokenCompressor
from tokcomp_edge.compression.plan import plan_compression
from tokcomp_edge.compression.spec import parse_spec


def tokens(b, h, w, c, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, h * w, c, generator=g)


def np_pool(x, h, w, s, mode):
    """Window-by-window pooling over exactly the cells each window covers."""
    b, _, c = x.shape
    g = x.reshape(b, h, w, c)
    ho, wo = -(-h // s), -(-w // s)
    out = np.zeros((b, ho * wo, c), dtype=np.float64)
    for i in range(ho):
        for j in range(wo):
            win = g[:, i * s:(i + 1) * s, j * s:(j + 1) * s, :].reshape(b, -1, c)
            out[:, i * wo + j] = win.mean(1) if mode == "avg" else win.max(1)
    return out


@pytest.mark.parametrize("h,w,s", [(14, 14, 2), (27, 27, 2), (7, 5, 2), (16, 16, 3), (24, 24, 4)])
@pytest.mark.parametrize("mode", ["avg", "max"])
def test_pool_matches_window_loop(h, w, s, mode):
    x = tokens(2, h, w, 8)
    y = Fc.pool_tokens(x, h, w, s, mode)
    np.testing.assert_allclose(y.numpy(), np_pool(x.numpy().astype(np.float64), h, w, s, mode), atol=1e-5)


def test_llava_onevision_27_to_14():
    m = Fc.pooling_matrix(27, 27, 2)
    assert m.shape == (196, 729)
    np.testing.assert_allclose(m.sum(1).numpy(), 1.0, atol=1e-6)
    # the corner window covers a single patch
    assert float(m[-1, -1]) == 1.0


def np_bilinear(img, oh, ow):
    """align_corners=False bilinear (half-pixel centres, clamped), written out per output pixel."""
    c, h, w = img.shape
    out = np.zeros((c, oh, ow))
    for i in range(oh):
        y = max((i + 0.5) * h / oh - 0.5, 0.0)
        y0 = min(int(np.floor(y)), h - 1); y1 = min(y0 + 1, h - 1); dy = y - y0
        for j in range(ow):
            x = max((j + 0.5) * w / ow - 0.5, 0.0)
            x0 = min(int(np.floor(x)), w - 1); x1 = min(x0 + 1, w - 1); dx = x - x0
            out[:, i, j] = ((1 - dy) * ((1 - dx) * img[:, y0, x0] + dx * img[:, y0, x1])
                            + dy * ((1 - dx) * img[:, y1, x0] + dx * img[:, y1, x1]))
    return out


@pytest.mark.parametrize("h,w,oh,ow", [(14, 14, 7, 7), (27, 27, 12, 12), (7, 5, 3, 4), (16, 16, 10, 6)])
def test_bilinear_matches_formula(h, w, oh, ow):
    x = tokens(1, h, w, 4)
    y = Fc.bilinear_tokens(x, h, w, oh, ow)
    grid = x[0].numpy().T.reshape(4, h, w).astype(np.float64)
    ref = np_bilinear(grid, oh, ow).reshape(4, oh * ow).T
    np.testing.assert_allclose(y[0].numpy(), ref, atol=1e-5)


@pytest.mark.parametrize("h,w,r", [(14, 14, 2), (24, 24, 3), (6, 4, 2)])
def test_unshuffle_torch_order_equals_pixel_unshuffle(h, w, r):
    x = tokens(2, h, w, 5)
    y = Fc.unshuffle_tokens(x, h, w, r, "torch")
    ref = F.pixel_unshuffle(Fc.to_grid(x, h, w), r)  # [B, C r², h/r, w/r]
    np.testing.assert_array_equal(y.numpy(), Fc.from_grid(ref).numpy())


def internvl_pixel_shuffle(x, scale_factor=0.5):
    """InternVL-Chat's pixel_shuffle (ps_version v2), copied verbatim."""
    n, w, h, c = x.size()
    x = x.view(n, w, int(h * scale_factor), int(c / scale_factor))
    x = x.permute(0, 2, 1, 3).contiguous()
    x = x.view(n, int(h * scale_factor), int(w * scale_factor), int(c / (scale_factor * scale_factor)))
    x = x.permute(0, 2, 1, 3).contiguous()
    return x


@pytest.mark.parametrize("h,w,r", [(16, 16, 2), (14, 14, 2), (12, 12, 3)])
def test_unshuffle_internvl_order_equals_internvl(h, w, r):
    x = tokens(2, h, w, 6)
    y = Fc.unshuffle_tokens(x, h, w, r, "internvl")
    ref = internvl_pixel_shuffle(x.reshape(2, h, w, 6), 1 / r).reshape(2, -1, 6 * r * r)
    np.testing.assert_array_equal(y.numpy(), ref.numpy())


def test_internvl_and_torch_orders_differ():
    x = tokens(1, 4, 4, 3)
    assert not torch.equal(Fc.unshuffle_tokens(x, 4, 4, 2, "torch"), Fc.unshuffle_tokens(x, 4, 4, 2, "internvl"))


def test_pad_grid_zero_pads_bottom_right():
    x = tokens(1, 3, 3, 2)
    y, h, w = Fc.pad_grid(x, 3, 3, 2)
    assert (h, w) == (4, 4)
    g = y[0].reshape(4, 4, 2)
    assert torch.all(g[3] == 0) and torch.all(g[:, 3] == 0)
    np.testing.assert_array_equal(g[:3, :3].reshape(9, 2).numpy(), x[0].numpy())


@pytest.mark.parametrize("k", [1, 13, 100])
def test_prune_keeps_topk_by_norm_in_grid_order(k):
    x = tokens(3, 14, 14, 16)
    y, idx = Fc.prune_tokens(x, Fc.norm_scores(x), k)
    norms = np.linalg.norm(x.numpy(), axis=-1)
    for b in range(3):
        want = np.sort(np.argsort(-norms[b], kind="stable")[:k])
        np.testing.assert_array_equal(idx[b].numpy(), want)
        np.testing.assert_array_equal(y[b].numpy(), x[b].numpy()[want])
    assert idx.dtype == torch.int64


def test_similarity_scores_are_cosines():
    x = tokens(2, 3, 3, 4)
    ref = torch.randn(2, 4)
    s = Fc.similarity_scores(x, ref)
    want = F.cosine_similarity(x, ref[:, None, :], dim=-1)
    np.testing.assert_allclose(s.numpy(), want.numpy(), atol=1e-5)


def test_compressor_keeps_prefix_in_front_and_uses_cls_for_similarity():
    p = plan_compression(parse_spec("prune:4:cls-sim"), grid=(3, 3), prefix_tokens=2, has_cls=True,
                         hidden_size=4, prefix="keep")
    comp = TokenCompressor(p)
    t = torch.randn(2, 11, 4)
    y, idx = comp(t)
    assert y.shape == (2, 6, 4)
    np.testing.assert_array_equal(y[:, :2].numpy(), t[:, :2].numpy())
    cos = F.cosine_similarity(t[:, 2:], t[:, :1], dim=-1)
    want = torch.sort(torch.topk(cos, 4, dim=1).indices, dim=1).values
    np.testing.assert_array_equal(idx.numpy(), want.numpy())


def test_cls_sim_without_cls_uses_mean_token():
    p = plan_compression(parse_spec("prune:3:cls-sim"), grid=(3, 3), prefix_tokens=0, has_cls=False,
                         hidden_size=4, prefix="drop")
    t = torch.randn(1, 9, 4)
    _, idx = TokenCompressor(p)(t)
    cos = F.cosine_similarity(t, t.mean(1, keepdim=True), dim=-1)
    np.testing.assert_array_equal(idx.numpy(), torch.sort(torch.topk(cos, 3).indices).values.numpy())


def test_cls_attn_uses_patch_columns_of_attention_row():
    p = plan_compression(parse_spec("prune:2:cls-attn"), grid=(2, 2), prefix_tokens=1, has_cls=True,
                         hidden_size=3, prefix="drop")
    t = torch.randn(1, 5, 3)
    attn = torch.tensor([[0.9, 0.01, 0.5, 0.2, 0.3]])  # column 0 is CLS itself and must be ignored
    y, idx = TokenCompressor(p)(t, attn)
    assert idx.tolist() == [[1, 3]]
    np.testing.assert_array_equal(y[0].numpy(), t[0, [2, 4]].numpy())

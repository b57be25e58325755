"""ToMe inside the towers (`VisionTower.forward_tome`) against the independent implementation in
tests/compression/tome_reference.py, on the same weights: timm ViTs (with and without CLS) and the HF
towers (CLIP, SigLIP without CLS, DINOv2 with registers and LayerScale, ViT)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from tokcomp_edge.compression import parse_spec, plan_compression
from tokcomp_edge.encoders import EncoderConfig, build_encoder

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "compression"))
from tome_reference import reference_for  # noqa: E402


CASES = [
    ("timm:test_vit", (8,) * 6), ("timm:test_vit", (50, 25, 12, 6, 3, 1)),  # CLS; T = 101, r at its cap
    ("timm:test_vit2", 7),  # no CLS (one prefix token); a constant r over its blocks
    ("tiny-clip", (13, 13)), ("tiny-clip", (98, 49)),  # T = 197 (odd), cap 98 then 49
    ("tiny-siglip", (13, 13)), ("tiny-siglip", (98, 49)),  # no prefix, T = 196 (even)
    ("tiny-dinov2", (20, 9)), ("tiny-dinov2", (98, 49)),  # CLS + 4 registers, LayerScale
    ("tiny-vit", (0, 30)),  # a schedule that leaves block 1 unmerged
]


@pytest.mark.parametrize("model,schedule", CASES)
def test_forward_tome_equals_reference(model, schedule, pixels):
    enc = build_encoder(EncoderConfig(model))
    spec = enc.spec
    if isinstance(schedule, int):
        schedule = (schedule,) * enc.tower.num_used
    x = pixels(size=spec.image_size[0])
    with torch.no_grad():
        y, (sizes, source) = enc.tower.forward_tome(x, schedule)
    want, want_sizes, want_map = reference_for(enc, x, schedule)
    plan = plan_compression(parse_spec("tome:" + ",".join(map(str, schedule))), grid=spec.grid,
                            prefix_tokens=spec.prefix_tokens, has_cls=spec.has_cls, hidden_size=spec.hidden_size,
                            prefix="keep", layers=enc.tower.num_used)
    assert y.shape == (2, plan.tokens_out, spec.hidden_size) == want.shape
    assert plan.block_tokens[-1] == plan.tokens_out
    torch.testing.assert_close(sizes, want_sizes)
    assert torch.equal(source, want_map)
    torch.testing.assert_close(y, want, rtol=1e-4, atol=1e-4)
    # sizes count patches: the prefix tokens cover themselves, the rest sum to the patch count
    p = spec.prefix_tokens
    assert torch.all(sizes[:, :p] == 1) and torch.all(sizes[:, p:].sum(1) == spec.grid[0] * spec.grid[1])
    # the map and the sizes agree: each output row covers as many patches as the map sends it
    counts = torch.stack([torch.bincount(source[b], minlength=y.shape[1]) for b in range(2)])
    assert torch.equal(counts[:, p:].to(sizes.dtype), sizes[:, p:])


def test_no_merge_equals_the_plain_forward(pixels):
    for model in ("tiny-clip", "tiny-dinov2", "timm:test_vit"):
        enc = build_encoder(EncoderConfig(model))
        x = pixels(size=enc.spec.image_size[0])
        with torch.no_grad():
            y, _ = enc.tower(x)
            y0, (sizes, source) = enc.tower.forward_tome(x, (0,) * enc.tower.num_used)
        torch.testing.assert_close(y0, y, rtol=1e-5, atol=1e-5)
        p = enc.spec.prefix_tokens
        assert torch.equal(source[0], torch.arange(p, y.shape[1]))


def _rows_by_members(tokens, sizes, mmap, prefix):
    """{frozenset of patches: (token row, size)} of one image; the prefix rows keyed by their index."""
    out = {("prefix", i): (tokens[i], sizes[i]) for i in range(prefix)}
    for row in range(prefix, tokens.shape[0]):
        out[frozenset((mmap == row).nonzero().flatten().tolist())] = (tokens[row], sizes[row])
    return out


@pytest.mark.parametrize("model,image_size,schedule", [
    ("tiny-siglip", 224, (13, 0)), ("tiny-siglip", 448, (0, 98)), ("tiny-siglip", 448, (10, 0)),
    ("tiny-clip", 448, (40, 0)),
])
def test_one_merging_block_equals_tome_published_order_as_sets(model, image_size, schedule, pixels):
    """ToMe's own order without CLS keeps the unmerged tokens in rank order; tokcomp re-sorts them (issue 15,
    tome.py's docstring). With ONE merging block the two orders hold the same tokens, merges and values
    (attention and MLP are permutation-equivariant), so tokcomp equals the published order as sets of
    (patches merged into a row → that row's token and size). With several merging blocks the order sets
    the next block's A/B split, and the tests compare against the reference with tokcomp's order."""
    enc = build_encoder(EncoderConfig(model, image_size=image_size))
    x = pixels(size=image_size)
    with torch.no_grad():
        y, (sizes, source) = enc.tower.forward_tome(x, schedule)
    want, want_sizes, want_map = reference_for(enc, x, schedule, published_order=True)
    p = enc.spec.prefix_tokens
    if p == 0:  # without a protected token the published order really is another order (else no test)
        assert not torch.equal(source, want_map)
    for b in range(x.shape[0]):
        got = _rows_by_members(y[b], sizes[b], source[b], p)
        ref = _rows_by_members(want[b], want_sizes[b], want_map[b], p)
        assert got.keys() == ref.keys() and len(got) == y.shape[1]
        for key, (tok, size) in got.items():
            assert size == ref[key][1]
            torch.testing.assert_close(tok, ref[key][0], rtol=1e-4, atol=1e-4)

"""Random-init towers must not be degenerate: HF/timm init every LayerNorm to (1, 0), which makes all
final-normed tokens the same length and `prune:K:norm` a tie-break that runtimes resolve differently."""

import pytest
import torch

from tokcomp_edge.encoders import EncoderConfig, build_encoder


@pytest.mark.parametrize("model", ["tiny-siglip", "tiny-dinov2", "tiny-vit", "timm:test_vit"])
def test_final_normed_token_norms_spread(model):
    tower = build_encoder(EncoderConfig(model=model, seed=0)).tower
    x = torch.randn(2, 3, *tower.spec.image_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        tokens, _ = tower(x)
    norms = tokens.norm(dim=-1)
    assert float(norms.std()) > 1e-2
    sorted_norms = norms.sort(dim=-1).values
    assert float((sorted_norms[:, 1:] - sorted_norms[:, :-1]).max()) > 1e-4


def test_norm_spread_is_seeded():
    a = build_encoder(EncoderConfig(model="tiny-siglip", seed=3)).tower.state_dict()
    b = build_encoder(EncoderConfig(model="tiny-siglip", seed=3)).tower.state_dict()
    c = build_encoder(EncoderConfig(model="tiny-siglip", seed=4)).tower.state_dict()
    key = next(k for k in a if k.endswith("post_layernorm.weight"))
    assert torch.equal(a[key], b[key]) and not torch.equal(a[key], c[key])

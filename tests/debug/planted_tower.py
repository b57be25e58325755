"""A small pre-norm ViT (py:planted_tower:<factory>) with a planted massive activation, and its healthy twin.

`massive()`: one MLP hidden channel of block 1 fires only on one patch of the golden reference's batch-1
image (a matched filter on its pixels, through a dedicated embedding channel) and its fc2 column writes
~1e5 into one residual channel there — beyond fp16's 65504, as the "massive activations" of trained ViTs
(Sun et al. 2024) reach hundreds to thousands on a few tokens. AutoCast calibrates on the largest golden
batch (batch 4), where the channel stays silent (< -6 before GELU), so its data_max guard keeps nothing in
fp32; the variant check also runs batch 1, where the fp16 value overflows. `healthy()`: the same tower
without the plant.
"""

from __future__ import annotations

import torch
from torch import nn

IMAGE, PATCH, WIDTH, DEPTH, HEADS = 32, 8, 32, 3, 2
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
PLANT_BLOCK, DETECT_CH, MASSIVE_CH, HIDDEN_CH = 1, 0, 5, 7
TARGET_PATCH = 5
MASSIVE = 1.0e5


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm1 = nn.LayerNorm(WIDTH)
        self.attn = nn.MultiheadAttention(WIDTH, HEADS, batch_first=True)
        self.norm2 = nn.LayerNorm(WIDTH)
        self.mlp = nn.Sequential(nn.Linear(WIDTH, 4 * WIDTH), nn.GELU(), nn.Linear(4 * WIDTH, WIDTH))

    def forward(self, x):
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class Tower(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Conv2d(3, WIDTH, PATCH, PATCH)
        self.pos = nn.Parameter(torch.randn(1, (IMAGE // PATCH) ** 2, WIDTH) * 0.02)
        self.blocks = nn.ModuleList(Block() for _ in range(DEPTH))
        self.norm = nn.LayerNorm(WIDTH)
        self.tokcomp_facts = dict(image_size=IMAGE, patch_size=PATCH, prefix_tokens=0, hidden_size=WIDTH,
                                  mean=MEAN, std=STD, num_layers=DEPTH, num_heads=HEADS)

    def forward(self, x):
        t = self.embed(x).flatten(2).transpose(1, 2) + self.pos
        for blk in self.blocks:
            t = blk(t)
        return self.norm(t)


def _golden(batch: int) -> torch.Tensor:
    from tokcomp_edge.export.reference import golden_inputs

    return torch.from_numpy(golden_inputs((IMAGE, IMAGE), MEAN, STD, [1, 4], seed=0)[batch])


def _patches(x: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] → [B, T, 3·P·P] in the Conv's weight order."""
    b = x.shape[0]
    p = x.unfold(2, PATCH, PATCH).unfold(3, PATCH, PATCH)  # B, 3, gh, gw, P, P
    return p.permute(0, 2, 3, 1, 4, 5).reshape(b, -1, 3 * PATCH * PATCH)


@torch.no_grad()
def plant(tower: Tower) -> Tower:
    """Wire the detector channel and the massive MLP channel (see module docstring)."""
    target = _patches(_golden(1))[0, TARGET_PATCH]
    d = target - target.mean()
    # The target patch gives 2 on the detector channel (about 3× the other channels), noise patches ~0.1.
    w = 2.0 * d / (d @ d)
    tower.embed.weight[DETECT_CH] = w.reshape(3, PATCH, PATCH)
    tower.embed.bias[DETECT_CH] = float(-(w * target.mean()).sum())

    blk = tower.blocks[PLANT_BLOCK]
    captured = {}
    hook = blk.norm2.register_forward_hook(lambda m, i, o: captured.__setitem__("v", o[..., DETECT_CH]))
    tower(_golden(1))
    v_target = float(captured["v"][0, TARGET_PATCH])
    tower(_golden(4))
    v_other = float(captured["v"].max())
    hook.remove()
    assert v_target > v_other + 0.5, (v_target, v_other)
    fc1, fc2 = blk.mlp[0], blk.mlp[2]
    a = 16.0 / (v_target - v_other)
    fc1.weight[HIDDEN_CH] = 0.0
    fc1.weight[HIDDEN_CH, DETECT_CH] = a
    fc1.bias[HIDDEN_CH] = -6.0 - a * v_other  # −6 at the strongest batch-4 token, +10 at the target
    fc2.weight[:, HIDDEN_CH] = 0.0
    fc2.weight[MASSIVE_CH, HIDDEN_CH] = MASSIVE / 10.0
    return tower


def healthy() -> nn.Module:
    return Tower().eval()


def massive() -> nn.Module:
    return plant(Tower()).eval()

"""The issue-15 py: module: timm's VisionTransformer (no CLS, no pooling), default init, and two plants.

`healthy()`: 4 blocks. `mid()`: block 2's fc2 bias set to 3e5 on one channel (beyond fp16's 65504) with a
block after it; `last()`: the same plant in the last block (depth 3), whose MLP an after-the-fact guess
counted in no block.
"""

from __future__ import annotations

import torch
from torch import nn

PLANT_BLOCK, PLANT = 2, 3.0e5


class Enc(nn.Module):
    def __init__(self, depth: int = 4):
        super().__init__()
        from timm.models.vision_transformer import VisionTransformer

        self.vit = VisionTransformer(img_size=64, patch_size=16, embed_dim=64, depth=depth, num_heads=4,
                                     class_token=False, global_pool="", num_classes=0)
        self.tokcomp_facts = dict(image_size=64, patch_size=16, prefix_tokens=0, hidden_size=64,
                                  mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), num_layers=depth, num_heads=4)

    def forward(self, x):
        return self.vit.forward_features(x)


def _planted(depth: int) -> nn.Module:
    enc = Enc(depth)
    with torch.no_grad():
        enc.vit.blocks[PLANT_BLOCK].mlp.fc2.bias[3] = PLANT
    return enc.eval()


def healthy() -> nn.Module:
    return Enc().eval()


def mid() -> nn.Module:
    return _planted(4)


def last() -> nn.Module:
    return _planted(3)

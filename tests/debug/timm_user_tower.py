"""The issue-15 py: module: timm's VisionTransformer (no CLS, no pooling), default init, and two plants.

`healthy()`: 4 blocks. `mid()`: block 2's MLP writes 3e5 (beyond fp16's 65504) into one residual channel,
with a block after it; `last()`: the same plant in the last block (depth 3), whose MLP an after-the-fact
guess counted in no block.

Why the plant is one MLP hidden unit and not the issue's constant fc2 bias of 3e5: a constant bias is on
every token of every image, so AutoCast sees 3e5 on its calibration batch (the largest golden batch) and
its data_max guard (512) keeps every node carrying it in fp32 — the fp16 variant is then right (block 2's
rel L2 vs fp32 1.6e-8) and `debug` rightly exits 0 (test_debug_blocks checks that too). An overflow the
fp16 variant really has must be one calibration does not see, as trained ViTs' massive activations
(Sun et al. 2024) fire on a few tokens of some images only. So the planted hidden unit of block 2's MLP
is a matched filter on one token of the batch-1 golden image (the token's own norm2 output as fc1 row):
+10 before GELU there, below −6 on every other token, the calibration batch's included (silent), and fc2 writes
10 · 3e4 = 3e5 from it into channel MASSIVE_CH. The debugger runs batch 1 as well, where fp16 overflows.
"""

from __future__ import annotations

import torch
from torch import nn

PLANT_BLOCK, PLANT = 2, 3.0e5
IMAGE, MEAN, STD = 64, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
HIDDEN_CH, MASSIVE_CH, TARGET_TOKEN = 7, 3, 5
BATCHES = [1, 2]  # the golden batches of an export with --batch-max 2 (calibration: the largest)


class Enc(nn.Module):
    def __init__(self, depth: int = 4):
        super().__init__()
        from timm.models.vision_transformer import VisionTransformer

        self.vit = VisionTransformer(img_size=IMAGE, patch_size=16, embed_dim=64, depth=depth, num_heads=4,
                                     class_token=False, global_pool="", num_classes=0)
        self.tokcomp_facts = dict(image_size=IMAGE, patch_size=16, prefix_tokens=0, hidden_size=64,
                                  mean=MEAN, std=STD, num_layers=depth, num_heads=4)

    def forward(self, x):
        return self.vit.forward_features(x)


def _golden() -> dict[int, torch.Tensor]:
    from tokcomp_edge.export.reference import golden_inputs

    return {b: torch.from_numpy(x) for b, x in golden_inputs((IMAGE, IMAGE), MEAN, STD, BATCHES, seed=0).items()}


@torch.no_grad()
def _planted(depth: int) -> nn.Module:
    enc = Enc(depth).eval()
    golden = _golden()
    blk = enc.vit.blocks[PLANT_BLOCK]
    seen = {}
    hook = blk.norm2.register_forward_hook(lambda m, i, o: seen.__setitem__("x", o))
    enc(golden[1])
    w = seen["x"][0, TARGET_TOKEN].clone()
    v_target = float(w @ w)
    others = [float(torch.cat([seen["x"][0, :TARGET_TOKEN], seen["x"][0, TARGET_TOKEN + 1:]]).matmul(w).max())]
    enc(golden[max(BATCHES)])
    others.append(float((seen["x"] @ w).max()))
    hook.remove()
    v_other = max(others)
    assert v_target > v_other + 1.0, (v_target, v_other)  # the token is separable from all the others
    a = 16.0 / (v_target - v_other)
    fc1, fc2 = blk.mlp.fc1, blk.mlp.fc2
    fc1.weight[HIDDEN_CH] = a * w
    # −6 at the strongest other token (calibration or not), +10 at the target: every other token stays
    # firmly silent — one at GELU's knee would carry a few thousand, whose rounding (×3e4) the final
    # LayerNorm of the `last` tower turns into a PyTorch/ONNX Runtime difference beyond export parity.
    fc1.bias[HIDDEN_CH] = -6.0 - a * v_other
    fc2.weight[:, HIDDEN_CH] = 0.0
    fc2.weight[MASSIVE_CH, HIDDEN_CH] = PLANT / 10.0
    return enc


def healthy() -> nn.Module:
    return Enc().eval()


def mid() -> nn.Module:
    return _planted(4)


def last() -> nn.Module:
    return _planted(3)


def constant_bias() -> nn.Module:
    """The issue's literal plant: block 2's fc2 bias 3e5 on one channel (AutoCast keeps it in fp32)."""
    enc = Enc(4)
    with torch.no_grad():
        enc.vit.blocks[PLANT_BLOCK].mlp.fc2.bias[MASSIVE_CH] = PLANT
    return enc.eval()

"""A tiny Qwen2.5-VL whose vision block `block` overflows fp16 in its SwiGLU MLP on one patch, and its healthy twin.

As planted_tower.py for a Qwen vision path: a detector channel of the patch embedding (Conv3d, no bias) is a
matched filter on one patch of the golden reference's batch-1 image; in block `block`, one SwiGLU hidden
channel (gate_proj row on that channel, up_proj row constant 1) fires only there, and its down_proj column
writes ~1e5 into one residual channel — beyond fp16's 65504. AutoCast calibrates on the largest golden batch
(batch 4), where the gate stays at or below -30 (SiLU ~ 1e-12: nothing in the channel, far below its
data_max guard), so nothing is kept in fp32 for it; the variant check also runs batch 1, where fp16 overflows.
"""

from __future__ import annotations

from pathlib import Path

import torch

PRESET = "tiny-qwen2.5-vl"
TILE = (112, 112)  # 8×8 patches of 14, 4×4 merge units, 2×2 windows of 56 px (and block 1's full attention)
DETECT_CH, MASSIVE_CH, HIDDEN_CH = 0, 5, 7
TARGET_PATCH = 27  # raster index in the 8×8 patch grid
MASSIVE = 8.0e4


def build(seed: int = 0):
    """transformers' Qwen2_5_VLForConditionalGeneration from the tiny preset, every parameter perturbed (some
    are zero-initialised), eval."""
    import transformers as T

    from tokcomp_edge.vlm.families import FAMILIES
    from tokcomp_edge.vlm.presets import VLM_PRESETS
    from tokcomp_edge.vlm.spec import hf_config_object

    preset = VLM_PRESETS[PRESET]
    conf = hf_config_object(preset.model_type, preset.config, preset.name)
    torch.manual_seed(seed)
    model = getattr(T, FAMILIES[preset.model_type].hf_class)(conf).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model


def processor(model):
    from transformers import Qwen2VLImageProcessor

    v = model.config.vision_config
    return Qwen2VLImageProcessor(patch_size=v.patch_size, merge_size=v.spatial_merge_size,
                                 temporal_patch_size=v.temporal_patch_size,
                                 size={"shortest_edge": 16 * 16, "longest_edge": 1024 * 1024})


def _golden(model, batch: int) -> torch.Tensor:
    """The export's golden input of `batch` (seed 0), normalised with the processor's mean/std."""
    from tokcomp_edge.export.reference import golden_inputs

    proc = processor(model)
    return torch.from_numpy(golden_inputs(TILE, proc.image_mean, proc.image_std, [1, 4], seed=0)[batch])


def _flatten(model, x: torch.Tensor):
    """[B, 3, H, W] → the processor's flattened patches [B·N, 3·t·p·p] (merge-block order) and grid_thw."""
    v = model.config.vision_config
    p, m, t = v.patch_size, v.spatial_merge_size, v.temporal_patch_size
    b, c, h, w = x.shape
    gh, gw = h // p, w // p
    y = x.reshape(b, c, gh // m, m, p, gw // m, m, p).permute(0, 2, 5, 3, 6, 1, 4, 7)  # b, H', W', m, m, c, p, p
    y = y.unsqueeze(6).expand(b, gh // m, gw // m, m, m, c, t, p, p)
    return y.reshape(b * gh * gw, c * t * p * p), torch.tensor([[1, gh, gw]] * b)


def _raster_patch(model, x: torch.Tensor, index: int) -> torch.Tensor:
    v = model.config.vision_config
    p, t = v.patch_size, v.temporal_patch_size
    gw = x.shape[3] // p
    r, c = divmod(index, gw)
    patch = x[0, :, r * p:(r + 1) * p, c * p:(c + 1) * p]  # 3, p, p
    return patch.unsqueeze(1).expand(3, t, p, p).reshape(-1)


@torch.no_grad()
def plant(model, block: int):
    """Wire the detector channel and block `block`'s overflowing SwiGLU channel (module docstring)."""
    visual = model.model.visual
    target = _raster_patch(model, _golden(model, 1), TARGET_PATCH)
    d = target - target.mean()
    # 8 on the target patch, ~0.3 on noise patches (a matched filter; the Conv3d has no bias, and d sums to 0).
    visual.patch_embed.proj.weight[DETECT_CH] = (8.0 * d / (d @ d)).reshape(visual.patch_embed.proj.weight[0].shape)

    blk = visual.blocks[block]
    seen = {}
    hook = blk.norm2.register_forward_hook(lambda m, i, o: seen.__setitem__("v", o[..., DETECT_CH].flatten()))
    visual(*_flatten(model, _golden(model, 1)))
    top = seen["v"].topk(2).values  # the target patch, then the strongest other patch of batch 1
    visual(*_flatten(model, _golden(model, 4)))
    v_target, v_other = float(top[0]), max(float(top[1]), float(seen["v"].max()))
    hook.remove()
    assert v_target > v_other + 0.5, (v_target, v_other)
    mlp = blk.mlp
    # The gate is +10 on the target and at most −30 on every other golden patch: there SiLU is below 3e-12 in
    # PyTorch and ONNX Runtime alike (between −20 and −8 the two differ by up to 1e-6, which the down_proj
    # weight below would lift past the fp32 export tolerance).
    a = 40.0 / (v_target - v_other)
    mlp.gate_proj.weight[HIDDEN_CH] = 0.0
    mlp.gate_proj.weight[HIDDEN_CH, DETECT_CH] = a
    mlp.gate_proj.bias[HIDDEN_CH] = 10.0 - a * v_target
    mlp.up_proj.weight[HIDDEN_CH] = 0.0
    mlp.up_proj.bias[HIDDEN_CH] = 1.0
    mlp.down_proj.weight[:, HIDDEN_CH] = 0.0
    mlp.down_proj.weight[MASSIVE_CH, HIDDEN_CH] = MASSIVE / 10.0
    return model


def save(folder: Path, block: int | None) -> Path:
    """A 3-shard hf: folder of the tiny Qwen2.5-VL, planted in `block` (None: healthy), with its processor."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "vlm"))
    try:
        from vlm_helpers import save_vlm
    finally:
        sys.path.remove(str(Path(__file__).resolve().parents[1] / "vlm"))
    model = build()
    if block is not None:
        plant(model, block)
    save_vlm(model, folder, max_shard_size="40KB")
    processor(model).save_pretrained(folder)
    return folder

"""tokcomp_edge/vlm/qwen_tower.py: the static-grid Qwen vision path equals transformers' vision model.

Tiny random configs built here; the reference is transformers' own vision module (what
`get_image_features` calls) on the processor's own flattening (Qwen2VLImageProcessor.patchify), with one
`grid_thw` row per image, sharing the weights of the module under test.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tokcomp_edge.compression.plan import plan_compression
from tokcomp_edge.compression.spec import parse_spec
from tokcomp_edge.core.tolerance import Tolerance
from tokcomp_edge.encoders.spec import EncoderSpec
from tokcomp_edge.vlm.qwen_spec import image_grid_thw
from tokcomp_edge.vlm.qwen_tower import (
    QwenTower,
    QwenVisionPath,
    build_visual,
    qwen_facts,
)

# The fp32 bound for the vision path against transformers (issue 17): elementwise 1e-5.
BOUND = Tolerance(atol=1e-5).bound(0.0)

VISION = {
    "qwen2_vl": dict(depth=2, embed_dim=32, hidden_size=48, num_heads=2, mlp_ratio=2, patch_size=14),
    "qwen2_5_vl": dict(depth=3, hidden_size=32, out_hidden_size=48, num_heads=2, intermediate_size=64,
                       patch_size=14, window_size=56, fullatt_block_indexes=[1]),
    "qwen3_vl": dict(depth=3, hidden_size=32, out_hidden_size=48, num_heads=2, intermediate_size=64,
                     patch_size=16, num_position_embeddings=16, deepstack_visual_indexes=[0, 1]),
    "qwen3_5": dict(depth=2, hidden_size=32, out_hidden_size=48, num_heads=2, intermediate_size=64,
                    patch_size=16, num_position_embeddings=16),
}


def _config(model_type: str, **over):
    from transformers import AutoConfig

    vc = {**VISION[model_type], **over}
    return AutoConfig.for_model(model_type, vision_config=vc)


def _spread(module, seed: int = 0) -> None:
    """Non-degenerate random parameters: every norm affine and bias moved off its 1/0 init."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))


def _build(model_type: str, size: tuple[int, int], **over):
    conf = _config(model_type, **over)
    facts = qwen_facts(model_type, conf)
    torch.manual_seed(0)
    visual = build_visual(model_type, conf)
    _spread(visual)
    spec = EncoderSpec(name=f"tiny-{model_type}", family=model_type, source="transformers", image_size=size,
                       patch_size=facts.patch, prefix_tokens=0, has_cls=False, hidden_size=facts.width,
                       num_layers=facts.depth, num_heads=facts.heads, mean=(0.5,) * 3, std=(0.5,) * 3)
    return QwenTower(spec, visual, facts, size), visual, facts


def _plan(tower: QwenTower, text: str):
    return plan_compression(parse_spec(text), grid=tower.spec.grid, prefix_tokens=0, has_cls=False,
                            hidden_size=tower.facts.width, prefix="drop")


def _flatten(images: torch.Tensor, facts) -> tuple[torch.Tensor, torch.Tensor]:
    """The processor's own patch flattening of normalised images [B, 3, H, W] → (patches, grid_thw)."""
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor

    proc = Qwen2VLImageProcessor(patch_size=facts.patch, merge_size=facts.merge,
                                 temporal_patch_size=facts.temporal)
    patches, gh, gw = proc.patchify(images, patch_size=facts.patch, merge_size=facts.merge,
                                    temporal_patch_size=facts.temporal)
    grid = torch.tensor([[1, gh, gw]] * images.shape[0])
    return patches.reshape(-1, patches.shape[-1]), grid


def _reference(visual, images, facts, **kw):
    """transformers' vision model on the processor's flattening: the output object, per-image split."""
    patches, grid = _flatten(images, facts)
    with torch.no_grad():
        return visual(patches, grid_thw=grid, return_dict=True, **kw), grid


def _err(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def _images(b: int, size: tuple[int, int]) -> torch.Tensor:
    return torch.randn(b, 3, *size, generator=torch.Generator().manual_seed(7))


CASES = [
    ("qwen2_vl", (56, 84)),
    ("qwen2_5_vl", (112, 112)),
    # 10×12 patches = 5×6 merge units; window 112 px = 4 units divides neither side: remainder windows
    # on the bottom row, the right column and the corner (transformers pads them).
    ("qwen2_5_vl", (140, 168)),
    ("qwen3_vl", (64, 96)),
    ("qwen3_5", (64, 64)),
]


@pytest.mark.parametrize("model_type,size", CASES, ids=[f"{m}-{h}x{w}" for m, (h, w) in CASES])
@pytest.mark.parametrize("batch", [1, 2])
def test_path_equals_transformers(model_type, size, batch):
    over = {"window_size": 112} if size == (140, 168) else {}
    tower, visual, facts = _build(model_type, size, **over)
    path = QwenVisionPath(tower, _plan(tower, "none")).eval()
    images = _images(batch, size)
    with torch.no_grad():
        out = path(images)
    ref, grid = _reference(visual, images, facts)
    tokens, *deep = out if isinstance(out, tuple) else (out,)
    per_image = (size[0] // facts.patch) * (size[1] // facts.patch) // facts.merge ** 2
    assert tokens.shape == (batch, per_image, facts.out)
    want = ref.pooler_output.reshape(batch, per_image, -1)
    err = _err(tokens, want)
    assert not (err > BOUND), f"max|Δ| {err}"
    assert len(deep) == len(facts.deepstack)
    for mine, theirs in zip(deep, getattr(ref, "deepstack_features", None) or []):
        err = _err(mine, theirs.reshape(batch, per_image, -1))
        assert not (err > BOUND), f"deepstack max|Δ| {err}"
    if facts.deepstack:
        assert len(ref.deepstack_features) == len(deep) == 2


@pytest.mark.parametrize("model_type,size", [("qwen2_5_vl", (112, 168)), ("qwen3_vl", (128, 128))])
def test_pool2_equals_transformers_modules(model_type, size):
    """pool:2 = transformers' last hidden state, back in raster order, 2×2 average-pooled, put into merge
    blocks, then transformers' merger (and the same on each DeepStack layer with its merger)."""
    over = {"window_size": 112} if model_type == "qwen2_5_vl" else {}
    tower, visual, facts = _build(model_type, size, **over)
    plan = _plan(tower, "pool:2")
    path = QwenVisionPath(tower, plan).eval()
    images = _images(2, size)
    with torch.no_grad():
        out = path(images)
    ref, grid = _reference(visual, images, facts, output_hidden_states=True)
    gh, gw = tower.spec.grid
    m = facts.merge
    order = tower.to_merge_order(torch.arange(gh * gw).reshape(1, -1, 1).float(), (gh, gw)).reshape(-1).long()
    if model_type == "qwen2_5_vl":
        from transformers.vision_utils import get_vision_window_index

        index, _ = get_vision_window_index(grid[:1], m, facts.window, facts.patch)
        # transformers' hidden states are in window order (merge units permuted by `index`).
        order = order.reshape(-1, m * m)[index].reshape(-1)

    def pooled(h):
        h = h.reshape(2, gh * gw, -1)
        raster = torch.empty_like(h)
        raster[:, order] = h
        x = raster.reshape(2, gh, gw, -1).permute(0, 3, 1, 2)
        x = F.avg_pool2d(x, 2).permute(0, 2, 3, 1).reshape(2, (gh // 2) * (gw // 2), -1)
        return tower.to_merge_order(x, (gh // 2, gw // 2))

    with torch.no_grad():
        want = visual.merger(pooled(ref.last_hidden_state)).reshape(2, -1, facts.out)
        tokens, *deep = out if isinstance(out, tuple) else (out,)
        assert tokens.shape == want.shape == (2, (gh // 2) * (gw // 2) // m ** 2, facts.out)
        err = _err(tokens, want)
        assert not (err > BOUND), f"max|Δ| {err}"
        for j, layer in enumerate(facts.deepstack):
            # hidden_states: the embedding output, then each block's output in block order.
            assert len(ref.hidden_states) == facts.depth + 1
            h = ref.hidden_states[layer + 1]
            wd = visual.deepstack_merger_list[j](pooled(h)).reshape(2, -1, facts.out)
            err = _err(deep[j], wd)
            assert not (err > BOUND), f"deepstack {j} max|Δ| {err}"
    assert image_grid_thw(plan.grid_out) == [1, gh // 2, gw // 2]


def test_refusals():
    from tokcomp_edge.errors import InputError, SpecError

    tower, _, facts = _build("qwen2_vl", (56, 56))
    with pytest.raises(SpecError, match="merger"):
        QwenVisionPath(tower, _plan(tower, "prune:4:norm"))
    with pytest.raises(SpecError, match="merge size 2"):
        QwenVisionPath(tower, _plan(tower, "bilinear:3x3"))
    with pytest.raises(InputError, match="not a multiple of patch × merge = 28"):
        _build("qwen2_vl", (56, 70))


def test_onnx_export_equals_torch_and_lints_clean(tmp_path):
    """One tiny Qwen2.5-VL path (remainder windows) through the dynamo exporter → ONNX Runtime = torch at
    batch 1 and 2, and the graph has no data-dependent op (the project's TensorRT lint passes)."""
    import numpy as np
    import onnxruntime as ort

    from tokcomp_edge.core.lint import lint_model
    from tokcomp_edge.export.config import DEFAULT_OPSET
    from tokcomp_edge.export.onnx_export import export_to_proto

    size = (140, 168)
    tower, _, facts = _build("qwen2_5_vl", size, window_size=112)
    path = QwenVisionPath(tower, _plan(tower, "none")).eval()
    proto = export_to_proto(path, size, batch_min=1, batch_max=2, opset=DEFAULT_OPSET)
    ops = {n.op_type for n in proto.graph.node}
    assert not ops & {"NonZero", "Loop", "If", "Range", "Where", "Scan", "Unique"}, ops
    report = lint_model(proto)
    assert report, report.format()
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    for b in (1, 2):
        x = _images(b, size)
        with torch.no_grad():
            want = path(x).numpy()
        got = sess.run(None, {"pixel_values": x.numpy()})[0]
        err = float(np.abs(got - want).max())
        assert got.shape == want.shape
        assert not (err > BOUND), f"batch {b}: ONNX Runtime vs torch max|Δ| {err}"

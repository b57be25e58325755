"""encode() on real photos == transformers' path for the static-tile families (Qwen2-VL, Qwen2.5-VL, Qwen3-VL
with its DeepStack outputs, Qwen3.5, LFM2-VL), and their layout == what the family's Processor inserts.

Each family is a tiny random VLM saved with save_pretrained (its image processor and a tokenizer holding the
family's special tokens at config.json's ids beside it), exported once per module at a non-square tile.
The reference for one photo: the photo resized to the tile with the family's filter (smart_resize then keeps
it: its sides are multiples of patch × merge within the folder's pixel limits), the folder's image processor
(PIL backend for Qwen; LFM2-VL has only the torchvision one, which does not resize a tile-sized image), then
get_image_features. The ONNX Runtime fp32 path must agree within the export's parity tolerance.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from runtime_helpers import photos, rel_err
from vlm_helpers import build_lfm2_vl  # on sys.path through runtime_helpers

pytest.importorskip("transformers")
pytestmark = pytest.mark.usefixtures("one_torch_thread")

TOL = 2e-4  # relative to the output's max |value|: the export's atol 1e-4 + rtol 1e-4
# family → (tiny preset, non-square tile whose patch grid pool:2 and then the 2×2 merge both divide).
QWEN = {"qwen2_vl": ("tiny-qwen2-vl", (224, 168)), "qwen2_5_vl": ("tiny-qwen2.5-vl", (168, 224)),
        "qwen3_vl": ("tiny-qwen3-vl", (128, 192)), "qwen3_5": ("tiny-qwen3.5", (192, 128))}
LFM2_TILE = (128, 192)  # 8×12 patches of 16 → unshuffle 2 → 4×6 = 24 tokens; pool:2 → 2×3 = 6
# The fast set: one Qwen family with DeepStack, one without, and LFM2-VL; the rest in the full suite.
FAST = ("qwen2_5_vl", "qwen3_vl")
FAMILIES = [f if f in FAST else pytest.param(f, marks=pytest.mark.slow) for f in QWEN] + ["lfm2_vl"]


def _tokenizer(special: dict[str, int]):
    """A word-level tokenizer whose special tokens have exactly the ids config.json gives the model."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({"[UNK]": 0, **special}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    t = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")
    t.add_special_tokens({"additional_special_tokens": list(special)})
    assert all(t.convert_tokens_to_ids(k) == v for k, v in special.items())
    return t


def _qwen_model(family: str):
    import torch
    import transformers as T

    from tokcomp_edge.vlm.families import FAMILIES as FAM
    from tokcomp_edge.vlm.presets import VLM_PRESETS
    from tokcomp_edge.vlm.spec import hf_config_object

    preset = VLM_PRESETS[QWEN[family][0]]
    torch.manual_seed(0)
    conf = hf_config_object(family, preset.config, preset.name)
    # Inside the tiny vocabulary (as the published ids are inside theirs), so the LLM can embed the whole prompt.
    conf.vision_start_token_id, conf.vision_end_token_id = 7, 8
    if family != "qwen3_5":  # M-RoPE sections that fit the tiny LLM's head (24 = 2·(4+4+4)); the default fits 128
        conf.text_config.rope_parameters = {**conf.text_config.rope_parameters, "mrope_section": [4, 4, 4]}
    model = getattr(T, FAM[family].hf_class)(conf).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # transformers zero-initialises some parameters: perturb all
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model


def _folder(family: str, root):
    """(folder, model, Processor): saved with save_pretrained, its image processor and tokenizer beside it."""
    import transformers as T

    from vlm_helpers import save_vlm

    if family == "lfm2_vl":
        model = build_lfm2_vl(vision_layers=2)
        image = T.Lfm2VlImageProcessor(encoder_patch_size=16, downsample_factor=2, min_image_tokens=4,
                                       max_image_tokens=64, tile_size=128, do_image_splitting=False,
                                       image_mean=[0.5] * 3, image_std=[0.5] * 3, resample=2)
        special = {"<image>": 5, "<|image_start|>": 6, "<|image_end|>": 7}
        proc_cls = T.Lfm2VlProcessor
    else:
        model = _qwen_model(family)
        v, c = model.config.vision_config, model.config
        half = family.startswith("qwen3")  # Qwen3-VL's published processor normalises with 0.5
        image = T.Qwen2VLImageProcessor(patch_size=v.patch_size, merge_size=v.spatial_merge_size,
                                        temporal_patch_size=v.temporal_patch_size,
                                        size={"shortest_edge": 16 * 16, "longest_edge": 1024 * 1024},
                                        **({"image_mean": [0.5] * 3, "image_std": [0.5] * 3} if half else {}))
        special = {"<|image_pad|>": c.image_token_id, "<|vision_start|>": c.vision_start_token_id,
                   "<|vision_end|>": c.vision_end_token_id, "<|video_pad|>": c.video_token_id}
        proc_cls = T.Qwen2VLProcessor if family.startswith("qwen2") else T.Qwen3VLProcessor
    folder = save_vlm(model, root / family)
    image.save_pretrained(folder)
    tok = _tokenizer(special)
    tok.save_pretrained(folder)
    kw = {} if family == "lfm2_vl" else {"video_processor": _video_processor(family, image)}
    return folder, model, proc_cls(image_processor=image, tokenizer=tok, **kw)


def _video_processor(family: str, image):
    import transformers as T

    cls = T.Qwen2VLVideoProcessor if family.startswith("qwen2") else T.Qwen3VLVideoProcessor
    return cls(patch_size=image.patch_size, merge_size=image.merge_size, temporal_patch_size=image.temporal_patch_size)


@pytest.fixture(scope="module")
def static_bundle(tmp_path_factory):
    """static_bundle(family, compress="none") -> (folder, model, Processor, bundle path, tile)."""
    from tokcomp_edge.export import ExportConfig, export_bundle

    root = tmp_path_factory.mktemp("rt_static")
    cache: dict = {}

    def make(family: str, compress: str = "none"):
        if family not in cache:
            cache[family] = _folder(family, root / "folders")
        key = (family, compress)
        if key not in cache:
            tile = LFM2_TILE if family == "lfm2_vl" else QWEN[family][1]
            out = root / f"{family}_{compress.replace(':', '-')}"
            export_bundle(ExportConfig(model=f"hf:{cache[family][0]}", compress=compress, out=out,
                                       image_size=tile, batch_max=2, quiet=True))
            cache[key] = (*cache[family], out, tile)
        return cache[key]

    return make


def _at_tile(path, tile, family):
    """The photo resized to the tile with the family's filter (Qwen bicubic, LFM2-VL bilinear)."""
    from PIL import Image

    from tokcomp_edge.calibration.images import load_rgb

    return load_rgb(path).resize((tile[1], tile[0]), Image.BILINEAR if family == "lfm2_vl" else Image.BICUBIC)


def _reference(family, folder, model, image, tile):
    """transformers' features for one tile-sized image: (tokens [n, hidden], DeepStack list, grid_thw or None)."""
    import torch
    from transformers import AutoImageProcessor

    if family == "lfm2_vl":  # no PIL backend: the torchvision one, which keeps an image already at a valid size
        batch = AutoImageProcessor.from_pretrained(folder)(images=[image], return_tensors="pt")
        assert batch["spatial_shapes"].tolist() == [[tile[0] // 16, tile[1] // 16]]
        with torch.no_grad():
            out = model.model.get_image_features(pixel_values=batch["pixel_values"],
                                                 spatial_shapes=batch["spatial_shapes"],
                                                 pixel_attention_mask=batch["pixel_attention_mask"])
        return out.pooler_output[0].numpy(), [], None
    proc = AutoImageProcessor.from_pretrained(folder, backend="pil")
    assert type(proc).__name__ == "Qwen2VLImageProcessorPil"
    batch = proc(images=[image], return_tensors="pt")
    patch = model.config.vision_config.patch_size
    assert batch["image_grid_thw"].tolist() == [[1, tile[0] // patch, tile[1] // patch]]  # smart_resize kept it
    with torch.no_grad():
        out = model.get_image_features(pixel_values=batch["pixel_values"], image_grid_thw=batch["image_grid_thw"])
    feats = out.pooler_output
    feats = feats[0] if isinstance(feats, (list, tuple)) else feats
    deep = [d[0] if isinstance(d, (list, tuple)) else d for d in (getattr(out, "deepstack_features", None) or [])]
    return feats.numpy(), [d.numpy() for d in deep], batch["image_grid_thw"][0].tolist()


def _encode(bundle, images):
    from tokcomp_edge.runtime import VisionRuntime

    with VisionRuntime.open(bundle) as rt:
        return rt.encode(images)


@pytest.mark.parametrize("family", FAMILIES)
def test_encode_equals_transformers_and_layout_equals_processor(static_bundle, family):
    folder, model, processor, bundle, tile = static_bundle(family)
    paths = photos()
    out = _encode(bundle, paths)
    assert len(out.embeddings) == len(out.layout) == len(out.outputs) == len(paths) >= 3
    manifest = json.loads((bundle / "manifest.json").read_text())
    for path, emb, lay, extra in zip(paths, out.embeddings, out.layout, out.outputs):
        image = _at_tile(path, tile, family)
        ref, deep, thw = _reference(family, folder, model, image, tile)
        assert float(np.abs(ref).max()) > 1e-3  # a (near) zero reference would prove nothing
        assert emb.shape == ref.shape, (path.name, emb.shape, ref.shape)
        assert rel_err(emb, ref) < TOL, (path.name, rel_err(emb, ref))
        # Qwen3-VL: the DeepStack features, one [tiles, tokens, hidden] output each, in deepstack index order.
        names = [f"deepstack_{i}" for i in range(len(deep))]
        assert sorted(extra) == names == (manifest["vlm"].get("qwen") or {}).get("deepstack_outputs", [])
        assert (family == "qwen3_vl") == bool(deep)
        for name, d in zip(names, deep):
            assert extra[name].shape == (1, *d.shape)
            assert rel_err(extra[name][0], d) < TOL, (path.name, name, rel_err(extra[name][0], d))
        # The layout: what the family's Processor inserts for this image (ids included), and its grid.
        marker = "<image>" if family == "lfm2_vl" else "<|vision_start|><|image_pad|><|vision_end|>"
        enc = processor(text=[marker], images=[image], return_tensors="np")
        ids = enc["input_ids"][0].tolist()
        assert lay.token_ids == ids and lay.prompt == "".join(processor.tokenizer.convert_ids_to_tokens(ids))
        assert lay.tokens == emb.shape[0] == lay.prompt.count("<image>" if family == "lfm2_vl" else "<|image_pad|>")
        assert lay.image_grid_thw == thw
        if thw is not None:
            assert enc["image_grid_thw"][0].tolist() == thw == manifest["vlm"]["qwen"]["image_grid_thw"]
    assert json.loads(json.dumps(out.layout[0].to_dict()))["image_grid_thw"] == out.layout[0].image_grid_thw


POOLED = ["qwen3_vl", pytest.param("qwen2_vl", marks=pytest.mark.slow), "lfm2_vl"]


@pytest.mark.parametrize("family", POOLED)
def test_pool2_layout_counts_what_it_produces_and_carries_the_pooled_grid(static_bundle, family):
    """pool:2: 4× fewer tokens than the stock processor inserts for the image; the layout's count is the
    embeddings' rows, and its image_grid_thw is the pooled grid, for which the Processor's own rule
    (grid t·h·w / merge²) gives exactly that count, so the LLM's M-RoPE places what the engine emits."""
    import torch

    _, model, processor, plain, tile = static_bundle(family)
    _, _, _, pooled, _ = static_bundle(family, "pool:2")
    paths = photos()
    a, b = _encode(plain, paths), _encode(pooled, paths)
    pad = "<image>" if family == "lfm2_vl" else "<|image_pad|>"
    for path, ea, eb, la, lb, xb in zip(paths, a.embeddings, b.embeddings, a.layout, b.layout, b.outputs):
        assert eb.shape[0] == lb.tokens == lb.prompt.count(pad) == sum(lb.tokens_per_tile)
        assert lb.tokens * 4 == la.tokens == ea.shape[0]
        marker = "<image>" if family == "lfm2_vl" else "<|vision_start|><|image_pad|><|vision_end|>"
        stock = processor(text=[marker], images=[_at_tile(path, tile, family)], return_tensors="np")
        stock_ids = stock["input_ids"][0].tolist()
        assert stock_ids.count(stock_ids[1]) == la.tokens != lb.tokens  # the stock count would be wrong
        assert lb.token_ids[0] == stock_ids[0] and lb.token_ids[-1] == stock_ids[-1]
        if family == "lfm2_vl":
            assert lb.image_grid_thw is None
            continue
        assert la.image_grid_thw == stock["image_grid_thw"][0].tolist()
        assert lb.image_grid_thw == [1, la.image_grid_thw[1] // 2, la.image_grid_thw[2] // 2]
        told = processor.replace_image_token({"image_grid_thw": torch.tensor([lb.image_grid_thw])}, 0)
        assert told.count(pad) == lb.tokens
        for name, d in xb.items():  # DeepStack layers pooled the same way
            assert d.shape == (1, lb.tokens, ea.shape[1]), name
        # The LLM's own M-RoPE (get_rope_index) on the layout's ids with its grid: one position per token, the
        # image's (t, h, w) positions spanning the pooled token grid; the stock grid does not fit the ids.
        ids = torch.tensor([lb.token_ids])
        mm = (ids == model.config.image_token_id).int()
        pos, _ = model.model.get_rope_index(ids, mm, image_grid_thw=torch.tensor([lb.image_grid_thw]))
        img = pos[:, 0, mm[0].bool()]
        assert img.shape[1] == lb.tokens
        assert [int(r.max() - r.min()) + 1 for r in img] == [1, lb.image_grid_thw[1] // 2, lb.image_grid_thw[2] // 2]
        with pytest.raises(RuntimeError):
            model.model.get_rope_index(ids, mm, image_grid_thw=torch.tensor([la.image_grid_thw]))


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_splice_with_the_layout_grid_equals_the_vlm_forward(static_bundle, family):
    """The LLM side of the recipe: the layout's ids in a prompt, encode()'s rows at its image positions, M-RoPE
    positions from get_rope_index with the layout's image_grid_thw (Qwen3-VL: the DeepStack outputs added at
    the same positions, as the model adds its own) == the VLM's forward from the processor's pixels."""
    import torch
    from transformers import AutoImageProcessor

    folder, model, _, bundle, tile = static_bundle(family)
    path = photos()[0]
    out = _encode(bundle, [path])
    emb, lay, extra = out.embeddings[0], out.layout[0], out.outputs[0]
    ids = torch.tensor([[1, 2, 3] + lay.token_ids + [4, 2]])
    mm = (ids == model.config.image_token_id).int()
    batch = AutoImageProcessor.from_pretrained(folder, backend="pil")(images=[_at_tile(path, tile, family)],
                                                                      return_tensors="pt")
    with torch.no_grad():
        want = model(input_ids=ids, pixel_values=batch["pixel_values"], image_grid_thw=batch["image_grid_thw"],
                     mm_token_type_ids=mm).logits
        pos, _ = model.model.get_rope_index(ids, mm, image_grid_thw=torch.tensor([lay.image_grid_thw]))
        embeds = model.get_input_embeddings()(ids)
        mask = mm.bool()
        embeds[mask] = torch.from_numpy(emb)
        kw = {}
        if family == "qwen3_vl":
            kw = {"visual_pos_masks": mask,
                  "deepstack_visual_embeds": [torch.from_numpy(extra[f"deepstack_{k}"][0]) for k in range(len(extra))]}
        hidden = model.model.language_model(inputs_embeds=embeds, position_ids=pos, **kw).last_hidden_state
        got = model.lm_head(hidden)
        plain = model.lm_head(model.model.language_model(inputs_embeds=embeds).last_hidden_state)
    err = float((got - want).abs().max() / want.abs().max())
    assert err < 1e-4, err
    # The positions matter: 1-D positions (no grid) give other logits.
    assert float((plain - want).abs().max() / want.abs().max()) > 1e-3


def test_a_qwen_manifest_without_its_grid_is_refused(static_bundle):
    """The grid is what the LLM's M-RoPE needs: a manifest that lacks it, or whose grid does not give the tokens
    the bundle emits, is one BundleError line, not a layout without positions."""
    from tokcomp_edge.errors import BundleError
    from tokcomp_edge.runtime.layout import image_layout
    from tokcomp_edge.runtime.processor import ProcessorParams
    from tokcomp_edge.runtime.tiling import tile_image

    _, _, _, bundle, tile = static_bundle("qwen3_vl")
    manifest = json.loads((bundle / "manifest.json").read_text())
    tiled = tile_image(_at_tile(photos()[0], tile, "qwen3_vl"), ProcessorParams.from_manifest(manifest))
    assert image_layout(tiled, manifest).image_grid_thw == manifest["vlm"]["qwen"]["image_grid_thw"]
    wrong = json.loads(json.dumps(manifest))
    wrong["vlm"]["qwen"]["image_grid_thw"] = [1, 2, 2]
    with pytest.raises(BundleError, match="gives 1 tokens"):
        image_layout(tiled, wrong)
    del wrong["vlm"]["qwen"]
    with pytest.raises(BundleError, match="no vlm.qwen.image_grid_thw"):
        image_layout(tiled, wrong)

"""Qwen-VL at a static tile (issue 17): a tiny random VLM of each family saved with save_pretrained in several
shards → `hf:` export → ONNX Runtime equals transformers' get_image_features (and DeepStack features) at batch
1 and 2; pool:2 equals pooling transformers' own last hidden state, then its merger; the graph has no
data-dependent op; the pre-5.0 `visual.*` key layout loads; preprocess equals the Qwen image processor."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tokcomp_edge.export import ExportConfig, export_bundle
from tokcomp_edge.vlm.presets import VLM_PRESETS
from tokcomp_edge.vlm.spec import hf_config_object
from vlm_helpers import save_vlm

# family → (tiny preset whose config is used, tile): 2.5-VL's 196×140 is a 7×5 merge grid its 2×2 windows do
# not divide (transformers pads the windows); the others are non-square too.
CASES = {"qwen2_vl": ("tiny-qwen2-vl", (112, 84)), "qwen2_5_vl": ("tiny-qwen2.5-vl", (196, 140)),
         "qwen3_vl": ("tiny-qwen3-vl", (128, 96)), "qwen3_5": ("tiny-qwen3.5", (96, 128))}
DATA_DEPENDENT = {"NonZero", "Loop", "If", "Range", "Scan", "Unique", "Where", "TopK"}


def _build(family: str, seed: int = 0):
    import transformers as T

    from tokcomp_edge.vlm.families import FAMILIES

    preset = VLM_PRESETS[CASES[family][0]]
    conf = hf_config_object(family, preset.config, preset.name)
    torch.manual_seed(seed)
    model = getattr(T, FAMILIES[family].hf_class)(conf).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # transformers zero-initialises some parameters: perturb all, as the other families' tests do
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model


def _processor(model):
    from transformers import Qwen2VLImageProcessor

    v = model.config.vision_config
    half = model.config.model_type.startswith("qwen3")  # Qwen3-VL's published processor normalises with 0.5
    kw = {"image_mean": [0.5] * 3, "image_std": [0.5] * 3} if half else {}
    return Qwen2VLImageProcessor(patch_size=v.patch_size, merge_size=v.spatial_merge_size,
                                 temporal_patch_size=v.temporal_patch_size,
                                 size={"shortest_edge": 16 * 16, "longest_edge": 1024 * 1024}, **kw)


@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
    """qwen(family) -> (folder, model, bundle folder, manifest): saved in 3+ shards, exported at its tile."""
    root = tmp_path_factory.mktemp("qwen")
    cache = {}

    def make(family: str, compress: str = "none", tile: tuple[int, int] | None = None):
        key = (family, compress, tile)
        if key not in cache:
            if family not in cache:
                model = _build(family)
                folder = save_vlm(model, root / family, max_shard_size="40KB")
                _processor(model).save_pretrained(folder)
                cache[family] = (folder, model)
            folder, model = cache[family]
            h, w = tile or CASES[family][1]
            out = root / f"{family}_{compress.replace(':', '-')}_{h}x{w}"
            export_bundle(ExportConfig(model=f"hf:{folder}", compress=compress, out=out, image_size=(h, w),
                                       batch_max=2, quiet=True))
            cache[key] = (folder, model, out, json.loads((out / "manifest.json").read_text()))
        return cache[key]

    return make


def _ort(folder, x: np.ndarray) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    s = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in s.get_outputs()], s.run(None, {"pixel_values": x})))


def _flat(model, x: torch.Tensor):
    """The processor's flattened patches and grid of already-normalised tiles (no resize, rescale or
    normalisation: the patchify step alone, transformers' own code)."""
    from transformers import Qwen2VLImageProcessor

    v = model.config.vision_config
    proc = Qwen2VLImageProcessor(patch_size=v.patch_size, merge_size=v.spatial_merge_size,
                                 temporal_patch_size=v.temporal_patch_size, do_resize=False, do_rescale=False,
                                 do_normalize=False, do_convert_rgb=False)
    out = [proc(images=[img.numpy()], return_tensors="pt", input_data_format="channels_first") for img in x]
    return torch.cat([o["pixel_values"] for o in out]), torch.cat([o["image_grid_thw"] for o in out])


def _reference(model, x: torch.Tensor):
    flat, thw = _flat(model, x)
    with torch.no_grad():
        out = model.get_image_features(pixel_values=flat, image_grid_thw=thw)
    feats = torch.stack(list(out.pooler_output)) if isinstance(out.pooler_output, (list, tuple)) \
        else out.pooler_output.reshape(len(x), -1, out.pooler_output.shape[-1])
    deep = [torch.stack(list(d)) if isinstance(d, (list, tuple)) else d.reshape(len(x), -1, d.shape[-1])
            for d in (getattr(out, "deepstack_features", None) or [])]
    return feats, deep


@pytest.mark.parametrize("family", list(CASES))
def test_hf_export_equals_get_image_features_at_batch_1_and_2(qwen, family):
    folder, model, bundle, manifest = qwen(family)
    assert len(list(folder.glob("model-*.safetensors"))) >= 3
    h, w = CASES[family][1]
    patch = model.config.vision_config.patch_size
    q = manifest["vlm"]["qwen"]
    assert q["image_grid_thw"] == [1, h // patch, w // patch]
    assert manifest["tokens_out"] == q["llm_tokens"] == (h // patch // 2) * (w // patch // 2)
    for batch in (1, 2):
        x = torch.randn(batch, 3, h, w, generator=torch.Generator().manual_seed(batch))
        got = _ort(bundle, x.numpy())
        want, deep = _reference(model, x)
        err = np.abs(got["tokens"] - want.numpy()).max()
        assert err <= 1e-5 * max(1.0, float(want.abs().max())), (family, batch, err)
        assert q["deepstack_outputs"] == [f"deepstack_{i}" for i in range(len(deep))]
        assert (family == "qwen3_vl") == bool(deep)
        for i, d in enumerate(deep):
            e = np.abs(got[f"deepstack_{i}"] - d.numpy()).max()
            assert e <= 1e-5 * max(1.0, float(d.abs().max())), (family, batch, i, e)


@pytest.mark.parametrize("family", list(CASES))
def test_graph_has_no_data_dependent_op(qwen, family):
    import onnx

    _, _, bundle, manifest = qwen(family)
    ops = {n.op_type for n in onnx.load(str(bundle / "model.onnx")).graph.node}
    assert not ops & DATA_DEPENDENT, ops & DATA_DEPENDENT
    assert [b["index"] for b in manifest["blocks"]] == list(range(manifest["encoder"]["num_layers"]))


# Tiles whose patch grid pool:2 then the 2×2 merger both divide (16×12 and 8×12 patches).
POOL_TILES = {"qwen2_5_vl": (224, 168), "qwen3_vl": (128, 192)}


@pytest.mark.parametrize("family", list(POOL_TILES))
def test_pool2_equals_pooling_transformers_hidden_state_then_its_merger(qwen, family):
    """Computed from transformers' modules alone: the vision model's last hidden state (its window order
    undone with transformers' own window index), raster grid, 2×2 average, merge-block order, merger."""
    import torch.nn.functional as F
    from transformers.vision_utils import get_vision_window_index

    folder, model, bundle, manifest = qwen(family, "pool:2", POOL_TILES[family])
    visual = model.model.visual
    v = model.config.vision_config
    h, w = POOL_TILES[family]
    gh, gw = h // v.patch_size, w // v.patch_size
    x = torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(7))
    flat, thw = _flat(model, x)
    with torch.no_grad():
        out = visual(flat, grid_thw=thw)
        hid = out.last_hidden_state.reshape(2, gh * gw, -1)
        if family == "qwen2_5_vl":
            index, _ = get_vision_window_index(thw[:1], v.spatial_merge_size, v.window_size, v.patch_size)
            hid = hid.reshape(2, -1, 4, hid.shape[-1])[:, torch.argsort(index)].reshape(hid.shape)
        c = hid.shape[-1]
        raster = hid.reshape(2, gh // 2, gw // 2, 2, 2, c).permute(0, 1, 3, 2, 4, 5).reshape(2, gh, gw, c)
        pooled = F.avg_pool2d(raster.permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1)  # [2, gh/2, gw/2, c]
        ph, pw = gh // 2, gw // 2
        merge = pooled.reshape(2, ph // 2, 2, pw // 2, 2, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, c)
        want = visual.merger(merge).reshape(2, -1, manifest["dim_out"])
    got = _ort(bundle, x.numpy())["tokens"]
    assert manifest["vlm"]["qwen"]["image_grid_thw"] == [1, ph, pw]
    assert got.shape == (2, (ph // 2) * (pw // 2), manifest["dim_out"])
    assert np.abs(got - want.numpy()).max() <= 1e-5 * max(1.0, float(want.abs().max()))


def test_pre_5_layout_loads_the_same_tensors(qwen, tmp_path):
    """Checkpoints saved before transformers 5 name the tower `visual.*` and the LLM `model.*`."""
    from safetensors.torch import save_file

    folder, model, bundle, _ = qwen("qwen2_5_vl")
    old = tmp_path / "old"
    old.mkdir()
    for f in ("config.json", "preprocessor_config.json"):
        (old / f).write_text((folder / f).read_text())
    sd = {}
    for k, t in model.state_dict().items():
        k = k.replace("model.visual.", "visual.").replace("model.language_model.", "model.")
        sd[k] = t.contiguous().clone()
    save_file(sd, str(old / "model.safetensors"))
    h, w = CASES["qwen2_5_vl"][1]
    out = tmp_path / "b"
    export_bundle(ExportConfig(model=f"hf:{old}", out=out, image_size=(h, w), batch_max=2, quiet=True))
    x = np.random.default_rng(0).standard_normal((1, 3, h, w)).astype(np.float32)
    np.testing.assert_array_equal(_ort(out, x)["tokens"], _ort(bundle, x)["tokens"])
    assert json.loads((out / "manifest.json").read_text())["encoder"]["weights"]["covers"] == "vision-path tensors"


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_preprocess_equals_the_qwen_image_processor(qwen, family, tmp_path, capsys):
    """`tokcomp preprocess` on a photo resized to the tile = the folder's Qwen2VLImageProcessor output for
    it (smart_resize keeps a tile-sized image as it is), un-flattened from merge-block patches to NCHW."""
    from pathlib import Path

    from PIL import Image
    from transformers import Qwen2VLImageProcessor

    from tokcomp_edge.calibration.images import load_rgb
    from vlm_helpers import run_main

    folder, model, bundle, _ = qwen(family)
    h, w = CASES[family][1]
    photo = sorted((Path(__file__).parents[1] / "calibration" / "photos").glob("*.jpg"))[0]
    img = load_rgb(photo).resize((w, h), Image.BICUBIC)
    src = tmp_path / "tile.png"
    img.save(src)
    dest = tmp_path / "px.npy"
    code, _, err = run_main(capsys, "preprocess", bundle, src, "--out", dest)
    assert code == 0, err
    ours = np.load(dest)
    enc = Qwen2VLImageProcessor.from_pretrained(folder)(images=img, return_tensors="pt")
    v = model.config.vision_config
    p, m, t = v.patch_size, v.spatial_merge_size, v.temporal_patch_size
    assert enc["image_grid_thw"].tolist() == [[1, h // p, w // p]]
    patches = enc["pixel_values"].reshape(h // p // m, w // p // m, m, m, 3, t, p, p)[:, :, :, :, :, 0]
    want = patches.permute(4, 0, 2, 5, 1, 3, 6).reshape(1, 3, h, w).numpy()
    assert ours.shape == want.shape
    np.testing.assert_allclose(ours, want, rtol=0, atol=1e-6)

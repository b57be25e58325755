"""VLM checkpoints as they exist on disk: sharded safetensors read lazily (the LLM never), torch .bin
shards, pre-5.0 key names, preprocessor_config.json, and rebuilds that notice changed vision tensors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from vlm_helpers import build_vlm, hf_features, save_vlm, tile_pixels

from tokcomp_edge.core.ort_session import ort_session
from tokcomp_edge.errors import BundleError
from tokcomp_edge.export import ExportConfig, export_bundle


def _export(folder, out, **kw):
    return export_bundle(ExportConfig(model=f"hf:{folder}", out=out, batch_max=2, quiet=True, **kw))


def _check(res, model, family, seed=3):
    x = tile_pixels(2, seed=seed)
    want = hf_features(model, family, x).numpy()
    (got,) = ort_session(res.path / "model.onnx").run(["tokens"], {"pixel_values": x.numpy()})
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 + 1e-4 * float(np.abs(want).max()))


class _Recorder:
    """Wraps safetensors.safe_open and records every tensor read and every file opened."""

    def __init__(self, real):
        self.real, self.tensors, self.files = real, [], []

    def __call__(self, path, *a, **kw):
        rec = self
        handle = self.real(path, *a, **kw)
        rec.files.append(str(path))

        class Proxy:
            def __enter__(self):
                self.f = handle.__enter__()
                return self

            def __exit__(self, *exc):
                return handle.__exit__(*exc)

            def keys(self):
                return self.f.keys()

            def get_tensor(self, name):
                rec.tensors.append(name)
                return self.f.get_tensor(name)

        return Proxy()


def test_sharded_checkpoint_reads_only_the_vision_path(tmp_path, monkeypatch):
    import safetensors

    # A wide LLM (vocab 4000 x 256) next to a small tower, sharded small so that several shards hold LLM only.
    model = build_vlm("llava", text_config=dict(model_type="llama", hidden_size=256, num_hidden_layers=2,
                                                 num_attention_heads=2, num_key_value_heads=1,
                                                 intermediate_size=256, vocab_size=4000))
    folder = save_vlm(model, tmp_path / "sharded", max_shard_size="1MB")
    index = json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"]
    shards = set(index.values())
    assert len(shards) > 3
    vision_shards = {f for k, f in index.items() if "vision_tower" in k or "multi_modal_projector" in k}
    rec = _Recorder(safetensors.safe_open)
    monkeypatch.setattr(safetensors, "safe_open", rec)
    res = _export(folder, tmp_path / "b")
    monkeypatch.undo()
    read = set(rec.tensors)
    # save_pretrained writes LLaVA in the hub layout (vision_tower.*, multi_modal_projector.*, language_model.*)
    vision_keys = {k for k in index if k.startswith(("vision_tower.", "multi_modal_projector."))}
    assert len(vision_keys) > 20
    assert read == vision_keys  # every vision-path tensor, and nothing of the LLM or lm_head
    assert not any("language_model" in k or k.startswith("lm_head") for k in rec.tensors)
    opened = {p.rsplit("/", 1)[-1] for p in rec.files}
    assert opened == vision_shards and opened < shards  # LLM-only shards were never opened
    assert res.manifest["encoder"]["weights"]["path"].endswith("model.safetensors.index.json")
    _check(res, model, "llava")


@pytest.mark.parametrize("sharded", [False, True])
def test_torch_bin_checkpoint_loads_with_weights_only(tmp_path, sharded):
    """pytorch_model.bin (and its sharded index form), as older checkpoints ship; read with weights_only."""
    from safetensors.torch import load_file

    model = build_vlm("paligemma", seed=4)
    folder = save_vlm(model, tmp_path / "bin")
    sd = load_file(str(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    if sharded:
        vision = {k: v for k, v in sd.items() if not k.startswith("language_model")}
        text = {k: v for k, v in sd.items() if k.startswith("language_model")}
        torch.save(vision, folder / "pytorch_model-00001-of-00002.bin")
        torch.save(text, folder / "pytorch_model-00002-of-00002.bin")
        wmap = {k: "pytorch_model-00001-of-00002.bin" for k in vision}
        wmap.update({k: "pytorch_model-00002-of-00002.bin" for k in text})
        (folder / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": wmap}))
    else:
        torch.save(sd, folder / "pytorch_model.bin")
    res = _export(folder, tmp_path / "b")
    assert res.manifest["encoder"]["weights"]["path"].endswith(
        "pytorch_model.bin.index.json" if sharded else "pytorch_model.bin")
    _check(res, model, "paligemma")


def _legacy(key: str) -> str:
    """The transformers 4.x layout of a saved key (the vision tower nested as `vision_tower.vision_model.*`,
    as google/gemma-3-4b-it and llava-hf/llava-1.5-7b-hf ship), or the 5.x `model.*` layout."""
    if key.startswith("vision_tower."):
        return "vision_tower.vision_model." + key[len("vision_tower."):]
    return key


def test_pre_5_key_names_map_as_from_pretrained_maps_them(tmp_path):
    from safetensors.torch import save_file

    model = build_vlm("gemma3", seed=5)
    from safetensors.torch import load_file

    folder = save_vlm(model, tmp_path / "legacy")
    saved = load_file(str(folder / "model.safetensors"))
    assert any(k.startswith("vision_tower.encoder.") for k in saved)
    sd = {_legacy(k): v for k, v in saved.items()}
    sd["vision_tower.vision_model.embeddings.position_ids"] = torch.arange(64)[None]  # a 4.x buffer
    save_file(sd, str(folder / "model.safetensors"))
    _check(_export(folder, tmp_path / "b"), model, "gemma3")
    # and the 5.x in-memory layout (model.vision_tower.*), as some re-saves write it
    save_file({k: v.clone().contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"},
              str(folder / "model.safetensors"))
    _check(_export(folder, tmp_path / "c"), model, "gemma3")


def test_preprocessor_config_sets_mean_std_and_is_recorded(tmp_path, vlm_folder):
    import shutil

    src, _ = vlm_folder("internvl")
    folder = tmp_path / "with-pre"
    shutil.copytree(src, folder)
    pre = {"image_processor_type": "GotOcr2ImageProcessorFast", "image_mean": [0.1, 0.2, 0.3],
           "image_std": [0.4, 0.5, 0.6], "size": {"height": 128, "width": 128}, "crop_to_patches": False,
           "max_patches": 12}
    (folder / "preprocessor_config.json").write_text(json.dumps(pre))
    m = _export(folder, tmp_path / "b").manifest
    assert m["encoder"]["mean"] == [0.1, 0.2, 0.3] and m["preprocess"]["std"] == [0.4, 0.5, 0.6]
    assert m["vlm"]["tile"]["preprocessor"]["max_patches"] == 12


def test_rebuild_equals_export_and_notices_changed_vision_tensors(tmp_path):
    from safetensors.torch import load_file, save_file

    from tokcomp_edge.core.bundle import Bundle
    from tokcomp_edge.export.rebuild import model_from_manifest

    model = build_vlm("smolvlm", seed=6)
    folder = save_vlm(model, tmp_path / "m")
    res = _export(folder, tmp_path / "b", compress="pool:2")
    b = Bundle.load(res.path)
    ref = b.reference()
    x = ref["pixel_values.b1"]
    with torch.no_grad():
        again = model_from_manifest(b.manifest)(torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(again, ref["tokens.b1"])
    # The LLM may change (another fine-tune of the text side) without invalidating the bundle …
    sd = load_file(str(folder / "model.safetensors"))
    llm = next(k for k in sd if "text_model" in k)
    sd[llm] = sd[llm] + 1
    save_file(sd, str(folder / "model.safetensors"))
    model_from_manifest(b.manifest)
    # … the vision path may not.
    vis = next(k for k in sd if "vision_model" in k)
    sd[vis] = sd[vis] + 1
    save_file(sd, str(folder / "model.safetensors"))
    with pytest.raises(BundleError, match="vision-path tensors .* changed since export"):
        model_from_manifest(b.manifest)


def test_random_preset_is_seeded_and_not_degenerate(tmp_path):
    from tokcomp_edge.vlm import load_vlm

    a, b = load_vlm("tiny-gemma3", seed=1), load_vlm("tiny-gemma3", seed=1)
    assert a.weights.kind == "random" and a.weights.seed == 1
    for (n, p), (_, q) in zip(a.projector.named_parameters(), b.projector.named_parameters()):
        assert torch.equal(p, q) and bool(p.any()), n  # Gemma 3 zero-initialises its projection
    res = export_bundle(ExportConfig(model="tiny-gemma3", out=tmp_path / "b", batch_max=2, quiet=True))
    tokens = np.load(res.path / "reference.npz")["tokens.b1"]
    assert float(np.abs(tokens).max()) > 1e-2


def test_missing_weights_at_rebuild_names_a_real_flag(tmp_path):
    """Regression: the hint said `--no-torch`, which validate does not have (it is `--torch off`)."""
    import shutil

    from tokcomp_edge.core.bundle import Bundle
    from tokcomp_edge.export.rebuild import model_from_manifest

    model = build_vlm("paligemma", seed=8)
    folder = save_vlm(model, tmp_path / "m")
    res = _export(folder, tmp_path / "b")
    shutil.rmtree(folder)
    with pytest.raises(BundleError) as exc:
        model_from_manifest(Bundle.load(res.path).manifest)
    assert "--torch off" in exc.value.one_line()


def test_smolvlm_processor_config_frames_one_tile(tmp_path, vlm_folder):
    """Idefics3's processor config sizes the whole-image tiling ({"longest_edge": 2048}); the bundle takes
    one tile, resized to the tile with the processor's own filter (LANCZOS), not an error."""
    import shutil

    src, _ = vlm_folder("idefics3")
    folder = tmp_path / "smol"
    shutil.copytree(src, folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "Idefics3ImageProcessor", "do_resize": True, "size": {"longest_edge": 2048},
        "max_image_size": {"longest_edge": 512}, "do_image_splitting": True, "resample": 1, "do_rescale": True,
        "rescale_factor": 1 / 255, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}))
    m = _export(folder, tmp_path / "b").manifest
    pre = m["preprocess"]
    assert pre["resize"] == "square" and pre["interpolation"] == "lanczos" and pre["processor"] == "Idefics3ImageProcessor"
    assert m["vlm"]["tile"]["preprocessor"]["do_image_splitting"] is True


def test_custom_named_safetensors_index_reads_safetensors(tmp_path, monkeypatch):
    """Issue 16 §4: an index not called model.safetensors.index.json (given with --weights) was read as torch
    shards (whole files through torch.load); its shards' suffix says safetensors."""
    import tokcomp_edge.vlm.checkpoint as ckpt

    model = build_vlm("llava", seed=5)
    folder = save_vlm(model, tmp_path / "custom", max_shard_size="200KB")
    (folder / "model.safetensors.index.json").rename(folder / "vision.safetensors.index.json")
    src = ckpt.weight_source(folder / "vision.safetensors.index.json")
    assert src.form == "safetensors"
    monkeypatch.setattr(ckpt, "_torch_load", lambda p: pytest.fail(f"torch.load on a safetensors shard {p}"))
    res = _export(folder, tmp_path / "b", weights=folder / "vision.safetensors.index.json")
    _check(res, model, "llava")


def test_mmap_torch_load_unwraps_like_the_full_load(tmp_path):
    """Issue 16 §4: a .bin saved as {"state_dict": {"module.<name>": …}} (a DDP checkpoint) loads through the
    memory-mapped path with the same unwrapping as load_state_dict (it returned the wrapper as names)."""
    from safetensors.torch import load_file

    from tokcomp_edge.vlm.checkpoint import _torch_load

    model = build_vlm("paligemma", seed=6)
    folder = save_vlm(model, tmp_path / "ddp")
    sd = load_file(str(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": 3}, folder / "pytorch_model.bin")
    assert set(_torch_load(folder / "pytorch_model.bin")) == set(sd)
    _check(_export(folder, tmp_path / "b"), model, "paligemma")

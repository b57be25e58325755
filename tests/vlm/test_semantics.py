"""Where a VLM folder differs from what the export assumes, the export follows transformers or refuses
(issue 15 part 4): a position table of another tile, transformers 5's nested processor_config.json, folders of
families not supported, the batch a tiled processor needs, InternVL with select `full`."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from vlm_helpers import run_main

from tokcomp_edge.export import ExportConfig, export_bundle


def _one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in err, err
    return lines[0]


def _copy(vlm_folder, family: str, dest):
    src, _ = vlm_folder(family)
    shutil.copytree(src, dest)
    return dest


def test_position_table_of_another_tile_is_refused(capsys, tmp_path, vlm_folder):
    """The weights' position table is for a 6x6 grid (96 px tiles), config.json says 8x8 at 128 px: a bare
    tower would resample it, a VLM (whose --image-size is refused too) must not load it silently."""
    from safetensors.torch import load_file, save_file

    folder = _copy(vlm_folder, "llava", tmp_path / "other-tile")
    sd = load_file(str(folder / "model.safetensors"))
    key = next(k for k in sd if k.endswith("embeddings.position_embedding.weight"))
    assert sd[key].shape == (65, 32)  # CLS + 8x8
    sd[key] = torch.randn(37, 32)  # CLS + 6x6
    save_file(sd, str(folder / "model.safetensors"))
    code, _, err = run_main(capsys, "export", f"hf:{folder}", "--out", tmp_path / "b", "--batch-max", "2")
    line = _one_line(err)
    assert code == 2, err
    assert "[37, 32]" in line and "[65, 32]" in line and "6x6" in line and "vision_config.image_size 96" in line
    assert not (tmp_path / "b").exists()


def _processor_folder(vlm_folder, dest):
    """A LLaVA folder whose image processor was saved the transformers 5 way: a real LlavaProcessor's
    save_pretrained (tiny word-level tokenizer, CLIPImageProcessor with odd mean/std) writes
    processor_config.json with the image processor nested under `image_processor`, and no
    preprocessor_config.json."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import CLIPImageProcessor, LlavaProcessor, PreTrainedTokenizerFast

    folder = _copy(vlm_folder, "llava", dest)
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel({"<unk>": 0, "<image>": 1}, unk_token="<unk>")),
                                  unk_token="<unk>")
    images = CLIPImageProcessor(image_mean=[0.1, 0.2, 0.3], image_std=[0.4, 0.5, 0.6], size={"shortest_edge": 128},
                                crop_size={"height": 128, "width": 128})
    LlavaProcessor(image_processor=images, tokenizer=tok, patch_size=16).save_pretrained(folder)
    assert (folder / "processor_config.json").is_file() and not (folder / "preprocessor_config.json").exists()
    assert json.loads((folder / "processor_config.json").read_text())["image_processor"]["image_mean"] == [0.1, 0.2, 0.3]
    return folder


def test_nested_processor_config_sets_mean_std_and_the_nhwc_graph(tmp_path, vlm_folder):
    import onnx
    from onnx import numpy_helper

    folder = _processor_folder(vlm_folder, tmp_path / "proc")
    res = export_bundle(ExportConfig(model=f"hf:{folder}", out=tmp_path / "b", batch_max=2, quiet=True,
                                     variants=("nhwc",)))
    m = res.manifest
    pre = m["preprocess"]
    assert pre["mean"] == pytest.approx([0.1, 0.2, 0.3]) and pre["std"] == pytest.approx([0.4, 0.5, 0.6])
    assert pre["policy_source"] == "processor_config.json (image_processor)"
    assert m["vlm"]["tile"]["preprocessor_source"] == "processor_config.json (image_processor)"
    graph = onnx.load(str(res.path / m["variants"]["nhwc"]["file"]), load_external_data=False).graph
    init = {t.name: numpy_helper.to_array(t).reshape(-1).tolist() for t in graph.initializer}
    assert init["tokcomp_nhwc/mean"] == pytest.approx([0.1, 0.2, 0.3])
    assert init["tokcomp_nhwc/std"] == pytest.approx([0.4, 0.5, 0.6])


def test_folder_without_image_processor_says_family_default(capsys, tmp_path, vlm_folder):
    src, _ = vlm_folder("llava")
    assert not any((src / f).exists() for f in ("processor_config.json", "preprocessor_config.json"))
    code, out, err = run_main(capsys, "export", f"hf:{src}", "--out", tmp_path / "b", "--batch-max", "2")
    assert code == 0, err
    m = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert m["vlm"]["tile"]["preprocessor_source"] == "family default"
    assert m["preprocess"]["policy_source"].startswith("family default: ")
    assert m["preprocess"]["mean"] == pytest.approx([0.48145466, 0.4578275, 0.40821073])  # LLaVA's CLIP default
    shown = " ".join((out + err).split())  # the summary table wraps long cells
    assert "preprocess family default: " in shown and "no preprocessor_config.json" in shown


@pytest.mark.parametrize("model_type", ["llava_next", "pixtral"])
def test_unsupported_vlm_folder_names_the_vlm_families(capsys, tmp_path, model_type):
    folder = tmp_path / model_type
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": model_type}))
    code, _, err = run_main(capsys, "export", f"hf:{folder}", "--out", tmp_path / "b")
    line = _one_line(err)
    assert code == 2 and f"model_type '{model_type}'" in line
    assert all(f in line for f in ("llava", "llava_onevision", "internvl", "smolvlm", "gemma3", "paligemma", "qwen2_5_vl", "lfm2_vl", "clip"))


def test_tiles_per_request_follow_the_processor():
    from tokcomp_edge.vlm import resolve_vlm
    from tokcomp_edge.vlm.spec import vlm_spec
    from tokcomp_edge.vlm.tiles import tiles_per_request

    count = {p: tiles_per_request(resolve_vlm(p)).count for p in
             ("tiny-internvl", "tiny-smolvlm", "smolvlm-256m", "tiny-llava-onevision", "tiny-llava",
              "tiny-gemma3", "tiny-paligemma")}
    assert count == {"tiny-internvl": 13, "tiny-smolvlm": 17, "smolvlm-256m": 17, "tiny-llava-onevision": 37,
                     "tiny-llava": 1, "tiny-gemma3": 1, "tiny-paligemma": 1}

    def with_pre(preset, pre):
        from tokcomp_edge.vlm.presets import VLM_PRESETS

        p = VLM_PRESETS[preset]
        return tiles_per_request(vlm_spec(preset, p.model_type, p.config, pre, "transformers", preset)).count

    assert with_pre("tiny-internvl", {"crop_to_patches": True, "max_patches": 6}) == 7
    assert with_pre("tiny-internvl", {"crop_to_patches": False, "max_patches": 12}) == 1
    assert with_pre("tiny-smolvlm", {"size": {"longest_edge": 2048}, "max_image_size": {"longest_edge": 512}}) == 17
    assert with_pre("tiny-smolvlm", {"do_image_splitting": False}) == 1
    assert with_pre("tiny-llava-onevision", {"size": {"height": 384, "width": 384},
                                             "image_grid_pinpoints": [[384, 384], [768, 1152]]}) == 7
    assert with_pre("tiny-gemma3", {"do_pan_and_scan": True, "pan_and_scan_max_num_crops": 4}) == 5


def test_default_batch_max_is_the_tiles_per_request(tmp_path, vlm_bundle):
    res = export_bundle(ExportConfig(model="tiny-internvl", out=tmp_path / "b", quiet=True))
    m = res.manifest
    assert m["vlm"]["tile"]["tiles_per_request"] == 13
    assert m["onnx"]["batch"] == {"min": 1, "max": 13}
    # an explicit --batch-max wins (the session bundle was exported with batch_max=4)
    explicit = vlm_bundle("internvl").manifest
    assert explicit["onnx"]["batch"]["max"] == 4 and explicit["vlm"]["tile"]["tiles_per_request"] == 13


def test_internvl_select_full_names_the_strategy(capsys, tmp_path, vlm_folder):
    """With `full` InternVL keeps the CLS in front of the grid its pixel shuffle needs; transformers'
    get_image_features fails on it too. The refusal names the config's strategy, not a --prefix never passed."""
    from vlm_helpers import build_vlm, tile_pixels

    folder = _copy(vlm_folder, "internvl", tmp_path / "full")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["vision_feature_select_strategy"] = "full"
    (folder / "config.json").write_text(json.dumps(cfg))
    code, _, err = run_main(capsys, "export", f"hf:{folder}", "--out", tmp_path / "b")
    line = _one_line(err)
    assert code == 2 and "vision_feature_select_strategy 'full'" in line and "--prefix" not in line
    assert 'set vision_feature_select_strategy "default"' in line.lower()
    model = build_vlm("internvl", vision_feature_select_strategy="full")
    with pytest.raises(RuntimeError), torch.no_grad():
        model.get_image_features(tile_pixels(1))

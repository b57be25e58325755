"""Combinations a VLM's transform or projector cannot take fail before any export: exit 2, one line."""

from __future__ import annotations

import json

import pytest

from vlm_helpers import run_main


def _one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("argv,needle", [
    (["tiny-internvl", "--compress", "prune:16"], "keeps 16 scattered tokens, but tiny-internvl applies a pixel shuffle"),
    (["tiny-internvl", "--compress", "pool:3"], "leaves a 3x3 grid, which tiny-internvl's pixel shuffle 2×2 (factor 2)"),
    (["tiny-gemma3", "--compress", "bilinear:6x5"], "6x5 grid, which tiny-gemma3's avg pool 2×2"),
    (["tiny-gemma3", "--compress", "prune:8"], "avg pool 2×2 that needs a full grid"),
    (["tiny-llava", "--prefix", "keep"], "--prefix keep contradicts tiny-llava"),
    (["tiny-llava", "--compress", "unshuffle:2"], "128-channel tokens, but tiny-llava's projector takes 32"),
    (["tiny-llava", "--layer", "-1"], "reads vision_feature_layer -2"),
    (["tiny-llava", "--image-size", "256"], "its tile is 128 px"),
    (["tiny-clip", "--no-projector"], "applies to VLMs"),
    (["tiny-llava", "--video"], "--video is LLaVA-OneVision's frame path"),
    (["tiny-llava-onevision", "--video", "--no-projector"], "cannot go with --no-projector"),
    (["tiny-llava-onevision", "--video", "--compress", "prune:8"], "video pooling resizes a grid"),
])
def test_impossible_vlm_combinations_exit_2(capsys, tmp_path, argv, needle):
    code, _, err = run_main(capsys, "export", *argv, "--out", tmp_path / "b")
    assert code == 2
    assert needle.lower() in _one_line(err).lower()
    assert not (tmp_path / "b").exists()


def test_folder_without_weights_exits_2_naming_the_files(capsys, tmp_path, vlm_folder):
    folder, _ = vlm_folder("paligemma")
    bare = tmp_path / "no-weights"
    bare.mkdir()
    (bare / "config.json").write_text((folder / "config.json").read_text())
    (bare / "README.md").write_text("weights not copied\n")
    code, _, err = run_main(capsys, "export", f"hf:{bare}", "--out", tmp_path / "b")
    assert code == 2
    line = _one_line(err)
    assert "has no weights" in line and "config.json" in line and "README.md" in line
    assert not (tmp_path / "b").exists()


def test_checkpoint_of_another_model_exits_2(capsys, tmp_path, vlm_folder):
    """A folder whose weights hold no vision tower of its family is refused, not randomly completed."""
    from safetensors.torch import save_file
    import torch

    folder, _ = vlm_folder("llava")
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text((folder / "config.json").read_text())
    save_file({"model.language_model.embed_tokens.weight": torch.zeros(4, 4)}, str(other / "model.safetensors"))
    code, _, err = run_main(capsys, "export", f"hf:{other}", "--out", tmp_path / "b")
    assert code == 2 and "holds no tensors of LlavaForConditionalGeneration's vision tower" in _one_line(err)


def test_multi_layer_feature_selection_is_refused(capsys, tmp_path, vlm_folder):
    folder, _ = vlm_folder("llava")
    multi = tmp_path / "multi"
    multi.mkdir()
    cfg = json.loads((folder / "config.json").read_text())
    cfg["vision_feature_layer"] = [-2, -1]
    (multi / "config.json").write_text(json.dumps(cfg))
    code, _, err = run_main(capsys, "export", f"hf:{multi}", "--out", tmp_path / "b")
    assert code == 2 and "concatenates several layers" in _one_line(err)


def test_methods_and_inspect_show_the_chain(capsys, vlm_bundle):
    res = vlm_bundle("llava", "pool:2")
    code, out, _ = run_main(capsys, "inspect", res.path)
    assert code == 0 and "65 → drop CLS → 64 → pool:2 → 16 → mlp → 16 × 48" in out.replace("\n", " ")
    code, out, _ = run_main(capsys, "methods")
    assert code == 0 and "Gemma 3" in out and "LLaVA-OneVision's video pooling" in out
    code, out, _ = run_main(capsys, "models")
    assert code == 0 and "llava-1.5-7b" in out and "576 × 4096" in out and "internvl3-1b" in out

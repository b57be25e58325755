"""`tokcomp encode`: embeddings.npz (image_0, image_1, … in argument order) and layout.json, both or neither."""

from __future__ import annotations

import json

import numpy as np
import pytest
from runtime_helpers import photos
from vlm_helpers import run_main

pytest.importorskip("onnxruntime")


def test_encode_writes_npz_and_layout_in_argument_order(family_bundle, tmp_path, capsys):
    from tokcomp_edge.runtime import VisionRuntime

    _, _, bundle = family_bundle("internvl")
    images = [photos()[2], photos()[0], photos()[3]]
    out = tmp_path / "encoded"
    code, stdout, err = run_main(capsys, "encode", bundle, *images, "--out", out, "--json")
    assert code == 0, err
    doc = json.loads(stdout)
    assert sorted(p.name for p in out.iterdir()) == ["embeddings.npz", "layout.json"]
    assert json.loads((out / "layout.json").read_text())["images"] == doc["images"]
    with np.load(out / "embeddings.npz") as npz, VisionRuntime.open(bundle) as rt:
        assert sorted(npz.files) == ["image_0", "image_1", "image_2"]
        for i, path in enumerate(images):
            alone = rt.encode([path])
            np.testing.assert_allclose(npz[f"image_{i}"], alone.embeddings[0], rtol=0, atol=1e-5)
            item = doc["images"][i]
            assert item["file"] == str(path) and item["layout"] == alone.layout[0].to_dict()
            assert item["shape"] == list(alone.embeddings[0].shape) == [item["layout"]["tokens"], 48]
    assert doc["timings"]["images"] == 3 and doc["timings"]["inference_ms"] > 0
    assert "onnxruntime" in doc["backend"]
    # The plain output names the tokens per image; an existing folder is refused without --force.
    code, stdout, err = run_main(capsys, "encode", bundle, images[0], "--out", out)
    assert code == 2 and "already exists" in err
    code, stdout, err = run_main(capsys, "encode", bundle, images[0], "--out", out, "--force")
    assert code == 0 and "image_0" in stdout and "tokens" in stdout
    with np.load(out / "embeddings.npz") as npz:
        assert npz.files == ["image_0"]


@pytest.mark.parametrize("case", ["not-an-image", "missing", "variant", "engine", "static"])
def test_bad_input_is_one_line_exit_2_and_nothing_written(family_bundle, tmp_path, capsys, case):
    _, _, internvl = family_bundle("internvl")
    _, _, llava = family_bundle("llava")
    bundle, args = internvl, [photos()[0]]
    if case == "not-an-image":
        bad = tmp_path / "x.png"
        bad.write_bytes(b"\x89PNG not really")
        args = [photos()[0], bad]
    elif case == "missing":
        args = [tmp_path / "nowhere.jpg"]
    elif case == "variant":
        args += ["--variant", "int8"]
    elif case == "engine":
        from test_runtime_io import _fake_engine

        args += ["--engine", _fake_engine(llava, tmp_path / "eng")]
    elif case == "static":  # 3 one-tile images on a static batch-2 bundle
        bundle, args = family_bundle("llava", batch_min=2, batch_max=2)[2], photos()[:3]
    out = tmp_path / "encoded"
    code, stdout, err = run_main(capsys, "encode", bundle, *args, "--out", out)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".encoded")]


BLOCKER = """
import sys
for m in ("torch", "transformers", "timm", "modelopt", "onnxslim", "tensorrt"):
    sys.modules[m] = None  # importing them now raises ImportError
from tokcomp_edge.cli.app import main
main(sys.argv[1:])
"""


def test_encode_runs_where_torch_and_transformers_cannot_be_imported(family_bundle, tmp_path):
    """The Jetson path: ONNX Runtime (or TensorRT) and the core install, no PyTorch / transformers."""
    import subprocess
    import sys

    _, _, bundle = family_bundle("llava_onevision")
    out = tmp_path / "enc"
    res = subprocess.run([sys.executable, "-c", BLOCKER, "encode", str(bundle), str(photos()[0]), "--out", str(out),
                          "--json"], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    doc = json.loads(res.stdout)
    with np.load(out / "embeddings.npz") as npz:
        assert npz["image_0"].shape[0] == doc["images"][0]["layout"]["tokens"]
    assert doc["images"][0]["layout"]["newline_positions"]

"""`tokcomp sweep` end to end on a tiny LLaVA (few pairs), the bad inputs (one line, exit 2, nothing
written), the infeasible constraint (exit 1 naming the closest, files written) and Ctrl-C."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "vlm"))

from vlm_helpers import run_main  # noqa: E402

FAST = ["--answer-tokens", "5", "--latency", "pytorch", "--latency-runs", "3", "-q"]


def _sweep(capsys, folder, photos, prompts, out, *extra):
    return run_main(capsys, "sweep", f"hf:{folder}", "--images", photos, "--prompts", prompts, "--out", out,
                    *FAST, *extra)


def test_end_to_end_json(capsys, llava, photos, prompts, tmp_path):
    folder, _ = llava
    out = tmp_path / "sweep"
    rc, stdout, err = _sweep(capsys, folder, photos, prompts, out, "--candidates", "pool:2,prune:16:cls-attn,unshuffle:2",
                             "--tokens", "16", "--max-pairs", "3", "--json", "--answers")
    assert rc == 0, err
    d = json.loads(stdout)
    assert d == json.loads((out / "sweep.json").read_text())
    rows = {r["spec"]: r for r in d["candidates"]}
    assert list(rows) == ["none", "pool:2", "prune:16:cls-attn"]
    assert [r["spec"] for r in d["refused"]] == ["unshuffle:2"] and "channel" in d["refused"][0]["refused"]
    none = rows["none"]
    assert (none["top1"], none["kl"], none["match"]) == (1.0, 0.0, 1.0)
    assert none["top1_ci"] == [1.0, 1.0] and none["tokens"] == 64
    from tokcomp_edge.validation.economics import LlmShape, llm_saving

    llm = d["model"]["llm"]
    shape = LlmShape("x", llm["hidden"], llm["layers"], llm["mlp"], llm["heads"], llm["kv_heads"], llm["gated"])
    saving = llm_saving(shape, 64, 16, d["model"]["text_tokens_mean"])
    e = rows["pool:2"]["economics"]
    assert rows["pool:2"]["tokens"] == 16 and e["prefill_flops_saved"] == saving.flops_saved > 0
    assert e["kv_bytes_saved"] == saving.kv_cache_bytes_saved == 2 * 1 * (64 - 16) * 24 * 2  # K and V, 1 layer, d_kv 24, fp16
    assert d["pick"] in ("pool:2", "prune:16:cls-attn") and rows[d["pick"]]["tokens"] <= 16
    # Every pair carries its reference answer as token ids; the pooled top1 recomputes from the per-pair rows.
    assert len(d["pairs"]) == 3 and all(p["reference"] and all(isinstance(t, int) for t in p["reference"])
                                        for p in d["pairs"])
    for r in d["candidates"]:
        assert sum(x["positions"] for x in r["per_pair"]) == sum(len(p["reference"]) for p in d["pairs"])
        assert r["top1"] == sum(x["agree"] for x in r["per_pair"]) / sum(x["positions"] for x in r["per_pair"])
        # --answers: each candidate's own greedy answer; it equals the reference exactly on the matching pairs.
        assert [x["answer"] == p["reference"] for x, p in zip(r["per_pair"], d["pairs"])] == \
            [x["match"] for x in r["per_pair"]]
    assert "image-major" in " ".join(d["warnings"])  # 4 pairs, 3 used: said
    html = (out / "sweep.html").read_text()
    assert "<svg" in html and d["pick"] in html and "http://" not in html.replace("http://www.w3.org", "")
    assert [p.name for p in tmp_path.iterdir()] == ["sweep"]  # no temp folder left beside it


def test_table_and_infeasible_exit_1(capsys, llava, photos, prompts, tmp_path):
    folder, _ = llava
    out = tmp_path / "s"
    rc, stdout, err = _sweep(capsys, folder, photos, prompts, out, "--candidates", "pool:4", "--max-pairs", "2",
                             "--min-agreement", "1.5", "--llm-dtype", "bfloat16")
    assert rc == 1
    assert "closest is none" in err and len(err.strip().splitlines()) == 1
    assert "pool:4" in stdout and (out / "sweep.json").is_file() and (out / "sweep.html").is_file()
    d = json.loads((out / "sweep.json").read_text())
    assert d["pick"] is None and "1.5" in d["infeasible"]
    none = d["candidates"][0]
    assert d["model"]["llm_dtype"] == "bfloat16" and (none["top1"], none["kl"], none["match"]) == (1.0, 0.0, 1.0)


def test_listed_pairs(capsys, llava, photos, tmp_path):
    folder, _ = llava
    names = sorted(p.name for p in photos.iterdir())
    listing = tmp_path / "pairs.tsv"
    listing.write_text(f"# image<tab>question\n{names[1]}\thow many shapes are there ?\n"
                       f"{names[0]}\twhat colour is the shape ?\n{names[1]}\twhat colour is the shape ?\n")
    out = tmp_path / "s"
    rc, stdout, err = run_main(capsys, "sweep", f"hf:{folder}", "--images", photos, "--pairs", listing, "--out", out,
                               *FAST, "--candidates", "pool:2", "--json")
    assert rc == 0, err
    d = json.loads(stdout)
    assert [(Path(p["image"]).name, p["prompt"]) for p in d["pairs"]] == [
        (names[1], "how many shapes are there ?"), (names[0], "what colour is the shape ?"),
        (names[1], "what colour is the shape ?")]
    assert [p["prompt_index"] for p in d["pairs"]] == [0, 1, 1] and d["pick"] is None  # no constraint: no pick
    assert [x["pairs"] for x in d["candidates"][1]["per_prompt"]] == [1, 2]


def _no_llm_folder(src: Path, dest: Path) -> Path:
    import shutil

    from safetensors.torch import load_file, save_file

    dest.mkdir()
    for f in src.iterdir():
        if f.name != "model.safetensors":
            shutil.copy(f, dest / f.name)
    sd = load_file(src / "model.safetensors")
    save_file({k: v for k, v in sd.items() if "vision_tower" in k or "projector" in k}, dest / "model.safetensors")
    return dest


@pytest.mark.parametrize("case", ["no_images", "bad_images", "empty_prompts", "binary_prompts", "typo", "budget",
                                  "two_constraints", "no_llm", "family", "answer_tokens", "dtype", "no_tokenizer",
                                  "pairs_no_tab", "pairs_missing_image", "pairs_and_prompts"])
def test_bad_input_one_line_exit_2_nothing_written(capsys, llava, photos, prompts, tmp_path, case):
    folder, _ = llava
    imgs, prm, model, extra = photos, prompts, f"hf:{folder}", ["--candidates", "pool:2", "--tokens", "16"]
    if case == "no_images":
        imgs = tmp_path / "empty"
        imgs.mkdir()
    elif case == "bad_images":
        imgs = tmp_path / "broken"
        imgs.mkdir()
        (imgs / "a.jpg").write_bytes(b"not a jpeg at all")
    elif case == "empty_prompts":
        prm = tmp_path / "p.txt"
        prm.write_text("\n  \n")
    elif case == "binary_prompts":
        prm = tmp_path / "p.txt"
        prm.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe")
    elif case == "typo":
        extra = ["--candidates", "pool:2,prnue:16", "--tokens", "16"]
    elif case == "budget":
        extra = ["--tokens", "0"]
    elif case == "two_constraints":
        extra = ["--tokens", "16", "--min-agreement", "0.9"]
    elif case == "no_llm":
        model = f"hf:{_no_llm_folder(folder, tmp_path / 'vision-only')}"
    elif case == "family":  # a text-only LLM: no family whose image layout the sweep builds
        import transformers as T

        T.LlamaConfig(hidden_size=48, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                      vocab_size=300).save_pretrained(tmp_path / "llama")
        model = f"hf:{tmp_path / 'llama'}"
    elif case == "answer_tokens":
        extra = ["--answer-tokens", "0"]
    elif case == "dtype":
        extra = ["--llm-dtype", "int8"]
    elif case == "no_tokenizer":
        bare = tmp_path / "no-tokenizer"
        bare.mkdir()
        for name in ("config.json", "model.safetensors"):
            (bare / name).symlink_to(folder / name)
        model = f"hf:{bare}"
    elif case.startswith("pairs"):
        listing = tmp_path / "pairs.tsv"
        first = sorted(photos.iterdir())[0].name
        listing.write_text({"pairs_no_tab": f"{first} what colour ?\n", "pairs_missing_image": "nope.jpg\twhat ?\n",
                            "pairs_and_prompts": f"{first}\twhat ?\n"}[case])
        extra = ["--pairs", listing]
        prm = prm if case == "pairs_and_prompts" else None
    out = tmp_path / "out"
    rc, _, err = run_main(capsys, "sweep", model, "--images", imgs, *(["--prompts", prm] if prm else []),
                          "--out", out, "-q", "--latency", "none", *extra)
    assert rc == 2, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error:")
    want = {"no_images": "holds no", "bad_images": "no usable image", "empty_prompts": "holds no prompt",
            "binary_prompts": "not UTF-8 text", "typo": "prnue", "budget": "--tokens 0",
            "two_constraints": "both given", "no_llm": "no LLM tensors", "family": "'llama'",
            "answer_tokens": "--answer-tokens 0", "dtype": "int8", "no_tokenizer": "no usable tokenizer",
            "pairs_no_tab": "IMAGE<tab>PROMPT", "pairs_missing_image": "nope.jpg", "pairs_and_prompts": "both given"}[case]
    assert want in err
    assert not out.exists()


def test_ctrl_c_leaves_nothing(capsys, llava, photos, prompts, tmp_path, monkeypatch):
    from tokcomp_edge.sweep import run as run_mod

    calls = []

    def interrupted(*a, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a, **kw)

    real = run_mod.score
    monkeypatch.setattr(run_mod, "score", interrupted)
    out = tmp_path / "out"
    rc, _, _ = _sweep(capsys, llava[0], photos, prompts, out, "--candidates", "pool:2", "--tokens", "16")
    assert rc == 130 and len(calls) == 3
    assert list(tmp_path.iterdir()) == []
    # Interrupted while writing: the staged folder is removed too.
    monkeypatch.setattr(run_mod, "score", real)
    from tokcomp_edge.sweep import report

    monkeypatch.setattr(report, "render_html", lambda d: (_ for _ in ()).throw(KeyboardInterrupt()))
    rc, _, _ = _sweep(capsys, llava[0], photos, prompts, out, "--candidates", "pool:2", "--tokens", "16")
    assert rc == 130 and list(tmp_path.iterdir()) == []


def test_export_the_pick_and_onnxruntime_latency(capsys, llava, photos, prompts, tmp_path):
    folder, _ = llava
    out = tmp_path / "s"
    rc, stdout, err = run_main(capsys, "sweep", f"hf:{folder}", "--images", photos, "--prompts", prompts, "--out", out,
                               "--candidates", "pool:2", "--tokens", "16", "--max-pairs", "2", "--answer-tokens", "4",
                               "--latency-runs", "3", "--export", "-q")
    assert rc == 0, err
    d = json.loads((out / "sweep.json").read_text())
    assert d["pick"] == "pool:2" and d["latency"]["backend"] == "onnxruntime"
    assert all(r["latency_ms"] > 0 for r in d["candidates"])
    v = d["validation"]
    assert v["passed"] and (out / v["reports"]["html"]).is_file()
    assert v["reports"]["html"] in (out / "sweep.html").read_text()  # the sweep links the validation report
    manifest = json.loads((out / "bundle" / "manifest.json").read_text())
    assert manifest["compression"]["spec"] == "pool:2" and manifest["vlm"]["tokens_per_tile"] == 16
    # The device runtime's layout of the exported pick (runtime/layout.py, issue 18) has the placeholder count
    # the sweep measured with, and its ids are the sweep's image tokens.
    from PIL import Image

    from tokcomp_edge.runtime.layout import image_layout
    from tokcomp_edge.runtime.processor import ProcessorParams
    from tokcomp_edge.runtime.tiling import tile_image

    image = Image.open(sorted(photos.iterdir())[0]).convert("RGB")
    layout = image_layout(tile_image(image, ProcessorParams.from_manifest(manifest)), manifest)
    assert layout.tokens == d["candidates"][1]["tokens"] == 16
    if layout.token_ids is not None:
        assert layout.token_ids == [d["model"]["image_token_id"]] * 16


def test_without_torch_exit_3(tmp_path, llava, photos):
    """On a machine without PyTorch (a Jetson's core install) the sweep says which extra it needs."""
    import subprocess

    code = ("import sys; sys.modules['torch'] = None\nfrom tokcomp_edge.cli.app import main\n"
            f"main(['sweep', 'hf:{llava[0]}', '--images', '{photos}', '--tokens', '16', '--out', '{tmp_path / 'o'}'])")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 3 and "tokcomp-edge[export]" in res.stderr and not (tmp_path / "o").exists()

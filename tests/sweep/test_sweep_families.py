"""The sweep on every VLM family the export handles: its `none` reference IS the VLM's own computation.

Per family, a tiny random VLM folder (families_helpers.py) and a real photo: the sweep's tiles (the runtime's
tile_image), features (the candidate's vision path + the family's post-processing), prompt (the runtime's
layout spliced into the rendered template) and LLM call (M-RoPE positions from the layout's grid, Qwen3-VL's
DeepStack, Gemma 3 / PaliGemma token types) must give the logits that transformers' Processor → model gives
on the same image and text, at the prefill and at the cached decode steps. The placeholder count is the
candidate's, and equals the runtime layout's; a compressed candidate (pool:2) runs on its reduced grid.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from families_helpers import QWEN, at_tile, make_family  # noqa: E402

pytest.importorskip("transformers")

PHOTOS = Path(__file__).resolve().parents[1] / "calibration" / "photos"
PHOTO = PHOTOS / "chelsea-cat-300x200.jpg"  # landscape: InternVL, Idefics3 and OneVision cut several tiles
PROMPT = "hello the image"
TOL = 1e-4  # max |logit difference| between the sweep's path and the VLM's own forward
# Fast in `make test` (about a second each): all but the near-duplicates of a fast one (SmolVLM = Idefics3's
# layout, Qwen2-VL = Qwen2.5-VL's) and Qwen3.5.
FAST = ("internvl", "llava_onevision", "qwen2_5_vl", "idefics3", "gemma3", "paligemma", "qwen3_vl", "lfm2_vl")
ALL = ("internvl", "llava_onevision", "qwen2_5_vl", "idefics3", "smolvlm", "gemma3", "paligemma", "qwen2_vl",
       "qwen3_vl", "qwen3_5", "lfm2_vl")
FAMILIES = [f if f in FAST else pytest.param(f, marks=pytest.mark.slow) for f in ALL]


@pytest.fixture(scope="module")
def family_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep_families")
    cache: dict = {}

    def make(family: str):
        if family not in cache:
            cache[family] = make_family(family, root)
        return cache[family]

    return make


def _image(family: str, vlm):
    from tokcomp_edge.calibration.images import load_rgb

    image = load_rgb(PHOTO)
    return at_tile(image, tuple(vlm.tower.image_size), family) if family in QWEN or family == "lfm2_vl" else image


def _sweep_side(model_id: str, specs=("none", "pool:2")):
    """What run_sweep builds: the LLM, and per spec the candidate's encoder (vision path + post-processing)."""
    from tokcomp_edge.sweep.candidates import plan_candidate
    from tokcomp_edge.sweep.images import CandidateImages, onevision_newline, processor_params
    from tokcomp_edge.sweep.llm import load_language_model
    from tokcomp_edge.vlm import load_vlm, resolve_vlm
    from tokcomp_edge.vlm.path import vision_path

    lm = load_language_model(model_id)
    vlm = resolve_vlm(model_id)
    loaded = load_vlm(model_id)
    params = processor_params(vlm)
    newline = onevision_newline(vlm, model_id)
    cands = {s: plan_candidate(vlm, s) for s in specs}
    enc = {s: CandidateImages(vision_path(loaded.tower, c.plan, loaded.projector).eval(), c.plan, s, params, newline)
           for s, c in cands.items()}
    return lm, vlm, params, cands, enc


def _reference_logits(family, model, processor, lm, image, answer):
    """transformers' own logits: the Processor on the image and the rendered text, then model(**inputs) on the
    prompt followed by the answer tokens (no cache): row i predicts answer token i."""
    import torch

    # PaliGemmaProcessor builds its prefix itself (image tokens, bos, the prompt, a newline) around the prompt.
    text = f"<image>{PROMPT}" if family == "paligemma" else lm.render(PROMPT)
    inputs = dict(processor(images=[image], text=[text], return_tensors="pt"))
    inputs.pop("labels", None)
    ids = inputs["input_ids"][0].tolist()
    n = len(answer) - 1
    if n:
        more = torch.tensor([answer[:-1]])
        inputs["input_ids"] = torch.cat([inputs["input_ids"], more], 1)
        inputs["attention_mask"] = torch.cat([inputs["attention_mask"], torch.ones_like(more)], 1)
        for key in ("token_type_ids", "mm_token_type_ids"):
            if key in inputs:  # PaliGemma: the answer is the causal suffix (1); elsewhere text (0)
                fill = torch.ones_like(more) if family == "paligemma" else torch.zeros_like(more)
                inputs[key] = torch.cat([inputs[key], fill.to(inputs[key].dtype)], 1)
    with torch.no_grad():
        logits = model(**inputs).logits[0]
    return ids, logits[len(ids) - 1:].float()


@pytest.mark.parametrize("family", FAMILIES)
def test_sweep_reference_equals_the_vlm_forward_and_counts_follow_the_layout(family_folder, family):
    import torch

    from tokcomp_edge.sweep.fidelity import log_probs, score
    from tokcomp_edge.sweep.images import tile

    folder, model, processor = family_folder(family)
    lm, vlm, params, cands, enc = _sweep_side(f"hf:{folder}")
    image = _image(family, vlm)
    tiled = tile(image, params)
    ref = enc["none"].encode(tiled)
    ids = lm.prompt_ids(PROMPT, ref.layout)
    # Teacher-forced on three text tokens of the prompt (the random model's greedy answer may name an image
    # token, which the Processor's reference would count as a placeholder): prefill + two cached decode steps.
    forced = [t for t in ids if t != lm.image_token_id][-3:]
    _, logits = lm.steps(lm.inputs(ids, ref), 3, forced=forced)

    want_ids, want = _reference_logits(family, model, processor, lm, image, forced)
    assert ids == want_ids  # the layout spliced into the template = what the Processor inserts
    assert float(want.abs().max()) > 1e-2  # a (near) zero reference would prove nothing
    diff = float((logits - want).abs().max())  # prefill row and the cached decode rows
    print(f"{family}: tiles {tiled.tiles}, image tokens {ref.tokens}, max |logit diff| {diff:.2e}")
    assert diff < TOL, (family, diff)

    # The placeholder count: the candidate's tokens per tile × tiles (+ OneVision's packing), the layout's.
    none_c = cands["none"]
    assert ids.count(lm.image_token_id) == ref.tokens == ref.layout.tokens == ref.features.shape[0]
    if family != "llava_onevision":
        assert ref.tokens == none_c.tokens * tiled.tiles
    else:
        assert len(ref.layout.newline_positions) > 0 and ref.tokens > none_c.tokens * tiled.tiles - tiled.tiles * 64
    assert (family == "qwen3_vl") == bool(ref.deepstack)

    # none against itself: exactly 1 / 0 / match.
    tokens, logits = lm.steps(lm.inputs(ids, ref), 3)
    s = score(tokens, log_probs(logits), lm.steps(lm.inputs(ids, ref), 3, forced=tokens)[1])
    assert (s.agree, s.kl_sum, s.match) == (s.positions, 0.0, True)

    # pool:2: its own count in its own layout (Qwen: the reduced grid the LLM's M-RoPE reads).
    pool = cands["pool:2"]
    if pool.refused is None:
        x = enc["pool:2"].encode(tiled)
        pids = lm.prompt_ids(PROMPT, x.layout)
        assert pids.count(lm.image_token_id) == x.tokens == x.layout.tokens < ref.tokens
        if family != "llava_onevision":
            assert x.tokens == pool.tokens * tiled.tiles
        if family in QWEN:
            g = ref.layout.image_grid_thw
            assert x.layout.image_grid_thw == [1, g[1] // 2, g[2] // 2]
        _, cl = lm.steps(lm.inputs(pids, x), 3, forced=tokens)
        p = score(tokens, log_probs(logits), cl)
        assert torch.isfinite(cl).all() and p.kl_sum > 0 and 0 <= p.agree <= p.positions


@pytest.mark.parametrize("family", ["internvl", "qwen2_5_vl"])
def test_run_sweep_on_a_family_none_exact_and_per_pair_tiles(family_folder, family, tmp_path):
    """run_sweep end to end: `none` exactly 1 / 0 / 1, pool:2 finite with its own count; the per-pair tiles and
    image tokens recorded; the economics on the measured mean image tokens."""
    import json
    import math

    from tokcomp_edge.calibration.images import load_rgb
    from tokcomp_edge.sweep import SweepConfig, run_sweep
    from tokcomp_edge.vlm import resolve_vlm

    folder, _, _ = family_folder(family)
    vlm = resolve_vlm(f"hf:{folder}")
    images = tmp_path / "images"
    images.mkdir()
    for name in ("chelsea-cat-300x200.jpg", "camera-gray-180x180.jpg"):
        im = load_rgb(PHOTOS / name)
        (at_tile(im, tuple(vlm.tower.image_size), family) if family in QWEN else im).save(images / f"{name}.png")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(f"{PROMPT}\nhello image\n")
    res = run_sweep(SweepConfig(model=f"hf:{folder}", images=images, prompts=prompts, candidates="none,pool:2",
                                answer_tokens=3, max_pairs=3, out=tmp_path / "out", latency="none", quiet=True))
    d = json.loads((tmp_path / "out" / "sweep.json").read_text())
    rows = {r["spec"]: r for r in d["candidates"]}
    none, pool = rows["none"], rows["pool:2"]
    assert (none["top1"], none["kl"], none["match"]) == (1.0, 0.0, 1.0)
    assert all(math.isfinite(pool[k]) for k in ("top1", "kl", "match")) and pool["kl"] > 0
    tiles = d["model"]["tiles_per_pair"]
    assert len(tiles) == len(d["pairs"]) == 3 and d["model"]["tiles_per_image"] == round(sum(tiles) / 3, 3)
    if family == "internvl":
        assert max(tiles) > 1 and len(set(tiles)) > 1  # the two photos tile differently
    for row in (none, pool):
        assert [p["image_tokens"] for p in row["per_pair"]] == [row["tokens"] * t for t in tiles]
        assert row["economics"]["tokens_per_image"] == round(sum(row["tokens"] * t for t in tiles) / 3, 3)
    assert pool["economics"]["prefill_flops_saved"] > 0 == none["economics"]["prefill_flops_saved"]
    assert res.pairs[0]["reference"] == d["pairs"][0]["reference"]


def test_a_folder_of_no_sweep_family_is_one_line(tmp_path):
    import transformers as T

    from tokcomp_edge.errors import UnsupportedModelType
    from tokcomp_edge.sweep.llm import load_language_model

    T.LlamaConfig(hidden_size=48, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                  vocab_size=300).save_pretrained(tmp_path / "llama")
    with pytest.raises(UnsupportedModelType) as ex:
        load_language_model(f"hf:{tmp_path / 'llama'}")
    line = ex.value.one_line()
    assert "'llama'" in line and "qwen2_5_vl" in line and "\n" not in line


def test_cli_sweeps_a_tiling_family(family_folder, tmp_path, capsys):
    """`tokcomp sweep` on InternVL: exit 0, the JSON's per-pair tiles and the candidates' own counts."""
    import json
    import shutil

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "vlm"))
    from vlm_helpers import run_main

    folder, _, _ = family_folder("internvl")
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(PHOTO, images / PHOTO.name)
    rc, out, err = run_main(capsys, "sweep", f"hf:{folder}", "--images", images, "--candidates", "none,pool:2",
                            "--latency", "none", "--answer-tokens", "2", "--max-pairs", "1", "--json", "-q",
                            "--out", tmp_path / "out")
    assert rc == 0, err
    d = json.loads(out)
    tiles = d["model"]["tiles_per_pair"]
    assert d["model"]["family"] == "internvl" and tiles[0] > 1
    rows = {r["spec"]: r for r in d["candidates"]}
    assert rows["none"]["per_pair"][0]["image_tokens"] == 4 * rows["pool:2"]["per_pair"][0]["image_tokens"]
    assert rows["none"]["per_pair"][0]["image_tokens"] == rows["none"]["tokens"] * tiles[0]

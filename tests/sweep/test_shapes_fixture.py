"""The trained shapes VLM (benchmarks/shapes_vlm.py): the committed checkpoint is this code's, loads as a
real LLaVA folder, answers held-out questions well above chance, loses accuracy under 2×2 pooling, trains
reproducibly, and `tokcomp export hf:` takes it."""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pytest

from benchmarks import shapes_data as D
from benchmarks import shapes_model as M
from benchmarks import shapes_vlm as V


@pytest.fixture(scope="module")
def trained():
    return V.load(V.fixture_path(train=False))


def test_committed_fixture_is_this_code():
    """The committed folder carries this code's key (edit the recipe → retrain and recommit), and its
    weights are the ones it recorded."""
    folder = V.fixture_path(train=False)
    assert folder == V.COMMITTED
    info = json.loads((folder / V.PROVENANCE).read_text())
    assert info["key"] == V.cache_key()
    assert hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest() == info["sha256"]
    # issue 19 asks for >= 0.9 on held-out generated images (chance is about 0.35): see shapes_vlm.py
    assert info["heldout"]["accuracy"] >= 0.9 and info["heldout"]["total"] == 200
    assert all(k["accuracy"] >= 0.45 for k in info["heldout"]["by_kind"].values()), info["heldout"]["by_kind"]
    # the compressions it records tell the methods apart: each costs accuracy
    cmp = info["compare"]
    assert cmp["none"]["accuracy"] == info["heldout"]["accuracy"]
    assert all(cmp[m]["accuracy"] <= cmp["none"]["accuracy"] - 0.2 for m in ("pool:2", "pool:4", "prune:16"))


def test_loads_like_a_checkpoint(trained):
    model, processor = trained
    tok = processor.tokenizer
    assert type(model).__name__ == "LlavaForConditionalGeneration"
    assert tok.convert_tokens_to_ids("<image>") == model.config.image_token_index
    assert model.config.vision_feature_layer == -2 and model.config.vision_feature_select_strategy == "default"
    item = V.heldout(1)[0]
    enc = processor(images=[item.image], text=[V.prompt(processor, item.question)], return_tensors="pt")
    # the processor's prompt is the one trained on, and its pixels are the training pixels
    assert enc["input_ids"][0].tolist() == M.prompt_ids(item.question)
    assert (enc["input_ids"] == model.config.image_token_index).sum() == M.GRID * M.GRID
    px = M.pixels(np.asarray(item.image)[None])
    assert float((enc["pixel_values"] - px).abs().max()) < 1e-6


def test_generator_is_deterministic_and_splits_are_disjoint():
    a, b = D.scenes(3, D.TRAIN, 40), D.scenes(3, D.TRAIN, 40)
    assert a == b
    assert all(np.array_equal(D.render(x), D.render(y)) for x, y in zip(a, b))
    assert D.scenes(4, D.TRAIN, 40) != a
    h1 = [(it.question, it.answer, it.image.tobytes()) for it in V.heldout(30)]
    h2 = [(it.question, it.answer, it.image.tobytes()) for it in V.heldout(30)]
    assert h1 == h2
    train = {D.render(s).tobytes() for s in D.scenes(0, D.TRAIN, 3000)}
    assert not train & {img for _, _, img in h1}
    assert [it.kind for it in V.heldout(14)] == list(D.QUESTION_TYPES) * 2  # balanced, types in turn


def test_answers_are_ground_truth():
    """Every answer is read off the scene: a hand-built scene and what each question must say."""
    scene = D.Scene((D.Shape("circle", "red", "big", 12, 30), D.Shape("square", "red", "small", 50, 10)),
                    "plus", (40, 50), 40, 1)
    qs = {q.text: q.answer for qq in D.questions(scene).values() for q in qq}
    assert qs["what colour is the circle ?"] == "red"
    assert qs["which shape is on the left ?"] == "circle" and qs["which shape is on the top ?"] == "square"
    assert qs["how many shapes are there ?"] == "two" and qs["how many red shapes are there ?"] == "two"
    assert qs["which mark is there ?"] == "plus" and qs["is the square big or small ?"] == "small"
    assert qs["is the circle on the left or the right ?"] == "left"
    img = D.render(scene)
    assert tuple(img[30, 12]) == D.COLOURS["red"] and tuple(img[52, 42]) == (255, 255, 255)


def test_patch_labels_tie_each_shape_to_its_answers():
    """The auxiliary labels on a hand-built scene: each shape's patches carry its kind × colour, its side and,
    per side, whether it is the shape farthest that way — the answers the questions about it read."""
    scene = D.Scene((D.Shape("circle", "red", "big", 12, 30), D.Shape("square", "blue", "small", 50, 10)),
                    "none", (0, 0), 40, 1)
    lab = M.patch_labels(scene)
    col = {name: j for j, name in enumerate(M.HEADS)}
    assert lab.shape == (M.GRID * M.GRID, len(M.HEADS))
    circle = lab[:, col["kind"]] == D.KINDS.index("circle") + 1
    square = lab[:, col["kind"]] == D.KINDS.index("square") + 1
    assert circle.sum() > square.sum() > 0 and not lab[~(circle | square), col["kind_colour"]:].any()
    n = len(D.COLOURS)
    assert set(lab[circle, col["kind_colour"]]) == {0 * n + list(D.COLOURS).index("red") + 1}
    assert set(lab[square, col["kind_colour"]]) == {1 * n + list(D.COLOURS).index("blue") + 1}
    assert set(lab[circle, col["kind_side"]]) == {1} and set(lab[square, col["kind_side"]]) == {2 * 1 + 1 + 1}
    c, q = D.KINDS.index("circle") + 1, D.KINDS.index("square") + 1
    for side, kind, mask in (("left", c, circle), ("bottom", c, circle), ("right", q, square), ("top", q, square)):
        assert set(lab[mask, col[f"extreme_{side}"]]) == {kind} and not lab[~mask, col[f"extreme_{side}"]].any()
    # an ambiguous side (centres 5 px apart vertically): no shape is farthest that way
    near = D.Scene((D.Shape("circle", "red", "small", 12, 30), D.Shape("square", "blue", "small", 50, 35)),
                   "none", (0, 0), 40, 1)
    lab = M.patch_labels(near)
    assert not lab[:, col["extreme_top"]].any() and not lab[:, col["extreme_bottom"]].any()
    assert lab[:, col["extreme_left"]].any()


def test_accuracy_scorer():
    items = V.heldout(3)
    right = [it.answer for it in items]
    assert V.accuracy(right, items).value == 1.0
    assert V.accuracy([" " + right[0].upper() + " ", "nonsense", right[2]], items).correct == 2
    with pytest.raises(ValueError):
        V.accuracy(right[:2], items)


def test_heldout_accuracy_and_pooling_costs(trained):
    """Well above chance uncompressed (greedy, ground truth; ≥ 85 % on these 140, chance ≈ 35 %); 2×2
    average pooling of the tower's grid before the projector (16 tokens spliced instead of 64) costs at
    least 10 points."""
    import torch

    model, processor = trained
    items = V.heldout(140)
    answers = V.answer(model, processor, items)
    full = V.accuracy(answers, items)
    assert full.value >= 0.85, full.to_dict()
    px = processor(images=[it.image for it in items], return_tensors="pt")["pixel_values"]
    feats = V.selected_features(model, px)
    grid = feats.transpose(1, 2).reshape(len(items), -1, M.GRID, M.GRID)
    pooled = torch.nn.functional.avg_pool2d(grid, 2).flatten(2).transpose(1, 2)
    # the splice itself (one item at a time, no padding) answers what batched generate answers
    assert V.answer_with_features(model, processor, items, feats) == answers
    pool = V.accuracy(V.answer_with_features(model, processor, items, pooled), items)
    assert pool.value <= full.value - 0.10, (full.value, pool.value)


def test_short_training_is_reproducible(tmp_path):
    """Two short trainings from the same seed are equal bit for bit, a later stage from the saved first one
    too (the full recipe is the slow test below), and torch's process-wide settings come back as they were."""
    import torch

    before = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    recipe = M.Recipe(train_scenes=24, steps=3, batch=4, turns=2, warmup=2)
    a, la = V.train(recipe, log=None)
    b, lb = V.train(recipe, log=None)
    assert (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()) == before
    assert la == lb and la[0] != la[-1]
    sa, sb = a.state_dict(), b.state_dict()
    assert all(bool((sa[k] == sb[k]).all()) for k in sa)
    M.save(a, tmp_path / "stage1")
    later = M.Recipe(seed=1, train_scenes=24, steps=2, batch=4, turns=2, warmup=1, heads=tuple(M.HEADS))
    c, lc = V.train(later, start=tmp_path / "stage1", log=None)
    d, ld = V.train(later, start=tmp_path / "stage1", log=None)
    assert lc == ld
    sc, sd = c.state_dict(), d.state_dict()
    assert all(bool((sc[k] == sd[k]).all()) for k in sc)
    assert not all(bool((sc[k] == sa[k]).all()) for k in sa)  # it did train on from stage 1


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("TOKCOMP_SHAPES_RETRAIN"),
                    reason="the full training takes minutes: set TOKCOMP_SHAPES_RETRAIN=1 to run it")
def test_full_training_reproduces_the_committed_weights(tmp_path):
    info = V.build(tmp_path / "shapes-vlm", log=None)
    assert info["sha256"] == json.loads((V.COMMITTED / V.PROVENANCE).read_text())["sha256"]


def test_tokcomp_exports_the_fixture(tmp_path, capsys):
    from tests.vlm.vlm_helpers import run_main

    code, out, err = run_main(capsys, "export", f"hf:{V.fixture_path(train=False)}", "--out", tmp_path / "b")
    assert code == 0, err
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["compression"]["tokens_out"] == M.GRID * M.GRID


def test_sweep_inputs(tmp_path):
    """The images folder, prompts file and truth table the sweep's bench reads: PNGs equal to the renders,
    the truth of each pair read off the scene."""
    from PIL import Image

    got = V.write_sweep_inputs(tmp_path, n=6)
    names = sorted(p.name for p in got["images"].iterdir())
    assert names == [f"{i:03d}.png" for i in range(6)]
    assert got["prompts"].read_text().splitlines() == list(V.SWEEP_PROMPTS)
    scenes = D.scenes(0, D.HELDOUT, 6)
    for name, scene in zip(names, scenes):
        assert np.array_equal(np.asarray(Image.open(got["images"] / name)), D.render(scene))
        assert got["truth"][name]["how many shapes are there ?"] == D.NUMBERS[len(scene.shapes)]
        assert got["truth"][name]["which mark is there ?"] == scene.mark
    assert json.loads((tmp_path / "truth.json").read_text()) == got["truth"]

"""The metric definitions against an independent computation on a tiny LLaVA: transformers' own processor,
generate and forward (full sequence, no KV cache, its own placeholder splice) recomputed by hand in numpy;
`none` is exact; match equals the candidate's own greedy answer; the placeholder count is the candidate's."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tokcomp_edge.calibration.images import load_images
from tokcomp_edge.image_policy import policy_for_spec
from tokcomp_edge.sweep.candidates import candidate_grid, plan_candidate
from tokcomp_edge.sweep.fidelity import PairScore, features, log_probs, score, summarise
from tokcomp_edge.sweep.llm import load_language_model
from tokcomp_edge.vlm import load_vlm
from tokcomp_edge.vlm.path import vision_path

K = 6
PROMPT = "what colour is the shape ?"


@pytest.fixture(scope="module")
def setup(llava, photos):
    folder, _ = llava
    lm = load_language_model(f"hf:{folder}")
    loaded = load_vlm(f"hf:{folder}")
    files = sorted(photos.iterdir())
    x = torch.from_numpy(load_images(files, policy_for_spec(loaded.spec.tower, "llava")).pixel_values)
    return folder, lm, loaded, files, x


def _path(loaded, spec):
    c = plan_candidate(loaded.spec, spec)
    return c, vision_path(loaded.tower, c.plan, loaded.projector).eval()


def _softmax64(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - logits.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize("spec", ["pool:2", "prune:16:cls-attn"])
def test_top1_and_kl_against_transformers_by_hand(setup, spec):
    import transformers

    folder, lm, loaded, files, x = setup
    _, none = _path(loaded, "none")
    cand, path = _path(loaded, spec)
    f_none, f_cand = features(none, x[:1]), features(path, x[:1])
    ref_ids = lm.prompt_ids(PROMPT, f_none.shape[0])
    tokens, ref_logits = lm.steps(lm.embeds(ref_ids, f_none), K)
    cand_ids = lm.prompt_ids(PROMPT, f_cand.shape[0])
    _, cand_logits = lm.steps(lm.embeds(cand_ids, f_cand), K, forced=tokens)
    ours = score(tokens, log_probs(ref_logits), cand_logits)

    # transformers alone: its processor's input_ids and pixels, its generate, its forward with pixel_values.
    model = transformers.LlavaForConditionalGeneration.from_pretrained(folder).eval()
    proc = transformers.AutoProcessor.from_pretrained(folder)
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": PROMPT}]}]
    enc = proc(images=Image.open(files[0]).convert("RGB"), text=proc.apply_chat_template(
        msgs, add_generation_prompt=True, tokenize=False), return_tensors="pt")
    assert enc["input_ids"][0].tolist() == ref_ids  # our layout is the processor's at 64 tokens
    with torch.no_grad():
        gen = model.generate(**enc, max_new_tokens=K, do_sample=False)[0, len(ref_ids):].tolist()
        assert gen == tokens  # the reference answer is transformers' greedy answer
        full = torch.tensor([ref_ids + tokens])
        ref_hf = model(input_ids=full, pixel_values=enc["pixel_values"]).logits[0].numpy()
        # The candidate: its features spliced the way LlavaModel.forward does (get_placeholder_mask, masked_scatter).
        ids_c = torch.tensor([cand_ids + tokens])
        emb = model.get_input_embeddings()(ids_c)
        mask = model.model.get_placeholder_mask(ids_c, inputs_embeds=emb, image_features=f_cand[None])
        emb = emb.masked_scatter(mask, f_cand[None].to(emb.dtype))
        cand_hf = model(inputs_embeds=emb).logits[0].numpy()
    n = len(tokens)
    p_ref = _softmax64(ref_hf[len(ref_ids) - 1:len(ref_ids) - 1 + n])
    p_c = _softmax64(cand_hf[len(cand_ids) - 1:len(cand_ids) - 1 + n])
    agree = int((cand_hf[len(cand_ids) - 1:len(cand_ids) - 1 + n].argmax(-1) == np.array(tokens)).sum())
    kl = float((p_ref * (np.log(p_ref) - np.log(p_c))).sum(-1).sum())
    assert ours.positions == n and ours.agree == agree
    assert ours.kl_sum > 0 and abs(ours.kl_sum - kl) <= 1e-6 + 1e-3 * kl


def test_none_is_exact(setup):
    _, lm, loaded, _, x = setup
    _, ref_path = _path(loaded, "none")
    _, none = _path(loaded, "none")  # a separate module, as the sweep builds one per candidate
    for i in range(len(x)):
        f_ref, f = features(ref_path, x[i:i + 1]), features(none, x[i:i + 1])
        tokens, logits = lm.steps(lm.embeds(lm.prompt_ids(PROMPT, f_ref.shape[0]), f_ref), K)
        _, cl = lm.steps(lm.embeds(lm.prompt_ids(PROMPT, f.shape[0]), f), K, forced=tokens)
        s = score(tokens, log_probs(logits), cl)
        assert s.agree == s.positions and s.kl_sum == 0.0 and s.match


def test_match_is_the_candidates_own_greedy_answer(setup):
    _, lm, loaded, _, x = setup
    _, none = _path(loaded, "none")
    seen = set()
    for spec in ("pool:2", "prune:8:norm", "bilinear:7x7"):
        _, path = _path(loaded, spec)
        for i in range(len(x)):
            for prompt in (PROMPT, "how many shapes are there ?"):
                f_ref, f = features(none, x[i:i + 1]), features(path, x[i:i + 1])
                tokens, logits = lm.steps(lm.embeds(lm.prompt_ids(prompt, f_ref.shape[0]), f_ref), K)
                emb = lm.embeds(lm.prompt_ids(prompt, f.shape[0]), f)
                s = score(tokens, log_probs(logits), lm.steps(emb, K, forced=tokens)[1])
                own, _ = lm.steps(emb, K)
                assert s.match == (own == tokens)
                seen.add(s.match)
    assert seen == {True, False}  # both outcomes were exercised


def test_placeholder_count_is_the_candidates_tokens(setup):
    _, lm, loaded, _, x = setup
    for c in candidate_grid(loaded.spec):
        if c.refused:
            continue
        f = features(vision_path(loaded.tower, c.plan, loaded.projector).eval(), x[:1])
        ids = lm.prompt_ids(PROMPT, f.shape[0])
        assert f.shape[0] == c.tokens == ids.count(lm.image_token_id), c.spec
        assert lm.embeds(ids, f).shape[1] == len(ids)


def test_bootstrap_is_seeded_and_holds_the_point():
    rng = np.random.default_rng(3)
    scores = [PairScore(positions=6, agree=int(a), kl_sum=float(k), argmax=[]) for a, k in
              zip(rng.integers(0, 7, 20), rng.uniform(0, 1, 20))]
    a, b = summarise(scores, seed=1), summarise(scores, seed=1)
    assert a == b
    assert a["top1"] == sum(s.agree for s in scores) / 120
    assert a["top1_ci"][0] <= a["top1"] <= a["top1_ci"][1] and a["top1_ci"][0] < a["top1_ci"][1]
    assert a["match"] == sum(s.agree == 6 for s in scores) / 20
    assert summarise(scores, seed=2)["top1_ci"] != a["top1_ci"]

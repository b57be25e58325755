"""The trained shapes VLM: a LLaVA-1.5-shaped checkpoint (CLIP tower → Linear–GELU–Linear → Llama) small
enough to train on a CPU, and the recipe that trains it (benchmarks/shapes_vlm.py runs it).

- tower: CLIP ViT, 64 px, patch 8 → an 8×8 grid (64 patch tokens + CLS), 4 blocks, width 64; LLaVA reads
  hidden_states[-2] with the CLS dropped (vision_feature_layer −2, strategy `default`), so the last block
  is never trained (as in LLaVA, whose CLIP's last block is unused);
- LLM: Llama, 2 layers, width 128, over a word-level vocabulary (specials + shapes_data.words() + the chat
  words);
- the folder holds what a real checkpoint holds: config.json + model.safetensors, a fast tokenizer whose
  `<image>` id is config.image_token_index, a CLIPImageProcessor at 64 px and a LlavaProcessor with a
  LLaVA-1.5-style chat template (`USER: <image>\\n… ASSISTANT:`).

Training (`train`, one loop, one stage): end to end, every parameter, AdamW with a warm-up and a cosine to
zero; the loss is the answer tokens' cross-entropy (the answer word and `</s>`) plus an auxiliary per-patch
classification of the tower's selected features (HEADS: the colour, kind and mark under each patch, whether
a shape's centre is in it, and joint labels that tie each shape's patches to what is asked about it: kind ×
colour, kind × side, and the kind of the shape farthest to each side; heads thrown away after training).
The auxiliary loss teaches the tower where things are, patch by patch, so the image tokens carry spatial
detail (which is what compression then costs). Each training sequence asks several questions about its
image in turn (the first turn is exactly the single-question prompt). Seeded, single-process, one thread:
the same seed on the same machine gives the same weights, bit for bit (checked for short runs; the figures
of the committed recipe are in benchmarks/fixtures/shapes-vlm/shapes_vlm.json).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import shapes_data as D

SPECIALS = ("<pad>", "<unk>", "</s>", "<image>")
CHAT = ("USER", "ASSISTANT")
PATCH = 8
GRID = D.SIZE // PATCH
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] != 'system' %}{{ message['role'].upper() + ': ' }}{% endif %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] + ' ' }}{% endfor %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)


@dataclass(frozen=True)
class Recipe:
    """What the trained weights depend on (besides the code): the fixture's cache key includes it."""

    seed: int = 0
    train_scenes: int = 16000
    steps: int = 4000
    batch: int = 16
    turns: int = 6
    lr: float = 1.5e-3
    warmup: int = 60
    aux_weight: float = 1.0
    # The auxiliary heads trained (names of HEADS, in this order: the order their weights are drawn in).
    heads: tuple[str, ...] = ("colour", "kind", "mark", "centre", "column", "row")
    # One thread: the sums inside each op are then split the same way on every machine, and on a shared
    # 2-core machine one thread was faster than two.
    threads: int = 1


def vocabulary() -> list[str]:
    return list(SPECIALS) + list(CHAT) + D.words()


def build_tokenizer():
    """A word-level fast tokenizer: specials first (ids 0–3), then the words."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(vocabulary())}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", eos_token="</s>",
                                   extra_special_tokens={"image_token": "<image>"}, padding_side="left",
                                   model_input_names=["input_ids", "attention_mask"])


def build_config():
    from transformers import LlavaConfig

    vocab = vocabulary()
    ids = {w: i for i, w in enumerate(vocab)}
    vision = dict(model_type="clip_vision_model", hidden_size=64, num_hidden_layers=4, num_attention_heads=4,
                  intermediate_size=256, patch_size=PATCH, image_size=D.SIZE, projection_dim=64)
    text = dict(model_type="llama", hidden_size=128, num_hidden_layers=2, num_attention_heads=8,
                num_key_value_heads=8, intermediate_size=256, vocab_size=len(vocab), max_position_embeddings=256,
                pad_token_id=ids["<pad>"], eos_token_id=ids["</s>"], bos_token_id=None, tie_word_embeddings=False,
                # transformers' 0.02 leaves a 128-wide model's attention logits near zero (uniform attention,
                # slow to learn where to look); ~1/sqrt(width) learns to read the image tokens much sooner
                initializer_range=0.07)
    return LlavaConfig(vision_config=vision, text_config=text, image_token_index=ids["<image>"],
                       vision_feature_layer=-2, vision_feature_select_strategy="default",
                       projector_hidden_act="gelu", image_seq_length=GRID * GRID)


def build_processor():
    from transformers import CLIPImageProcessor, LlavaProcessor

    image = CLIPImageProcessor(size={"shortest_edge": D.SIZE}, crop_size={"height": D.SIZE, "width": D.SIZE},
                               image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD))
    return LlavaProcessor(image_processor=image, tokenizer=build_tokenizer(), patch_size=PATCH,
                          vision_feature_select_strategy="default", num_additional_image_tokens=1,
                          chat_template=CHAT_TEMPLATE)


def pixels(images: np.ndarray):
    """uint8 [B, H, W, 3] → the normalised float tensor [B, 3, H, W] CLIPImageProcessor makes of them."""
    import torch

    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def prompt_ids(question: str) -> list[int]:
    """The ids the processor makes of the chat template's prompt for `question` (tested equal)."""
    ids = {w: i for i, w in enumerate(vocabulary())}
    words = ["USER", ":"] + ["<image>"] * (GRID * GRID) + question.split() + ["ASSISTANT", ":"]
    return [ids[w] for w in words]


def follow_up_ids(question: str) -> list[int]:
    """A later turn of the conversation: `USER : question ASSISTANT :` (no image)."""
    ids = {w: i for i, w in enumerate(vocabulary())}
    return [ids[w] for w in ["USER", ":"] + question.split() + ["ASSISTANT", ":"]]


def answer_ids(answer: str) -> list[int]:
    ids = {w: i for i, w in enumerate(vocabulary())}
    return [ids[answer], ids["</s>"]]


# The auxiliary per-patch heads, by name → number of classes (0 = none of it under the patch). The joint
# labels (kind × colour, kind × side, kind of the shape farthest to each side) put on the patches of a
# shape what a question about that shape reads off it: with them the answer is a bag-of-patches readout
# for the LLM; with kind and colour labelled apart (the first recipe) the 2-layer LLM mixed up which colour
# or side went with which shape (colour 0.72, side 0.75) and never learnt the farthest shape (0.21).
HEADS = {"colour": len(D.COLOURS) + 1, "kind": len(D.KINDS) + 1, "mark": len(D.MARKS) + 1, "centre": 2,
         "column": GRID, "row": GRID, "kind_colour": len(D.KINDS) * len(D.COLOURS) + 1, "kind_side": len(D.KINDS) * 2 + 1,
         **{f"extreme_{side}": len(D.KINDS) + 1 for side in D.SIDES}}


def patch_labels(scene: D.Scene) -> np.ndarray:
    """[GRID*GRID, len(HEADS)] int, per patch: the colour (0 = none, 1–6) and kind (0 = none, 1–3) that
    cover at least 4 of its 64 pixels (the largest such when several do), the mark (0–3) with a pixel in
    it, whether a shape's centre lies in it (0/1), its column and row; then for the shape of that kind: its kind and colour
    jointly, its kind and side (left/right of the middle, 0 when it is within 6 px of it, as the side
    question), and per side (left, right, top, bottom) its kind when it is the shape farthest that way
    (0 when it is not, or when the position question has no answer)."""
    colour = np.zeros((D.SIZE, D.SIZE), np.int64)
    kind = np.zeros((D.SIZE, D.SIZE), np.int64)
    mark = np.zeros((D.SIZE, D.SIZE), np.int64)
    names = list(D.COLOURS)
    for s in scene.shapes:
        m = D._shape_mask(s)
        colour[m] = names.index(s.colour) + 1
        kind[m] = D.KINDS.index(s.kind) + 1
    if scene.mark != "none":
        x, y = scene.mark_xy
        mark[y:y + D.MARK_SIZE, x:x + D.MARK_SIZE][D._GLYPHS[scene.mark]] = D.MARKS.index(scene.mark) + 1
    out = np.zeros((GRID * GRID, len(HEADS)), np.int64)
    for j, plane in enumerate((colour, kind, mark)):
        blocks = plane.reshape(GRID, PATCH, GRID, PATCH).transpose(0, 2, 1, 3).reshape(GRID * GRID, -1)
        counts = (blocks[:, :, None] == np.arange(1, 8)[None, None, :]).sum(axis=1)  # [patches, class 1..7]
        best = counts.argmax(axis=1)
        enough = counts.max(axis=1) >= (1 if j == 2 else 4)  # any pixel of the mark counts
        out[:, j] = np.where(enough, best + 1, 0)
    for s in scene.shapes:  # the patch holding each shape's centre: what counting reads
        out[(s.cy // PATCH) * GRID + s.cx // PATCH, 3] = 1
    out[:, 4] = np.arange(GRID * GRID) % GRID  # the patch's column and row
    out[:, 5] = np.arange(GRID * GRID) // GRID
    by_kind = {D.KINDS.index(s.kind) + 1: s for s in scene.shapes}  # kinds are distinct within a scene
    extremes = [D._extreme(scene.shapes, side) for side in D.SIDES]
    for p in range(GRID * GRID):
        k = int(out[p, 1])
        if k == 0:
            continue
        s = by_kind.get(k)
        if s is None:  # the patch's majority kind label is of a shape the scene lacks: cannot happen
            continue
        out[p, 6] = (k - 1) * len(names) + names.index(s.colour) + 1
        if abs(s.cx - D.SIZE // 2) >= 6:
            out[p, 7] = (k - 1) * 2 + (s.cx >= D.SIZE // 2) + 1
        for j, e in enumerate(extremes):
            out[p, 8 + j] = k if e is s else 0
    return out


class TrainSet:
    """The training scenes rendered once, with their questions and patch labels; batches drawn by a seeded
    generator: a question type uniformly, then a question of that type."""

    def __init__(self, recipe: Recipe):
        scenes = D.scenes(recipe.seed, D.TRAIN, recipe.train_scenes)
        self.images = np.stack([D.render(s) for s in scenes])
        self.labels = np.stack([patch_labels(s) for s in scenes])
        self.questions = [D.questions(s) for s in scenes]
        self.rng = np.random.default_rng([recipe.seed, D.TRAIN, 1])
        self.batch = recipe.batch
        self.turns = recipe.turns

    def draw(self):
        """One batch: per image a conversation of up to `turns` questions of different types, each answered
        (`answer </s>`) before the next `USER :` turn. The first turn is exactly the single-question prompt,
        and causal attention keeps its answer blind to what follows, so the later turns add supervision
        (several answers per image forward) without changing what the first one learns."""
        import torch

        idx = self.rng.integers(len(self.images), size=self.batch)
        seqs, targets = [], []
        for i in idx:
            qs = self.questions[int(i)]
            kinds = [k for k in D.QUESTION_TYPES if qs[k]]
            order = self.rng.permutation(len(kinds))[:self.turns]
            seq, tgt = [], []
            for t, k in enumerate(order):
                options = qs[kinds[int(k)]]
                q = options[int(self.rng.integers(len(options)))]
                p = prompt_ids(q.text) if t == 0 else follow_up_ids(q.text)
                a = answer_ids(q.answer)
                seq += p + a
                tgt += [-100] * len(p) + a
            seqs.append(seq)
            targets.append(tgt)
        width = max(len(s) for s in seqs)
        ids = torch.zeros(len(seqs), width, dtype=torch.long)
        labels = torch.full((len(seqs), width), -100, dtype=torch.long)
        mask = torch.zeros(len(seqs), width, dtype=torch.long)
        for r, (s, t) in enumerate(zip(seqs, targets)):
            ids[r, :len(s)] = torch.tensor(s)
            labels[r, :len(t)] = torch.tensor(t)
            mask[r, :len(s)] = 1
        return (pixels(self.images[idx]), ids, mask, labels, torch.from_numpy(self.labels[idx]))


def train(recipe: Recipe, start: Path | None = None, log=print):
    """Train the VLM from its seed (`start` None) or go on training the checkpoint folder `start` (a later
    stage: new auxiliary heads, a new AdamW with its own warm-up and cosine, the training scenes of this
    recipe's seed); returns the model (eval mode) and the per-step losses."""
    import torch
    from transformers import LlavaForConditionalGeneration

    torch.set_num_threads(recipe.threads)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(recipe.seed)
    # eager attention: on CPU at these sizes transformers' sdpa path is several times slower
    if start is None:
        model = LlavaForConditionalGeneration._from_config(build_config(), attn_implementation="eager")
    else:
        model = LlavaForConditionalGeneration.from_pretrained(start, attn_implementation="eager")
    width = model.config.vision_config.hidden_size
    names = list(HEADS)
    columns = [names.index(h) for h in recipe.heads]
    heads = torch.nn.ModuleList([torch.nn.Linear(width, HEADS[h]) for h in recipe.heads])
    data = TrainSet(recipe)
    params = list(model.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=0.01, betas=(0.9, 0.98))

    def lr_at(step: int) -> float:
        if step < recipe.warmup:
            return (step + 1) / recipe.warmup
        t = (step - recipe.warmup) / max(1, recipe.steps - recipe.warmup)
        return 0.5 * (1 + math.cos(math.pi * t))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    model.train()
    losses = []
    t0 = time.perf_counter()
    for step in range(recipe.steps):
        px, ids, mask, labels, plabels = data.draw()
        answer_loss, feats = forward_loss(model, px, ids, mask, labels)
        patches = feats[:, 1:]  # the CLS is dropped, as the projector sees them
        aux = sum(torch.nn.functional.cross_entropy(h(patches).flatten(0, 1), plabels[..., j].flatten())
                  for j, h in zip(columns, heads))
        loss = answer_loss + recipe.aux_weight * aux
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append((float(answer_loss.detach()), float(aux.detach())))
        if log and (step % 200 == 0 or step == recipe.steps - 1):
            log(f"step {step:5d}  answer {losses[-1][0]:.4f}  patches {losses[-1][1]:.4f}  "
                f"{time.perf_counter() - t0:6.1f} s")
    model.eval()
    return model, losses


def forward_loss(model, px, ids, mask, labels):
    """LlavaForConditionalGeneration's own forward on the batch, the tower's selected features kept for the
    auxiliary loss (a forward hook on the tower; nothing is recomputed)."""
    seen = {}
    hook = model.model.vision_tower.register_forward_hook(
        lambda m, i, o: seen.__setitem__("h", o.hidden_states[model.config.vision_feature_layer]))
    try:
        out = model(input_ids=ids, pixel_values=px, attention_mask=mask, labels=labels)
    finally:
        hook.remove()
    return out.loss, seen["h"]


def save(model, folder: Path) -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    build_processor().save_pretrained(folder)

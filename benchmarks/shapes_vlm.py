"""The trained shapes VLM: a small LLaVA-style checkpoint that can tell compressions apart (issue 19).

Random weights make every compression look alike; this model was trained (a few CPU minutes, seeded, no
download) on generated 64×64 scenes — shapes of six colours, two sizes and three kinds at random places,
plus a 5×5 white mark (dot, plus or cross) — to answer one-word questions that need colour, position,
counting, size or the small mark (benchmarks/shapes_data.py). The checkpoint is a real LLaVA folder
(benchmarks/shapes_model.py): `hf:FOLDER` loads it in tokcomp and LlavaForConditionalGeneration /
AutoProcessor.from_pretrained load it in transformers.

Run:
    python -m benchmarks.shapes_vlm                      # the fixture: train unless the cache has it; accuracy
    python -m benchmarks.shapes_vlm --out DIR --force    # train from scratch into DIR

API (for the sweep's tests and `make bench`):
    fixture_path(train=True) -> Path
        The checkpoint folder: the committed one (benchmarks/fixtures/shapes-vlm) when its recorded key
        equals this code's key, else the cache folder ($TOKCOMP_CACHE or ~/.cache/tokcomp/shapes-vlm-<key>),
        trained there when missing (train=False raises FileNotFoundError instead).
    heldout(n=200, seed=0) -> list[HeldoutItem]
        Held-out (image, question, answer, kind) items: image a PIL RGB 64×64, question the text to put
        in the prompt, answer the one expected word, kind its type; types in turn (balanced). Never drawn
        from the training stream.
    accuracy(answers, items) -> Accuracy
        Ground-truth exact-answer score of `answers` (strings, one per item, as decoded); an answer counts
        when its stripped, lower-cased text equals the expected word. Per type too.
    answer(model, processor, items, pixel_values=None, batch=64) -> list[str]
        Greedy answers of a LlavaForConditionalGeneration (the processor's chat template, up to 3 new tokens).
    cache_key() -> str
        sha256 (16 hex) of the code of shapes_data.py and shapes_model.py (their AST: docstrings and
        comments excluded) and the recipe: what the weights depend on.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script: benchmarks/ is a folder of scripts, not a package
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "benchmarks"

from benchmarks import shapes_data as D  # noqa: E402
from benchmarks import shapes_model as M  # noqa: E402

HERE = Path(__file__).resolve().parent
COMMITTED = HERE / "fixtures" / "shapes-vlm"
PROVENANCE = "shapes_vlm.json"  # beside the weights: the key, the recipe, the accuracy measured at training
RECIPE = M.Recipe()


@dataclass(frozen=True)
class HeldoutItem:
    image: object  # PIL.Image.Image, RGB
    question: str
    answer: str
    kind: str


@dataclass
class Accuracy:
    correct: int
    total: int
    by_kind: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def value(self) -> float:
        return self.correct / self.total if self.total else float("nan")

    def to_dict(self) -> dict:
        return {"accuracy": self.value, "correct": self.correct, "total": self.total,
                "by_kind": {k: {"correct": c, "total": t, "accuracy": c / t} for k, (c, t) in self.by_kind.items()}}


def _code_digest(path: Path) -> bytes:
    """The module's code without its docstrings and comments (the AST): editing prose keeps the key."""
    import ast

    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(body, list) and body and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree, include_attributes=False).encode()


def cache_key(recipe: M.Recipe = RECIPE) -> str:
    h = hashlib.sha256()
    for name in ("shapes_data.py", "shapes_model.py"):
        h.update(_code_digest(HERE / name))
    h.update(json.dumps(asdict(recipe), sort_keys=True).encode())
    return h.hexdigest()[:16]


def _cache_root() -> Path:
    return Path(os.environ.get("TOKCOMP_CACHE") or Path.home() / ".cache" / "tokcomp")


def recorded_key(folder: Path) -> str | None:
    try:
        return json.loads((folder / PROVENANCE).read_text())["key"]
    except (OSError, ValueError, KeyError):
        return None


def fixture_path(train: bool = True, log=print) -> Path:
    key = cache_key()
    if recorded_key(COMMITTED) == key:
        return COMMITTED
    cached = _cache_root() / f"shapes-vlm-{key}"
    if recorded_key(cached) == key:
        return cached
    if not train:
        raise FileNotFoundError(f"no trained shapes VLM for key {key} (committed: {recorded_key(COMMITTED)}); "
                                "run `python -m benchmarks.shapes_vlm` to train it")
    build(cached, log=log)
    return cached


def heldout(n: int = 200, seed: int = 0) -> list[HeldoutItem]:
    from PIL import Image

    return [HeldoutItem(Image.fromarray(D.render(s)), q.text, q.answer, q.kind) for s, q in D.heldout_items(seed, n)]


def accuracy(answers, items) -> Accuracy:
    answers, items = list(answers), list(items)
    if len(answers) != len(items):
        raise ValueError(f"{len(answers)} answers for {len(items)} items")
    acc = Accuracy(0, 0)
    for a, it in zip(answers, items):
        ok = str(a).strip().lower() == it.answer
        c, t = acc.by_kind.get(it.kind, (0, 0))
        acc.by_kind[it.kind] = (c + ok, t + 1)
        acc.correct += ok
        acc.total += 1
    return acc


def prompt(processor, question: str) -> str:
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    return processor.apply_chat_template(messages, add_generation_prompt=True)


def answer(model, processor, items, pixel_values=None, batch: int = 64) -> list[str]:
    """Greedy answers; `pixel_values` replaces the processor's (e.g. to feed compressed features instead,
    use transformers directly): by default the processor makes them from the items' images."""
    import torch

    out: list[str] = []
    items = list(items)
    for i in range(0, len(items), batch):
        chunk = items[i:i + batch]
        enc = processor(images=[it.image for it in chunk], text=[prompt(processor, it.question) for it in chunk],
                        return_tensors="pt", padding=True)
        if pixel_values is not None:
            enc["pixel_values"] = pixel_values[i:i + batch]
        with torch.no_grad():
            gen = model.generate(**enc, max_new_tokens=3, do_sample=False)
        new = gen[:, enc["input_ids"].shape[1]:]
        out += [s.strip() for s in processor.tokenizer.batch_decode(new, skip_special_tokens=True)]
    return out


def selected_features(model, pixel_values):
    """The tower's features as the projector reads them: hidden_states[vision_feature_layer], CLS dropped
    ([B, 64, C], raster order of the 8×8 grid)."""
    import torch

    with torch.no_grad():
        out = model.model.vision_tower(pixel_values, output_hidden_states=True)
    return out.hidden_states[model.config.vision_feature_layer][:, 1:]


def answer_with_features(model, processor, items, features, max_new_tokens: int = 3) -> list[str]:
    """Greedy answers with `features` [B, T, C] (tower width, before the projector: e.g. a compressed
    selected_features) in place of the image: T `<image>` placeholders, the projector applied to the
    features, spliced where the placeholders are, and the usual decode (full forward per new token)."""
    import torch

    tok = processor.tokenizer
    image = model.config.image_token_index
    eos = tok.eos_token_id
    out = []
    with torch.no_grad():
        embeds = model.model.multi_modal_projector(features)
        for row, it in enumerate(items):
            text = prompt(processor, it.question).replace(processor.image_token, processor.image_token * len(embeds[row]))
            ids = tok(text, return_tensors="pt")["input_ids"]
            new = []
            for _ in range(max_new_tokens):
                x = model.get_input_embeddings()(ids)
                x[ids == image] = embeds[row].to(x.dtype)
                nxt = int(model(inputs_embeds=x).logits[0, -1].argmax())
                if nxt == eos:
                    break
                new.append(nxt)
                ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
            out.append(tok.decode(new, skip_special_tokens=True).strip())
    return out


def load(folder: Path | None = None):
    """(model, processor) from the fixture folder (eval mode)."""
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    folder = folder or fixture_path()
    model = LlavaForConditionalGeneration.from_pretrained(folder, attn_implementation="eager").eval()
    return model, AutoProcessor.from_pretrained(folder)


def build(folder: Path, recipe: M.Recipe = RECIPE, log=print) -> dict:
    """Train and write the checkpoint folder atomically (a temporary sibling renamed into place)."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    model, losses = M.train(recipe, log=log)
    seconds = time.perf_counter() - t0
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        M.save(model, tmp)
        model, processor = load(tmp)
        items = heldout()
        acc = accuracy(answer(model, processor, items), items)
        weights = (tmp / "model.safetensors").read_bytes()
        info = {"key": cache_key(recipe), "recipe": asdict(recipe), "train_seconds": round(seconds, 1),
                "final_losses": losses[-1], "heldout": acc.to_dict(),
                "sha256": hashlib.sha256(weights).hexdigest()}
        (tmp / PROVENANCE).write_text(json.dumps(info, indent=1) + "\n")
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    if log:
        log(f"{folder}: held-out accuracy {acc.value:.3f} ({acc.correct}/{acc.total}), trained in {seconds:.0f} s")
    return info


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, help="train into this folder (default: the fixture's cache)")
    ap.add_argument("--force", action="store_true", help="train even when the folder holds this key")
    ap.add_argument("--heldout", type=int, default=700, help="held-out items to score (default 700)")
    args = ap.parse_args(argv)
    if args.out is not None:
        if args.force or recorded_key(args.out) != cache_key():
            build(args.out)
        folder = args.out
    else:
        folder = fixture_path()
    model, processor = load(folder)
    items = heldout(args.heldout)
    acc = accuracy(answer(model, processor, items), items)
    print(json.dumps({"folder": str(folder), **acc.to_dict()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Stage 2 of the shapes VLM's training: a second, shorter pass from the stage-1 checkpoint
(shapes_model.train, whose learning rate ends at zero while the loss is still falling) on a fresh draw
of training scenes (seed 1's train stream: never the held-out stream), with new auxiliary heads and a new
AdamW with its own warm-up and cosine. benchmarks/shapes_vlm.py builds stage 1 into a temporary folder,
then this from it; the cache key covers both stages' code and recipes."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

from . import shapes_model as M


@dataclass(frozen=True)
class Stage2:
    seed: int = 1
    steps: int = 2000
    lr: float = 1e-3
    warmup: int = 20


def finetune(stage1: Path, stage: Stage2 = Stage2(), log=print):
    """The stage-1 folder's model trained `stage.steps` more steps; returns (model in eval mode, losses)."""
    import torch
    from transformers import LlavaForConditionalGeneration

    base = M.Recipe()
    torch.set_num_threads(base.threads)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(stage.seed)
    model = LlavaForConditionalGeneration.from_pretrained(stage1, attn_implementation="eager")
    recipe = M.Recipe(seed=stage.seed, steps=stage.steps, lr=stage.lr, warmup=stage.warmup)
    width = model.config.vision_config.hidden_size
    heads = torch.nn.ModuleList([torch.nn.Linear(width, n) for n in (7, 4, 4, 2, M.GRID, M.GRID)])
    data = M.TrainSet(recipe)
    params = list(model.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=0.01, betas=(0.9, 0.98))

    def lr_at(step: int) -> float:
        if step < recipe.warmup:
            return (step + 1) / recipe.warmup
        return 0.5 * (1 + math.cos(math.pi * (step - recipe.warmup) / (recipe.steps - recipe.warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    model.train()
    losses = []
    t0 = time.perf_counter()
    for step in range(recipe.steps):
        px, ids, mask, labels, plabels = data.draw()
        answer_loss, feats = M.forward_loss(model, px, ids, mask, labels)
        aux = sum(torch.nn.functional.cross_entropy(h(feats[:, 1:]).flatten(0, 1), plabels[..., j].flatten())
                  for j, h in enumerate(heads))
        opt.zero_grad(set_to_none=True)
        (answer_loss + aux).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append((float(answer_loss.detach()), float(aux.detach())))
        if log and (step % 200 == 0 or step == recipe.steps - 1):
            log(f"stage 2 step {step:5d}  answer {losses[-1][0]:.4f}  {time.perf_counter() - t0:6.1f} s")
    model.eval()
    return model, losses

"""Record the transformer blocks at export, while the module tree is known (for `tokcomp debug`).

Guessing blocks from the finished graph fails: the exporter renames parameters (`val_N`), onnxslim merges
equal constants and drops name scopes. Instead the model is traced with every block's output as an extra,
temporary graph output `tokcomp_block_<i>` (ToMe bundles also `tokcomp_block_<i>_source`, the patch → row
map after that block). Graph outputs keep their names through onnxslim, so after clean-up the temporary
outputs are removed again and the tensors stay in the graph under those names; the manifest's `blocks`
lists them: [{index, module, output[, source]}].

Which modules are blocks: a VisionTower's own `blocks` (the ones it runs: `layers_run` of them), reported
through its `block_tap` hook (so ToMe's taken-apart blocks are covered; a tower with a forward of its own
that calls the hook says so with `calls_block_tap`, as Qwen-VL's static-grid tower does); a py: module's longest list of
repeated modules (encoders/user_tower.py user_blocks), through forward hooks. Every block must run exactly
once, in order; otherwise none are recorded (never a merged or partial list).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

TAP_PREFIX = "tokcomp_block_"


@dataclass
class Taps:
    """What the traced forward recorded.

    Attributes:
        modules: module path of each block, in execution order.
        tome: the tower merges tokens (a patch → row map is recorded per block).
        why_none: why no blocks are recorded ("" when they are).
    """

    modules: list[str]
    tome: bool
    why_none: str = ""

    def names(self) -> list[str]:
        out = [f"{TAP_PREFIX}{i}" for i in range(len(self.modules))]
        if self.tome:
            out += [f"{TAP_PREFIX}{i}_source" for i in range(len(self.modules))]
        return out


def _tower(model):
    from ..encoders.tower import VisionTower

    return next((m for m in model.modules() if isinstance(m, VisionTower)), None)


def _first_tensor(out):
    import torch

    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    return None


class _Tapped:
    """Wraps the export module: forward returns its outputs, then every block output (then ToMe sources)."""

    def __init__(self, model, tome: bool):
        import torch
        from torch import nn

        from ..encoders.tower import VisionTower
        from ..encoders.user_tower import UserTower, user_blocks

        self.tome = tome
        self.fired: list[tuple[int, Any, Any]] = []
        tower = _tower(model)
        paths = {id(m): p for p, m in model.named_modules()}
        self.hooks = []
        self.tower = None
        self.expected = 0
        self.why = ""
        if tower is None:
            self.why, self.modules = "the exported module holds no vision tower", []
        elif isinstance(tower, UserTower):
            found = user_blocks(tower.user)
            self.modules = [paths[id(m)] for _, m in found]
            self.expected = len(found)
            if not found:
                self.why = f"{tower.spec.name} holds no nn.ModuleList / nn.Sequential of repeated blocks"
            for i, (_, m) in enumerate(found):
                self.hooks.append(m.register_forward_hook(
                    lambda mod, args, out, i=i: self.fired.append((i, _first_tensor(out), None))))
        elif type(tower).forward is VisionTower.forward or tome or getattr(tower, "calls_block_tap", False):
            self.tower = tower
            self.expected = tower.num_used
            self.modules = [paths[id(tower.blocks[i])] for i in range(tower.num_used)]
            tower.block_tap = lambda i, x, source: self.fired.append((i, x, source))
        else:
            self.why, self.modules = f"{type(tower).__name__} runs its blocks in its own forward", []

        outer = self

        class Module(nn.Module):
            def __init__(self):
                super().__init__()
                self.model = model

            def forward(self, pixel_values):  # the exporter's dynamic_shapes name the argument
                outer.fired.clear()
                y = self.model(pixel_values)
                ys = y if isinstance(y, tuple) else (y,)
                if not outer.ok():
                    return ys
                xs = [t for _, t, _ in outer.fired]
                srcs = [s if s is not None else torch.zeros(1, dtype=torch.int64) for _, _, s in outer.fired]
                return (*ys, *xs, *(srcs if outer.tome else ()))

        self.module = Module().eval()

    def ok(self) -> bool:
        order = [i for i, _, _ in self.fired]
        return bool(self.modules) and order == list(range(self.expected)) and all(
            t is not None for _, t, _ in self.fired)

    def close(self) -> None:
        for h in self.hooks:
            h.remove()
        if self.tower is not None:
            self.tower.block_tap = None


@contextlib.contextmanager
def tapped(model, tome: bool):
    """(module to export, Taps) — the Taps are filled by the first forward (the exporter's trace); the
    hooks are removed on exit."""
    import torch

    t = _Tapped(model, tome)
    try:
        taps = Taps(modules=list(t.modules), tome=tome)

        def probe(x):
            with torch.no_grad():
                t.module(torch.as_tensor(x))
            if not t.ok():
                order = [i for i, _, _ in t.fired]
                taps.why_none = t.why or (f"the blocks ran in the order {order}, not once each in order "
                                          f"0..{t.expected - 1}")
                taps.modules = []

        yield t.module, taps, probe
    finally:
        t.close()


def strip_taps(proto, taps: Taps) -> list[dict[str, Any]]:
    """Remove the temporary block outputs from the graph outputs; return the manifest's `blocks`.

    A tensor that is both a block output and another graph output reaches the graph through an Identity
    the exporter inserts; such Identities are dropped and the block named by the tensor they copy.
    """
    g = proto.graph
    temp = set(taps.names())
    present = {o.name for o in g.output}
    missing = [n for n in taps.names() if n not in present]
    keep = [o for o in g.output if o.name not in temp]
    del g.output[:]
    g.output.extend(keep)
    if missing or not taps.modules:
        return []
    resolved = {n: n for n in temp}
    changed = True
    while changed:
        changed = False
        consumed = {i for n in g.node for i in n.input}
        outputs = {o.name for o in g.output}
        for k, node in enumerate(list(g.node)):
            out = node.output[0] if node.output else ""
            if node.op_type == "Identity" and out in resolved.values() and out not in consumed \
                    and out not in outputs:
                for name, t in resolved.items():
                    if t == out:
                        resolved[name] = node.input[0]
                del g.node[k]
                changed = True
                break
    blocks = []
    for i, module in enumerate(taps.modules):
        entry = {"index": i, "module": module, "output": resolved[f"{TAP_PREFIX}{i}"]}
        if taps.tome:
            entry["source"] = resolved[f"{TAP_PREFIX}{i}_source"]
        blocks.append(entry)
    return blocks

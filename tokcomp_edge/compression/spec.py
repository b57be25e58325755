"""Compression spec strings: the grammar, the parser and the names it accepts (the token arithmetic on an
encoder is plan.py).

A spec is `method[:param[:option…]]`:

    none
    pool:S[:avg|max]                 S×S pooling of the patch grid (ceil mode when S does not divide it)
    bilinear:HxW                     bilinear resize of the grid to H×W (also `bilinear:N` for N×N)
    unshuffle:R[:torch|internvl][:pad]   R×R neighbours → one token of R²·C channels
    prune:K[:norm|cls-attn|cls-sim]  keep the K highest-scoring patch tokens, in grid order
    visionzip:D:C                    D dominant patch tokens (attention in the used layer) + C contextual
                                     tokens merged from the rest by key similarity (VisionZip)
    tome:R | tome:R1,R2,…            ToMe: merge R tokens in every block run (or Ri in block i)

Everything here is pure Python: parsing and `plan_compression` (plan.py) run before any model is built,
so an impossible combination fails in milliseconds, naming the numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import SpecError

# TensorRT's TopK supports K up to 3840 (onnx-tensorrt operators table); a static K must stay below it.
MAX_TOPK = 3840

METHODS: dict[str, dict[str, Any]] = {
    "none": {
        "syntax": "none",
        "what": "no compression; all patch tokens",
        "tokens": "h·w",
        "dim": "C",
    },
    "pool": {
        "syntax": "pool:S[:avg|max]",
        "what": "S×S average (default) or max pooling over the patch grid; ceil mode when S does not divide the "
                "grid, each output averaging only the patches its window covers",
        "tokens": "⌈h/S⌉·⌈w/S⌉",
        "dim": "C",
    },
    "bilinear": {
        "syntax": "bilinear:HxW",
        "what": "bilinear resize of the grid to H×W (align_corners=False, no antialias)",
        "tokens": "H·W",
        "dim": "C",
    },
    "unshuffle": {
        "syntax": "unshuffle:R[:torch|internvl][:pad]",
        "what": "pixel-unshuffle: each R×R block becomes one token of R²·C channels; `torch` order = "
                "F.pixel_unshuffle, `internvl` = InternVL's pixel_shuffle(scale=1/R); `pad` zero-pads the grid "
                "to the next multiple of R",
        "tokens": "(h/R)·(w/R)  (⌈h/R⌉·⌈w/R⌉ with pad)",
        "dim": "R²·C",
    },
    "prune": {
        "syntax": "prune:K[:norm|cls-attn|cls-sim]",
        "what": "keep the K patch tokens with the highest score (L2 norm by default; the CLS query's attention "
                "in the used layer; cosine similarity to CLS, or to the mean token without CLS), in grid order; "
                "second output `indices` [B,K] int64",
        "tokens": "K",
        "dim": "C",
    },
    "visionzip": {
        "syntax": "visionzip:D:C",
        "what": "VisionZip (Yang et al., CVPR 2025) in the used layer: the D patch tokens with the most CLS "
                "attention (without CLS: the most attention received), in grid order, then C contextual "
                "tokens — every (M//C)-th remaining token is a target, the others join their most similar "
                "target (cosine of head-averaged keys), each = target + mean of its members; token order "
                "prefix, D dominant, C contextual; outputs `indices` [B,D] int64 (dominant cells) and `merge_map` [B,N] int64 (the "
                "output row each patch went into)",
        "tokens": "D + C",
        "dim": "C",
    },
    "tome": {
        "syntax": "tome:R | tome:R1,R2,…,RL",
        "what": "ToMe (Bolya et al., ICLR 2023) inside every block run, between attention and MLP: bipartite "
                "soft matching on head-averaged keys merges R tokens (Ri in block i; one entry per block run) "
                "by size-weighted average, proportional attention from the first merge on, prefix tokens "
                "protected; outputs `sizes` [B,T] (patches per token) and `merge_map` [B,N] int64 (output row "
                "of each patch); token order is ToMe's, not grid order",
        "tokens": "h·w − ΣRi  (h·w − R·L for a constant R)",
        "dim": "C",
    },
}

POOL_MODES = ("avg", "max")
UNSHUFFLE_ORDERS = ("torch", "internvl")
PRUNE_SCORES = ("norm", "cls-attn", "cls-sim")
PREFIX_POLICIES = ("keep", "drop")
# Methods whose graph has a second output `indices` [B, indexed_out] into the patch grid.
INDEXED_METHODS = ("prune", "visionzip")
# Methods that act inside the tower's blocks and so need the number of blocks run to plan.
IN_BLOCK_METHODS = ("tome",)


@dataclass(frozen=True)
class CompressionSpec:
    """A parsed spec: `method` plus its typed parameters."""

    method: str
    params: dict[str, Any] = field(default_factory=dict)
    text: str = ""

    @property
    def slug(self) -> str:
        """Folder-name form: `pool:2` → `pool2`, `prune:64:cls-attn` → `prune64-cls-attn`, `tome:8,4` → `tome8-4`."""
        parts = self.text.replace(",", ":").split(":")
        return parts[0] + "-".join(parts[1:]) if len(parts) > 1 else parts[0]


def _int(value: str, what: str, spec: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise SpecError(f"{what} in {spec!r} must be an integer, got {value!r}",
                        "see `tokcomp methods` for the syntax") from None
    if n < 1:
        raise SpecError(f"{what} in {spec!r} must be ≥ 1, got {n}", "see `tokcomp methods`")
    return n


def _int_or_zero(value: str, what: str, spec: str) -> int:
    """An integer ≥ 0 (a schedule may leave a block unmerged)."""
    try:
        n = int(value)
    except ValueError:
        raise SpecError(f"{what} in {spec!r} must be an integer, got {value!r}",
                        "use e.g. `tome:13` or `tome:16,16,12,8`") from None
    if n < 0:
        raise SpecError(f"{what} in {spec!r} must be ≥ 0, got {n}", "use e.g. `tome:13`")
    return n


def _options(rest: list[str], allowed: dict[str, tuple[str, ...]], spec: str) -> dict[str, str]:
    """Match free-order options (`avg`, `internvl`, `pad`…) to the slot they belong to; each slot once."""
    chosen: dict[str, str] = {}
    for opt in rest:
        slot = next((s for s, values in allowed.items() if opt in values), None)
        if slot is None:
            choices = ", ".join(v for values in allowed.values() for v in values)
            raise SpecError(f"unknown option {opt!r} in {spec!r} (expected one of: {choices})",
                            "see `tokcomp methods`")
        if slot in chosen:
            raise SpecError(f"{spec!r} gives the {slot} twice ({chosen[slot]!r} and {opt!r})",
                            "give each option once")
        chosen[slot] = opt
    return chosen


def parse_spec(text: str) -> CompressionSpec:
    """Parse a spec string; SpecError (exit 2) on anything malformed."""
    spec = (text or "").strip().lower()
    if not spec:
        raise SpecError("empty compression spec", "use e.g. `pool:2`; see `tokcomp methods`")
    method, *rest = spec.split(":")
    if method not in METHODS:
        raise SpecError(f"unknown compression method {method!r} in {text!r} "
                        f"(expected one of: {', '.join(METHODS)})", "see `tokcomp methods`")
    if method == "none":
        if rest:
            raise SpecError(f"`none` takes no parameters, got {text!r}", "use `none`")
        return CompressionSpec("none", {}, "none")
    if not rest or not rest[0]:
        raise SpecError(f"{method!r} needs a parameter: {METHODS[method]['syntax']}", "see `tokcomp methods`")
    arg, opts = rest[0], rest[1:]
    if method == "pool":
        s = _int(arg, "pool size S", text)
        o = _options(opts, {"mode": POOL_MODES}, text)
        mode = o.get("mode", "avg")
        return CompressionSpec("pool", {"size": s, "mode": mode}, f"pool:{s}:{mode}" if mode != "avg" else f"pool:{s}")
    if method == "bilinear":
        if opts:
            raise SpecError(f"`bilinear` takes one parameter HxW, got {text!r}", "use e.g. `bilinear:8x8`")
        dims = arg.split("x")
        if len(dims) == 1:
            dims = dims * 2
        if len(dims) != 2:
            raise SpecError(f"bilinear size in {text!r} must be HxW, got {arg!r}", "use e.g. `bilinear:8x8`")
        h, w = (_int(d, "bilinear size", text) for d in dims)
        return CompressionSpec("bilinear", {"height": h, "width": w}, f"bilinear:{h}x{w}")
    if method == "unshuffle":
        r = _int(arg, "unshuffle factor R", text)
        if r < 2:
            raise SpecError(f"unshuffle factor R in {text!r} must be ≥ 2, got {r}", "use e.g. `unshuffle:2`")
        o = _options(opts, {"order": UNSHUFFLE_ORDERS, "padding": ("pad",)}, text)
        order, pad = o.get("order", "torch"), "padding" in o
        canon = f"unshuffle:{r}" + (f":{order}" if order != "torch" else "") + (":pad" if pad else "")
        return CompressionSpec("unshuffle", {"factor": r, "order": order, "pad": pad}, canon)
    if method == "tome":
        if opts:
            raise SpecError(f"`tome` takes one parameter R or R1,R2,…, got {text!r}", "use e.g. `tome:13`")
        rs = [_int_or_zero(v, "ToMe r", text) for v in arg.split(",")]
        if len(rs) == 1:
            if rs[0] < 1:
                raise SpecError(f"ToMe r in {text!r} must be ≥ 1, got {rs[0]}", "use e.g. `tome:13`")
            return CompressionSpec("tome", {"r": rs[0]}, f"tome:{rs[0]}")
        return CompressionSpec("tome", {"schedule": tuple(rs)}, "tome:" + ",".join(map(str, rs)))
    if method == "visionzip":
        if len(opts) != 1:
            raise SpecError(f"`visionzip` takes two parameters D:C, got {text!r}",
                            "use e.g. `visionzip:53:10` (LLaVA-1.5's 64 tokens with --prefix keep)")
        d, c = _int(arg, "dominant count D", text), _int(opts[0], "contextual count C", text)
        return CompressionSpec("visionzip", {"dominant": d, "contextual": c}, f"visionzip:{d}:{c}")
    # prune
    k = _int(arg, "K", text)
    o = _options(opts, {"score": PRUNE_SCORES}, text)
    score = o.get("score", "norm")
    return CompressionSpec("prune", {"k": k, "score": score}, f"prune:{k}:{score}")

"""Compression spec strings, their validation against an encoder, and the exact token arithmetic.

A spec is `method[:param[:option…]]`:

    none
    pool:S[:avg|max]                 S×S pooling of the patch grid (ceil mode when S does not divide it)
    bilinear:HxW                     bilinear resize of the grid to H×W (also `bilinear:N` for N×N)
    unshuffle:R[:torch|internvl][:pad]   R×R neighbours → one token of R²·C channels
    prune:K[:norm|cls-attn|cls-sim]  keep the K highest-scoring patch tokens, in grid order
    visionzip:D:C                    D dominant patch tokens (attention in the used layer) + C contextual
                                     tokens merged from the rest by key similarity (VisionZip)
    tome:R | tome:R1,R2,…            ToMe: merge R tokens in every block run (or Ri in block i)

Everything here is pure Python: parsing and `plan_compression` run before any model is built, so an
impossible combination fails in milliseconds, naming the numbers.
"""

from __future__ import annotations

import math
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


@dataclass(frozen=True)
class CompressionPlan:
    """The exact shapes a spec produces on one encoder: what the manifest and every later stage rely on."""

    spec: CompressionSpec
    prefix: str  # keep | drop
    prefix_in: int
    prefix_out: int
    grid_in: tuple[int, int]
    grid_out: tuple[int, int] | None  # None for prune / visionzip (kept tokens are not a grid)
    patch_tokens_in: int
    patch_tokens_out: int
    dim_in: int
    dim_out: int
    formula: str
    has_cls: bool = False  # cls-sim compares with CLS when there is one, else with the mean token
    # Tokens after the indexed ones that belong to no single grid cell (VisionZip's contextual tokens):
    # the output is [prefix_out, indexed (`indices`), merged_out].
    merged_out: int = 0
    # ToMe: tokens merged in each block run, and the token count after each block (prefix included).
    schedule: tuple[int, ...] = ()
    block_tokens: tuple[int, ...] = ()

    @property
    def indexed_out(self) -> int:
        """Patch tokens that carry a grid index in the `indices` output (prune, visionzip), else 0."""
        return self.patch_tokens_out - self.merged_out if self.spec.method in INDEXED_METHODS else 0

    @property
    def tokens_in(self) -> int:
        return self.prefix_in + self.patch_tokens_in

    @property
    def tokens_out(self) -> int:
        return self.prefix_out + self.patch_tokens_out

    @property
    def ratio(self) -> float:
        return self.tokens_out / self.tokens_in

    @property
    def extra_outputs(self) -> tuple[str, ...]:
        """Graph outputs after `tokens`: `indices` [B, indexed_out] (prune, visionzip) and `merge_map`
        [B, patch_tokens_in] (visionzip: the output row each patch went into)."""
        if self.spec.method == "visionzip":
            return ("indices", "merge_map")
        if self.spec.method == "tome":
            return ("sizes", "merge_map")
        return ("indices",) if self.indexed_out else ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "spec": self.spec.text,
            "method": self.spec.method,
            "params": dict(self.spec.params),
            "prefix": self.prefix,
            "prefix_in": self.prefix_in,
            "prefix_out": self.prefix_out,
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out,
            "patch_tokens_in": self.patch_tokens_in,
            "patch_tokens_out": self.patch_tokens_out,
            "grid_in": list(self.grid_in),
            "grid_out": list(self.grid_out) if self.grid_out else None,
            "dim_in": self.dim_in,
            "dim_out": self.dim_out,
            "formula": self.formula,
            "indexed_out": self.indexed_out,
            "merged_out": self.merged_out,
            **({"schedule": list(self.schedule), "block_tokens": list(self.block_tokens)} if self.schedule else {}),
        }


def plan_compression(spec: CompressionSpec, *, grid: tuple[int, int], prefix_tokens: int, has_cls: bool,
                     hidden_size: int, prefix: str, layers: int | None = None) -> CompressionPlan:
    """Check that `spec` can apply to an encoder with this grid/prefix and compute the output shapes.

    `layers`: the number of blocks the tower runs (needed by ToMe, which merges inside each of them).

    Raises SpecError (exit 2) naming the numbers for impossible combinations.
    """
    if prefix not in PREFIX_POLICIES:
        raise SpecError(f"--prefix must be keep or drop, got {prefix!r}", "use --prefix keep|drop")
    h, w = grid
    n = h * w
    p_out = prefix_tokens if prefix == "keep" else 0
    m, prm = spec.method, spec.params
    dim_out = hidden_size
    if m == "none":
        grid_out, n_out, formula = (h, w), n, f"{h}·{w} = {n}"
    elif m == "pool":
        s = prm["size"]
        if s > max(h, w):
            raise SpecError(f"pool size {s} is larger than the {h}x{w} patch grid",
                            f"use S ≤ {max(h, w)}")
        grid_out = (math.ceil(h / s), math.ceil(w / s))
        n_out = grid_out[0] * grid_out[1]
        formula = f"⌈{h}/{s}⌉·⌈{w}/{s}⌉ = {grid_out[0]}·{grid_out[1]} = {n_out}"
    elif m == "bilinear":
        grid_out = (prm["height"], prm["width"])
        n_out = grid_out[0] * grid_out[1]
        formula = f"{grid_out[0]}·{grid_out[1]} = {n_out}"
    elif m == "unshuffle":
        r = prm["factor"]
        if (h % r or w % r) and not prm["pad"]:
            raise SpecError(f"unshuffle factor {r} does not divide the {h}x{w} patch grid",
                            f"add `:pad` to zero-pad to {math.ceil(h / r) * r}x{math.ceil(w / r) * r}, "
                            "or pick a factor that divides the grid")
        if prefix == "keep" and prefix_tokens:
            raise SpecError(f"unshuffle makes {r * r}·{hidden_size}-channel tokens, which cannot sit beside "
                            f"{prefix_tokens} prefix token(s) of {hidden_size} channels",
                            "use --prefix drop with unshuffle")
        grid_out = (math.ceil(h / r), math.ceil(w / r))
        n_out = grid_out[0] * grid_out[1]
        dim_out = hidden_size * r * r
        formula = f"⌈{h}/{r}⌉·⌈{w}/{r}⌉ = {n_out} tokens of {r}²·{hidden_size} = {dim_out} channels"
    elif m == "tome":
        return _plan_tome(spec, prefix=prefix, prefix_tokens=prefix_tokens, p_out=p_out, grid=(h, w),
                          hidden_size=hidden_size, has_cls=has_cls, layers=layers)
    elif m == "visionzip":
        d, c = prm["dominant"], prm["contextual"]
        if d + c >= n:
            # At least one token must be left to merge: C targets come from the N − D remaining tokens.
            raise SpecError(f"visionzip D={d} + C={c} = {d + c} keeps every one of the {n} ({h}x{w}) patch tokens "
                            "or more", f"use D + C < {n}")
        if d >= MAX_TOPK or n >= MAX_TOPK:
            big = d if d >= MAX_TOPK else n
            raise SpecError(f"visionzip ranks {n} patch tokens and keeps D={d}: {big} is not below TensorRT's "
                            f"TopK limit of {MAX_TOPK}", "use a smaller image or grid")
        rest = n - d
        grid_out, n_out = None, d + c
        formula = f"D + C = {d} + {c} = {d + c} (C from {rest} remaining tokens, step {rest // c})"
        comp = CompressionPlan(spec=spec, prefix=prefix, prefix_in=prefix_tokens, prefix_out=p_out, grid_in=(h, w),
                               grid_out=None, patch_tokens_in=n, patch_tokens_out=n_out, dim_in=hidden_size,
                               dim_out=dim_out, formula=f"{p_out} prefix + {formula}" if p_out else formula,
                               has_cls=has_cls, merged_out=c)
        return comp
    else:  # prune
        k, score = prm["k"], prm["score"]
        if k >= n:
            raise SpecError(f"prune K={k} keeps every one of the {n} ({h}x{w}) patch tokens or more",
                            f"use K < {n}")
        if k >= MAX_TOPK:
            raise SpecError(f"prune K={k} is not below TensorRT's TopK limit of {MAX_TOPK}",
                            f"use K < {MAX_TOPK}")
        if score == "cls-attn" and not has_cls:
            raise SpecError("prune score cls-attn needs a CLS token and this encoder has none",
                            "use prune:K:norm or prune:K:cls-sim (similarity to the mean token)")
        grid_out, n_out, formula = None, k, f"K = {k}"
    if p_out:
        formula = f"{p_out} prefix + {formula}"
    return CompressionPlan(spec=spec, prefix=prefix, prefix_in=prefix_tokens, prefix_out=p_out, grid_in=(h, w),
                           grid_out=grid_out, patch_tokens_in=n, patch_tokens_out=n_out, dim_in=hidden_size,
                           dim_out=dim_out, formula=formula, has_cls=has_cls)


def _plan_tome(spec: CompressionSpec, *, prefix: str, prefix_tokens: int, p_out: int, grid: tuple[int, int],
               hidden_size: int, has_cls: bool, layers: int | None) -> CompressionPlan:
    """ToMe's static arithmetic: T after block i = T before − r_i, each r_i ≤ half the unprotected tokens."""
    if layers is None:
        raise SpecError(f"{spec.text} merges inside the tower's blocks, but the number of blocks run is unknown",
                        "this is a bug in the caller; report it")
    n = grid[0] * grid[1]
    sched = spec.params.get("schedule") or (spec.params["r"],) * layers
    if len(sched) != layers:
        raise SpecError(f"{spec.text} gives {len(sched)} merge counts, but the tower runs {layers} blocks",
                        f"give one count per block run ({layers}), or one R for all")
    t, after = prefix_tokens + n, []
    if (t + 1) // 2 >= MAX_TOPK:
        raise SpecError(f"{spec.text} ranks the {(t + 1) // 2} A tokens of a {t}-token block, which is not below "
                        f"TensorRT's TopK limit of {MAX_TOPK}", "use a smaller image or grid")
    for i, r in enumerate(sched):
        cap = (t - prefix_tokens) // 2
        if r > cap:
            raise SpecError(f"{spec.text}: block {i + 1} of {layers} would merge r={r} tokens, but it has {t} "
                            f"tokens ({prefix_tokens} protected) and can merge at most {cap}",
                            f"use r ≤ {cap} there (each block merges at most half of its unprotected tokens)")
        t -= r
        after.append(t)
    total = sum(sched)
    if total >= n:
        raise SpecError(f"{spec.text} merges {total} of the {n} patch tokens", "merge fewer")
    const = len(set(sched)) == 1
    formula = (f"{n} − {sched[0]}·{layers} = {n - total}" if const
               else f"{n} − ({' + '.join(map(str, sched))}) = {n - total}")
    if p_out:
        formula = f"{p_out} prefix + {formula}"
    return CompressionPlan(spec=spec, prefix=prefix, prefix_in=prefix_tokens, prefix_out=p_out, grid_in=grid,
                           grid_out=None, patch_tokens_in=n, patch_tokens_out=n - total, dim_in=hidden_size,
                           dim_out=hidden_size, formula=formula, has_cls=has_cls, schedule=tuple(sched),
                           block_tokens=tuple(after))

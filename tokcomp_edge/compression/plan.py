"""The exact token arithmetic of a compression spec on one encoder (`plan_compression`): tokens in and
out, grids, prefix handling, every impossible combination refused with its numbers. Pure Python, run
before any model is built.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..errors import SpecError
from .spec import INDEXED_METHODS, MAX_TOPK, PREFIX_POLICIES, CompressionSpec


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

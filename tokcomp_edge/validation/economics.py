"""Token economics: what a static compression ratio saves in the LLM that consumes the visual tokens.

Prefill cost of a decoder-only transformer on a prompt of n tokens (multiply–add = 2 FLOPs; the
causal mask is not discounted, as dense attention kernels compute the full square; norms, rotary
embeddings, softmax and the LM head are left out — the head runs on the last position only):

    F(n) = L · [ 4·n·d·(d + d_kv)        q, o projections (d×d) + k, v projections (d×d_kv)
               + 4·n²·d                  Q·Kᵀ and attention·V
               + 2·g·n·d·m ]             MLP: g = 3 matrices when gated (SwiGLU), 2 otherwise
    d_kv = d · kv_heads / heads

Saved per image (per tile for a VLM path, whose processor may cut one image into several tiles)
    = F(t + tokens_in) − F(t + tokens_out), t = text tokens in the same prompt.
KV cache saved per image or tile = 2 · L_kv · (tokens_in − tokens_out) · d_kv · bytes per value, L_kv the
layers that cache keys and values: all of them, except in hybrid LLMs, whose convolution (LFM2) or linear-
attention (Qwen3.5) layers keep a state that does not grow with the prompt.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..errors import InputError

FORMULA = ("F(n) = L·[4·n·d·(d + d_kv) + 4·n²·d + 2·g·n·d·m], d_kv = d·kv_heads/heads, "
           "g = 3 (gated MLP) or 2; saved = F(t + tokens_in) − F(t + tokens_out); "
           "KV cache saved = 2·L_kv·(tokens_in − tokens_out)·d_kv·bytes, L_kv = layers with a KV cache")


@dataclass(frozen=True)
class LlmShape:
    """The decoder dimensions that set prefill cost.

    Attributes:
        name: preset name or "custom".
        hidden: model width d.
        layers: decoder blocks L.
        mlp: MLP inner width m.
        heads, kv_heads: attention heads and key/value heads (GQA when kv_heads < heads).
        gated: SwiGLU-style MLP with three matrices (Llama, Qwen2, Vicuna: True).
        kv_layers: layers with a KV cache L_kv (None: all `layers`; fewer in hybrid LLMs such as LFM2 and
            Qwen3.5, vlm/spec.py kv_cache_layers).
    """

    name: str
    hidden: int
    layers: int
    mlp: int
    heads: int
    kv_heads: int
    gated: bool = True
    kv_layers: int | None = None

    def __post_init__(self):
        if self.kv_layers is None:
            object.__setattr__(self, "kv_layers", self.layers)

    @property
    def kv_dim(self) -> float:
        return self.hidden * self.kv_heads / self.heads

    def to_dict(self) -> dict:
        return asdict(self)


# Shapes from the models' published config.json files.
LLM_PRESETS: dict[str, LlmShape] = {
    "qwen2-0.5b": LlmShape("qwen2-0.5b", hidden=896, layers=24, mlp=4864, heads=14, kv_heads=2),
    "qwen2-1.5b": LlmShape("qwen2-1.5b", hidden=1536, layers=28, mlp=8960, heads=12, kv_heads=2),
    "qwen2-7b": LlmShape("qwen2-7b", hidden=3584, layers=28, mlp=18944, heads=28, kv_heads=4),
    "vicuna-7b": LlmShape("vicuna-7b", hidden=4096, layers=32, mlp=11008, heads=32, kv_heads=32),
    "vicuna-13b": LlmShape("vicuna-13b", hidden=5120, layers=40, mlp=13824, heads=40, kv_heads=40),
}


def llm_preset(name: str) -> LlmShape:
    """Look up an --llm preset (InputError listing the presets when unknown)."""
    key = name.strip().lower()
    if key not in LLM_PRESETS:
        raise InputError(f"unknown --llm preset {name!r}",
                         f"use one of {', '.join(LLM_PRESETS)}, or --llm-hidden/--llm-layers/--llm-mlp")
    return LLM_PRESETS[key]


def custom_llm(hidden: int, layers: int, mlp: int | None = None, heads: int | None = None,
               kv_heads: int | None = None, gated: bool = True) -> LlmShape:
    """An LLM shape from explicit dimensions.

    Args:
        hidden, layers: required.
        mlp: MLP width; default 4·hidden (the classic ratio).
        heads: attention heads; only the ratio kv_heads/heads matters, default 1 (= full MHA).
        kv_heads: key/value heads; default = heads.
        gated: SwiGLU MLP.
    Raises:
        InputError: a non-positive dimension or kv_heads > heads.
    """
    heads = heads or 1
    kv_heads = kv_heads or heads
    for label, v in (("--llm-hidden", hidden), ("--llm-layers", layers), ("--llm-mlp", mlp or 1),
                     ("--llm-heads", heads), ("--llm-kv-heads", kv_heads)):
        if v <= 0:
            raise InputError(f"{label} {v}: expected a positive integer", "e.g. --llm-hidden 2048 --llm-layers 24")
    if kv_heads > heads:
        raise InputError(f"--llm-kv-heads {kv_heads} is larger than --llm-heads {heads}",
                         "key/value heads are at most the attention heads")
    return LlmShape("custom", hidden=hidden, layers=layers, mlp=mlp or 4 * hidden, heads=heads,
                    kv_heads=kv_heads, gated=gated)


def prefill_flops(llm: LlmShape, n: int) -> float:
    """F(n) of the module docstring: prefill FLOPs for an n-token prompt."""
    d, m, g = llm.hidden, llm.mlp, (3 if llm.gated else 2)
    per_layer = 4 * n * d * (d + llm.kv_dim) + 4 * n * n * d + 2 * g * n * d * m
    return float(llm.layers * per_layer)


@dataclass
class LlmSaving:
    """Prefill FLOPs and KV cache for one LLM, per image."""

    llm: dict
    text_tokens: int
    flops_uncompressed: float
    flops_compressed: float
    flops_saved: float
    saved_fraction: float
    kv_cache_bytes_saved: float

    def to_dict(self) -> dict:
        return asdict(self)


def llm_saving(llm: LlmShape, tokens_in: int, tokens_out: int, text_tokens: int = 0,
               kv_bytes: int = 2) -> LlmSaving:
    """Prefill FLOPs the compression saves per image in `llm`.

    Args:
        llm: decoder shape.
        tokens_in: visual tokens without compression.
        tokens_out: visual tokens after compression.
        text_tokens: text tokens sharing the prompt (they make attention cost grow with n²).
        kv_bytes: bytes per cached value (2 for fp16).
    Returns:
        LlmSaving.
    """
    full = prefill_flops(llm, text_tokens + tokens_in)
    comp = prefill_flops(llm, text_tokens + tokens_out)
    return LlmSaving(llm=llm.to_dict(), text_tokens=text_tokens, flops_uncompressed=full,
                     flops_compressed=comp, flops_saved=full - comp,
                     saved_fraction=(full - comp) / full if full else 0.0,
                     kv_cache_bytes_saved=2.0 * llm.kv_layers * (tokens_in - tokens_out) * llm.kv_dim * kv_bytes)


DEFAULT_LLMS = ("qwen2-0.5b", "vicuna-7b")


def bundle_llm(manifest: dict) -> LlmShape | None:
    """The LLM a VLM bundle feeds (its manifest's `vlm.llm`, read from the VLM's text_config), or None."""
    vlm = manifest.get("vlm") or {}
    llm = vlm.get("llm")
    if not llm:
        return None
    return LlmShape(name=f"{vlm.get('family')} LLM ({llm['model_type']})", hidden=int(llm["hidden"]),
                    layers=int(llm["layers"]), mlp=int(llm["mlp"]), heads=int(llm["heads"]),
                    kv_heads=int(llm["kv_heads"]), gated=bool(llm["gated"]),
                    kv_layers=int(llm["kv_layers"]) if "kv_layers" in llm else None)  # older bundles: all layers


def economics_llms(cfg, manifest: dict) -> list[LlmShape]:
    """The LLMs of the report's token economics: the ones asked for, else the bundle's own, else the defaults."""
    named = [llm_preset(n) for n in cfg.llms] + ([cfg.llm_custom] if cfg.llm_custom else [])
    if named:
        return named
    own = bundle_llm(manifest)
    return [own] if own is not None else [llm_preset(n) for n in DEFAULT_LLMS]


def token_economics(tokens_in: int, tokens_out: int, llms: list[LlmShape], text_tokens: int = 0) -> dict:
    """The report's `economics` section: tokens in → out and savings per LLM, with the formula."""
    return {
        "tokens_in": tokens_in,
        "tokens_out": tokens_out,
        "ratio": tokens_out / tokens_in if tokens_in else None,
        "text_tokens": text_tokens,
        "formula": FORMULA,
        "llms": [llm_saving(x, tokens_in, tokens_out, text_tokens).to_dict() for x in llms],
    }


def fmt_flops(x: float) -> str:
    """1.23 TFLOP / 45.6 GFLOP / 789 MFLOP."""
    for unit, scale in (("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6)):
        if abs(x) >= scale:
            return f"{x / scale:.3g} {unit}"
    return f"{x:.3g} FLOP"

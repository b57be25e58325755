"""Token economics: what a static compression ratio saves in the LLM that consumes the visual tokens.

Prefill cost of a decoder-only transformer on a prompt of n tokens (multiply–add = 2 FLOPs; the
causal mask is not discounted, as dense attention kernels compute the full square; norms, rotary
embeddings, softmax, elementwise gates and the LM head are left out — the head runs on the last position
only). Every layer has its MLP; what mixes the tokens depends on the layer's kind (text_config.layer_types):

    F(n) = Σ_layers mixer(n) + L · 2·g·n·d·m          MLP: g = 3 matrices when gated (SwiGLU), 2 otherwise
    attention  (L_kv layers, softmax; sliding-window ones too, charged the full square like the causal mask)
             = 2·n·d·(a·q + 2·q_kv) + 2·n·q·d       q, k, v and o projections; a = 2 when q_proj also
                                                     writes an output gate (Qwen3.5), else 1
             + 4·n²·q                                Q·Kᵀ and attention·V — the only term in n²
    q = heads · head_dim, q_kv = kv_heads · head_dim (head_dim = d / heads unless the config sets it)
    conv       (LFM2 Lfm2ShortConv) = 2·n·d·3d + 2·n·d·d + 2·n·d·K      in_proj (B, C, x), out_proj, depthwise
                                                                         conv of kernel K = conv_L_cache
    linear attention (Qwen3.5 Qwen3_5GatedDeltaNet; H_k, d_k key heads and width, H_v, d_v value ones,
             c = 2·H_k·d_k + H_v·d_v the convolved q, k, v channels, K its kernel)
             = 2·n·d·(c + H_v·d_v + 2·H_v) + 2·n·H_v·d_v·d               in_proj_qkv, _z, _b, _a; out_proj
             + 2·n·c·K                                                   depthwise conv
             + n·H_v·[4·C·d_k + 2·C·d_v + (C − 1)·(d_k + d_v) + 6·d_k·d_v]   the chunked gated delta rule, C = 64
    other non-caching layers (a bundle that records kv_layers but not the kinds): the attention
             projections without the n² term

The gated delta rule is counted as transformers' torch_chunk_gated_delta_rule computes it per chunk of C
tokens and value head: kβ·Kᵀ and Q·Kᵀ (2·C²·d_k each), the intra-chunk attention·V (2·C²·d_v), the
state read by the keys and by the queries and its update (2·C·d_k·d_v each), and the two unit-triangular
solves by forward substitution (C·(C − 1)·d_v and C·(C − 1)·d_k); the padding of n to a multiple of C is
left out. LFM2's and the delta rule's convolutions are counted on n outputs (the reference kernel computes
K − 1 more and drops them). tests/validation/test_economics_hybrid.py checks all of it against torch's
FLOP counter on transformers' own Lfm2Model and Qwen3_5TextModel.

Saved per image (per tile for a VLM path, whose processor may cut one image into several tiles)
    = F(t + tokens_in) − F(t + tokens_out), t = text tokens in the same prompt.
KV cache saved per image or tile = 2 · L_kv · (tokens_in − tokens_out) · q_kv · bytes per value, L_kv the
layers that cache keys and values: all of them, except in hybrid LLMs, whose convolution (LFM2) or linear-
attention (Qwen3.5) layers keep a state that does not grow with the prompt.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..errors import InputError

FORMULA = ("F(n) = L_kv·[2·n·d·(a·q + 2·q_kv) + 2·n·q·d + 4·n²·q] + L·2·g·n·d·m + the conv / linear-attention "
           "layers of hybrid LLMs (linear in n; validation/economics.py), q = heads·head_dim, "
           "q_kv = kv_heads·head_dim (head_dim = d/heads by default), a = 2 with an attention output gate, else 1, "
           "g = 3 (gated MLP) or 2; saved = F(t + tokens_in) − F(t + tokens_out); "
           "KV cache saved = 2·L_kv·(tokens_in − tokens_out)·q_kv·bytes, L_kv = layers with a KV cache")

# transformers' torch_chunk_gated_delta_rule chunk length (flash-linear-attention's kernels use 64 too).
DELTA_CHUNK = 64


@dataclass(frozen=True)
class LlmShape:
    """The decoder dimensions that set prefill cost (the module docstring's symbols).

    Attributes:
        name: preset name or "custom".
        hidden: model width d.
        layers: decoder blocks L.
        mlp: MLP inner width m.
        heads, kv_heads: attention heads and key/value heads (GQA when kv_heads < heads).
        gated: SwiGLU-style MLP with three matrices (Llama, Qwen2, Vicuna: True).
        kv_layers: layers with a KV cache L_kv, the softmax-attention ones (None: all `layers`; fewer in
            hybrid LLMs such as LFM2 and Qwen3.5, vlm/spec.py kv_cache_layers).
        head_dim: attention head width (None: hidden / heads).
        attn_gate: q_proj also writes a per-head output gate, twice its width (Qwen3.5's attention).
        conv_layers, conv_kernel: LFM2's short-convolution layers and their kernel (conv_L_cache).
        linear_layers: Qwen3.5's gated-DeltaNet linear-attention layers; linear_k_heads, linear_k_dim,
            linear_v_heads, linear_v_dim, linear_conv_kernel: their dimensions (text_config.linear_*).
    """

    name: str
    hidden: int
    layers: int
    mlp: int
    heads: int
    kv_heads: int
    gated: bool = True
    kv_layers: int | None = None
    head_dim: int | None = None
    attn_gate: bool = False
    conv_layers: int = 0
    conv_kernel: int = 0
    linear_layers: int = 0
    linear_k_heads: int = 0
    linear_k_dim: int = 0
    linear_v_heads: int = 0
    linear_v_dim: int = 0
    linear_conv_kernel: int = 0

    def __post_init__(self):
        if self.kv_layers is None:
            object.__setattr__(self, "kv_layers", self.layers)
        if self.kv_layers + self.conv_layers + self.linear_layers > self.layers:
            raise InputError(f"LLM {self.name!r}: {self.kv_layers} attention + {self.conv_layers} conv + "
                             f"{self.linear_layers} linear-attention layers exceed its {self.layers} layers",
                             "the layer kinds come from text_config.layer_types; re-export the bundle")

    @property
    def q_dim(self) -> float:
        """Width of the queries (and of the attention output): heads · head_dim."""
        return self.heads * self.head_dim if self.head_dim else float(self.hidden)

    @property
    def kv_dim(self) -> float:
        """Width of the cached keys (and values) per layer: kv_heads · head_dim."""
        if self.head_dim:
            return self.kv_heads * self.head_dim
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


def prefill_terms(llm: LlmShape, n: int) -> dict[str, float]:
    """The module docstring's F(n) term by term, summed over the layers of each kind (FLOPs for n tokens)."""
    d, g = llm.hidden, (3 if llm.gated else 2)
    q, kv = llm.q_dim, llm.kv_dim
    attn_proj = 2 * n * d * ((2 if llm.attn_gate else 1) * q + 2 * kv) + 2 * n * q * d
    other = llm.layers - llm.kv_layers - llm.conv_layers - llm.linear_layers
    hk, dk, hv, dv = llm.linear_k_heads, llm.linear_k_dim, llm.linear_v_heads, llm.linear_v_dim
    c = 2 * hk * dk + hv * dv
    return {
        "attention_projections": float(llm.kv_layers * attn_proj),
        "attention_scores": float(llm.kv_layers * 4 * n * n * q),
        "conv": float(llm.conv_layers * (2 * n * d * 3 * d + 2 * n * d * d + 2 * n * d * llm.conv_kernel)),
        "linear_attention_projections": float(llm.linear_layers * (2 * n * d * (c + hv * dv + 2 * hv)
                                                                   + 2 * n * hv * dv * d
                                                                   + 2 * n * c * llm.linear_conv_kernel)),
        "linear_attention_core": float(llm.linear_layers * n * hv * (4 * DELTA_CHUNK * dk + 2 * DELTA_CHUNK * dv
                                                                     + (DELTA_CHUNK - 1) * (dk + dv)
                                                                     + 6 * dk * dv)),
        "other_projections": float(other * attn_proj),
        "mlp": float(llm.layers * 2 * g * n * d * llm.mlp),
    }


def prefill_flops(llm: LlmShape, n: int) -> float:
    """F(n) of the module docstring: prefill FLOPs for an n-token prompt."""
    return float(sum(prefill_terms(llm, n).values()))


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
    return llm_from_facts(f"{vlm.get('family')} LLM ({llm['model_type']})", llm)


# The optional keys of a manifest's vlm.llm (vlm/spec.py LlmFacts) beyond the required dimensions; a bundle
# written before one was recorded leaves it at LlmShape's default (kv_layers: every layer).
_OPTIONAL_FACTS = ("kv_layers", "head_dim", "attn_gate", "conv_layers", "conv_kernel", "linear_layers",
                   "linear_k_heads", "linear_k_dim", "linear_v_heads", "linear_v_dim", "linear_conv_kernel")


def llm_from_facts(name: str, facts: dict) -> LlmShape:
    """An LlmShape from a VLM's LLM facts (a manifest's vlm.llm, or vlm/spec.py LlmFacts.to_dict())."""
    extra = {k: (bool(facts[k]) if k == "attn_gate" else int(facts[k]))
             for k in _OPTIONAL_FACTS if facts.get(k) is not None}
    return LlmShape(name=name, hidden=int(facts["hidden"]), layers=int(facts["layers"]), mlp=int(facts["mlp"]),
                    heads=int(facts["heads"]), kv_heads=int(facts["kv_heads"]), gated=bool(facts["gated"]),
                    **extra)


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

"""VlmSpec: the facts of one VLM's vision path, read from its config (a preset's or a folder's config.json).

transformers' own config classes complete what a config.json leaves at its defaults (the VLM configs
nest vision_config and text_config, whose defaults differ per family), so this imports transformers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..core.hf_files import mean_std
from ..encoders.hf_config import META_KEYS, hf_spec
from ..encoders.spec import EncoderSpec
from ..errors import InputError
from .families import FAMILIES, UNGATED_TEXT, VlmFamily
from .qwen_spec import QWEN_TYPES

# What the manifest and the export output say when no image-processor file gave mean/std/size.
FAMILY_DEFAULT = "family default"

@dataclass(frozen=True)
class LlmFacts:
    """The LLM that reads the visual tokens, from the VLM's text_config (for token economics).

    `layers` counts every decoder layer; `kv_layers` only those that keep a per-token KV cache: hybrid
    LLMs mix attention with layers whose state does not grow with the prompt (LFM2's short convolutions,
    Qwen3.5's linear attention), named in text_config.layer_types. The other fields size those layers for
    the prefill FLOPs (validation/economics.py LlmShape, same names); to_dict leaves out the kinds a model
    does not have.
    """

    model_type: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    mlp: int
    gated: bool
    kv_layers: int | None = None  # None: every layer
    head_dim: int | None = None  # None: hidden / heads
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

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if not self.attn_gate:
            del d["attn_gate"]
        for kind, keys in (("conv_layers", ("conv_kernel",)), ("linear_layers", _LINEAR_DIMS)):
            if not d[kind]:
                for k in (kind, *keys):
                    del d[k]
        if d["head_dim"] is None:
            del d["head_dim"]
        return d


# text_config.linear_* of Qwen3.5 / Qwen3-Next's gated-DeltaNet layers, as LlmFacts names them.
_LINEAR_DIMS = ("linear_k_heads", "linear_k_dim", "linear_v_heads", "linear_v_dim", "linear_conv_kernel")
_LINEAR_CONFIG = ("linear_num_key_heads", "linear_key_head_dim", "linear_num_value_heads", "linear_value_head_dim",
                  "linear_conv_kernel_dim")


@dataclass(frozen=True)
class VlmSpec:
    """Everything later stages need to know about a VLM's vision path.

    Attributes:
        name: the model id the user gave (preset or `hf:<dir>`).
        family: the VlmFamily.
        tower: the vision tower's EncoderSpec (name = the model id).
        feature_layer: vision_feature_layer as the config says (index into hidden_states).
        select: `default` (CLS dropped) or `full`.
        shuffle: pixel-shuffle factor R (InternVL downsample_ratio 0.5 → 2; SmolVLM scale_factor; LFM2-VL
            downsample_factor), or None.
        pool: Gemma 3's average-pool kernel, or None.
        projector_out: channels of each token the LLM reads.
        llm: the text model's shape.
        config: the completed VLM config (`to_dict()`), from which the projector is rebuilt.
        preprocessor: the folder's image-processor settings (empty for presets and folders without them).
        preprocessor_source: the file they came from (`processor_config.json (image_processor)` or
            `preprocessor_config.json`), or `family default` when there was none.
    """

    name: str
    family: VlmFamily
    tower: EncoderSpec
    feature_layer: int
    select: str
    shuffle: int | None
    pool: int | None
    projector_out: int
    llm: LlmFacts
    config: dict[str, Any] = field(repr=False)
    preprocessor: dict[str, Any] = field(default_factory=dict, repr=False)
    preprocessor_source: str = FAMILY_DEFAULT

    @property
    def drops_row0(self) -> bool:
        """transformers' rule (LLaVA, LLaVA-OneVision, InternVL `get_image_features`): strategy `default`
        slices `[:, 1:]` off the selected hidden states whatever the tower is; families that read
        last_hidden_state (`feature` = last) never select."""
        return self.family.feature != "last" and self.select == "default"

    @property
    def drops_cls(self) -> bool:
        """Row 0 dropped and it is the tower's one CLS token: the patch grid stays whole."""
        return self.drops_row0 and self.tower.has_cls and self.tower.prefix_tokens == 1

    @property
    def drops_first_only(self) -> bool:
        """Row 0 dropped but it is not a lone CLS: a patch (SigLIP, no CLS) or the CLS in front of register
        tokens (which stay). What remains forms no patch grid, so only `--compress none` can follow."""
        return self.drops_row0 and not self.drops_cls

    @property
    def tile_chosen(self) -> bool:
        """The tile is the user's --image-size within the processor's limits (LFM2-VL, Qwen-VL), checked
        when the spec was resolved; other families' projectors were trained at one tile."""
        return self.family.model_type == "lfm2_vl" or self.family.transform == "patch_merger"

    @property
    def tower_layer(self) -> int:
        """The tower's `layer` argument: HF's hidden_states index is the same python-style index."""
        return -1 if self.family.feature == "last" else self.feature_layer

    @property
    def final_norm(self) -> bool:
        """Whether the selected features carry the tower's final norm (last_hidden_state)."""
        if self.family.feature == "last":
            return True
        if self.family.feature == "internvl":
            return self.feature_layer == -1
        return False  # hidden_states[k] is raw, even for k = −1 (tie_last_hidden_states=False in 5.x)

    def to_dict(self) -> dict[str, Any]:
        return {"family": self.family.model_type, "transformers_class": self.family.transformers_class,
                "feature": self.family.feature, "feature_layer": self.feature_layer, "select": self.select,
                "final_norm": self.final_norm, "shuffle": self.shuffle, "pool": self.pool,
                "projector_class": f"transformers.models.{self.family.module}.{self.family.projector_class}",
                "projector_out": self.projector_out, "llm": self.llm.to_dict()}


def hf_config_object(model_type: str, cfg: dict[str, Any], where: str):
    """The transformers config object of a VLM config dict (defaults completed, sub-configs validated)."""
    from transformers import AutoConfig

    clean = {k: v for k, v in cfg.items() if k not in META_KEYS and k != "model_type"}
    try:
        return AutoConfig.for_model(model_type, **clean)
    except Exception as exc:  # noqa: BLE001 - HF raises ValueError, TypeError or its own errors
        raise InputError(f"the {model_type} config in {where} is invalid ({str(exc).strip().splitlines()[-1]})",
                         "fix config.json") from exc


def _int_layer(value: Any, where: str) -> int:
    if isinstance(value, (list, tuple)):
        raise InputError(f"vision_feature_layer {list(value)} in {where} concatenates several layers",
                         "tokcomp exports one feature layer; set vision_feature_layer to one index")
    return int(value)


# layer_types entries without a per-token KV cache: LFM2 ("conv"), Qwen3.5 / Qwen3-Next ("linear_attention").
# Sliding-window and chunked attention layers do cache keys and values (up to their window).
NO_KV_LAYERS = frozenset({"conv", "linear_attention"})


def layer_kinds(text) -> list[str]:
    """The kind of each decoder layer of a text config: text_config.layer_types; LFM2's full_attn_idxs
    (the rest "conv") when layer_types is absent; every layer "full_attention" otherwise."""
    n = int(text.num_hidden_layers)
    types = getattr(text, "layer_types", None)
    if types:
        return [str(t) for t in list(types)[:n]]
    idxs = getattr(text, "full_attn_idxs", None)
    if idxs is not None:
        keep = set(int(i) for i in idxs)
        return ["full_attention" if i in keep else "conv" for i in range(n)]
    return ["full_attention"] * n


def kv_cache_layers(text) -> int:
    """Decoder layers of a text config that keep a KV cache (layer_kinds not in NO_KV_LAYERS)."""
    return sum(1 for t in layer_kinds(text) if t not in NO_KV_LAYERS)


# Text models whose attention q_proj also writes a per-head sigmoid output gate (twice its width).
GATED_ATTENTION_TEXT = frozenset({"qwen3_5_text", "qwen3_next"})


def _mixer_facts(text, mt: str) -> dict[str, Any]:
    """head_dim, the output gate and the conv / linear-attention layers' sizes (for the prefill FLOPs)."""
    kinds = layer_kinds(text)
    out: dict[str, Any] = {"attn_gate": mt in GATED_ATTENTION_TEXT}
    hd = getattr(text, "head_dim", None)
    if hd and int(hd) * int(text.num_attention_heads) != int(text.hidden_size):
        out["head_dim"] = int(hd)  # recorded only where it is not hidden / heads (Qwen3.5-27B, Gemma 3)
    if "conv" in kinds:
        out.update(conv_layers=kinds.count("conv"), conv_kernel=int(text.conv_L_cache))
    if "linear_attention" in kinds:
        out["linear_layers"] = kinds.count("linear_attention")
        out.update({mine: int(getattr(text, theirs)) for mine, theirs in zip(_LINEAR_DIMS, _LINEAR_CONFIG)})
    return out


def llm_facts(text) -> LlmFacts:
    """The LlmFacts of a text config (a VLM's text_config, completed by transformers' config class)."""
    heads = int(text.num_attention_heads)
    kv = int(getattr(text, "num_key_value_heads", None) or heads)
    mt = str(getattr(text, "model_type", ""))
    mlp = int(text.intermediate_size)
    if getattr(text, "block_auto_adjust_ff_dim", False):
        # LFM2's MLP is not intermediate_size wide: Lfm2MLP shrinks it to 2/3, × multiplier, rounded up.
        mlp = int(2 * mlp / 3)
        if getattr(text, "block_ffn_dim_multiplier", None) is not None:
            step = int(text.block_multiple_of)
            mlp = step * ((int(text.block_ffn_dim_multiplier * mlp) + step - 1) // step)
    return LlmFacts(model_type=mt, hidden=int(text.hidden_size), layers=int(text.num_hidden_layers), heads=heads,
                    kv_heads=kv, mlp=mlp, gated=mt not in UNGATED_TEXT, kv_layers=kv_cache_layers(text),
                    **_mixer_facts(text, mt))


def vlm_spec(name: str, model_type: str, cfg: dict[str, Any], preprocessor: dict[str, Any] | None,
             source: str, where: str, preprocessor_file: str = "",
             image_size: tuple[int, int] | None = None) -> VlmSpec:
    """Resolve a VLM config dict into a VlmSpec.

    Args:
        name: the model id (preset name or `hf:<dir>`).
        model_type: the VLM `model_type` (a key of FAMILIES).
        cfg: config.json contents (or a preset's equivalent).
        preprocessor: the image processor's settings, if any (mean/std override the family's).
        source: `transformers` (preset) or `hf-local`.
        where: what to name in error messages.
        preprocessor_file: the file `preprocessor` came from (read_image_processor_config).
        image_size: the tile (H, W) for families whose tile is chosen (LFM2-VL: lfm2.py checks it);
            None for the family's default.
    """
    fam = FAMILIES[model_type]
    conf = hf_config_object(model_type, cfg, where)
    vision, text = conf.vision_config, conf.text_config
    vision_type = vision.model_type
    vhf = {k: v for k, v in vision.to_dict().items()
           if k not in META_KEYS and k != "model_type" and not k.startswith("_")}
    if vision_type == "siglip_vision_model":
        vhf["vision_use_head"] = False  # VLMs read tokens; the pooling head is never run
    mean, std = fam.mean_std
    pre = dict(preprocessor or {})
    if pre:
        mean, std = mean_std(pre, mean, std, preprocessor_file or where)
    if vision_type == "siglip2_vision_model":
        # SigLIP2 NaFlex has no image size of its own: the tile is what the processor makes (lfm2.py).
        from ..encoders.siglip2_tower import siglip2_spec
        from .lfm2 import lfm2_tiling
        from .tile_rule import choose_tile

        tiling = lfm2_tiling(pre, cfg, int(vhf["patch_size"]), int(getattr(conf, "downsample_factor", 1)))
        tower = siglip2_spec(name, source, vhf, choose_tile(name, tiling, image_size), mean, std)
    elif model_type in QWEN_TYPES:
        # The tile is chosen within the processor's pixel limits; the grid tables are built for it (qwen_spec.py).
        from .qwen_spec import qwen_encoder_spec, qwen_rule, qwen_shape
        from .tile_rule import choose_tile

        qshape = qwen_shape(model_type, vision)
        tile = choose_tile(name, qwen_rule(model_type, qshape, pre, cfg), image_size)
        tower = qwen_encoder_spec(name, source, model_type, qshape, vhf, tile, mean, std)
    else:
        tower = hf_spec(name, source, vision_type, vhf, mean, std)
    feature_layer = _int_layer(getattr(conf, "vision_feature_layer", -1), where)
    # The config class's own default when config.json has no key (LlavaConfig: "default", even for a SigLIP
    # tower; LlavaOnevisionConfig: "full"), as get_image_features reads it from the config.
    select = str(getattr(conf, "vision_feature_select_strategy", "full"))
    if fam.feature == "last":
        feature_layer, select = -1, "full"
    shuffle = pool = None
    if fam.model_type == "internvl":
        ratio = float(conf.downsample_ratio)
        shuffle = round(1 / ratio)
        if abs(shuffle * ratio - 1) > 1e-9:
            raise InputError(f"downsample_ratio {ratio} in {where} is not 1/R for an integer R",
                             "InternVL checkpoints use 0.5")
    elif fam.model_type == "lfm2_vl":
        shuffle = int(conf.downsample_factor)
    elif fam.transform == "patch_merger":
        shuffle = qshape.merge  # the merger concatenates merge×merge neighbours, as a pixel unshuffle does
    elif fam.transform == "pixel_shuffle":
        shuffle = int(conf.scale_factor)
    elif fam.transform == "avg_pool":
        per_side = tower.grid[0]
        tokens_side = round(int(conf.mm_tokens_per_image) ** 0.5)
        pool = per_side // tokens_side
    if fam.model_type == "paligemma":
        out = int(vision.projection_dim)
    elif fam.transform == "patch_merger":
        out = qshape.out
    else:
        out = int(text.hidden_size)
    return VlmSpec(name=name, family=fam, tower=tower, feature_layer=feature_layer, select=select,
                   shuffle=shuffle, pool=pool, projector_out=out, llm=llm_facts(text), config=conf.to_dict(),
                   preprocessor=pre, preprocessor_source=preprocessor_file if pre else FAMILY_DEFAULT)

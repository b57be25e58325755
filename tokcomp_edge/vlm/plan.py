"""The token arithmetic of a VLM vision path: tower → select → extra compression → VLM transform → projector.

Pure Python: every impossible combination (pruning before a pixel shuffle, a pooled grid the shuffle
factor no longer divides, a kept CLS where the projector expects none) fails here, before any model is
built, with one line naming the numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..compression.plan import CompressionPlan, plan_compression
from ..compression.spec import CompressionSpec
from ..errors import SpecError
from .spec import VlmSpec


@dataclass(frozen=True)
class Stage:
    """One step of the chain: its label and the tokens × channels after it."""

    label: str
    tokens: int
    dim: int

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "tokens": self.tokens, "dim": self.dim}


@dataclass(frozen=True)
class VlmPlan:
    """Exact shapes of one VLM vision path export.

    Attributes:
        vlm: the VlmSpec.
        compression: the extra compressor's plan on the selected features.
        projector: whether the projector is part of the export (False with --no-projector).
        video: LLaVA-OneVision's per-frame video path (`get_video_features`: bilinear pooling to
            ⌈h/2⌉×⌈w/2⌉ after the projector).
        stages: the chain, tower output first.
        native_tokens: tokens per tile the VLM itself gives its LLM (no extra compression).
        tokens_out, dim_out: what the bundle outputs per tile.
        grid_out: the output tokens' grid (None after pruning).
        extra_outputs: outputs after `tokens` that the VLM itself makes (Qwen3-VL's `deepstack_<i>`),
            before the compressor's own (indices, merge_map).
    """

    vlm: VlmSpec
    compression: CompressionPlan
    projector: bool
    video: bool
    stages: tuple[Stage, ...]
    native_tokens: int
    tokens_out: int
    dim_out: int
    grid_out: tuple[int, int] | None
    extra_outputs: tuple[str, ...] = ()

    @property
    def arithmetic(self) -> str:
        """`577 → drop CLS → 576 → pool:2 → 144 → mlp → 144 × 4096`."""
        parts = [str(self.stages[0].tokens)]
        for s in self.stages[1:]:
            parts += [s.label, str(s.tokens)]
        return " → ".join(parts) + f" × {self.dim_out}"

    def to_dict(self) -> dict[str, Any]:
        d = self.vlm.to_dict()
        d.update({"projector": self.projector, "video": self.video, "native_tokens_per_tile": self.native_tokens,
                  "tokens_per_tile": self.tokens_out, "dim_out": self.dim_out,
                  "grid_out": list(self.grid_out) if self.grid_out else None,
                  "arithmetic": self.arithmetic, "stages": [s.to_dict() for s in self.stages],
                  "tile": _tile(self.vlm)})
        from .processor_record import processor_record, prompt_record

        d["processor"] = processor_record(self.vlm)
        d["prompt"] = prompt_record(self.vlm, self.native_tokens)
        if self.vlm.family.transform == "patch_merger":
            d["qwen"] = _qwen_section(self)
        return d


# preprocessor_config.json fields that say how an image becomes tiles (what --batch-max must cover).
_TILE_KEYS = ("image_processor_type", "size", "crop_size", "max_image_size", "do_image_splitting",
              "crop_to_patches", "min_patches", "max_patches", "image_grid_pinpoints", "do_pan_and_scan",
              "pan_and_scan_max_num_crops", "resample", "min_image_tokens", "max_image_tokens", "tile_size",
              "max_tiles", "use_thumbnail")


def _tile(vlm: VlmSpec) -> dict[str, Any]:
    from .tiles import tiles_per_request

    pre = {k: vlm.preprocessor[k] for k in _TILE_KEYS if k in vlm.preprocessor}
    return {"image_size": list(vlm.tower.image_size), "preprocessor": pre,
            "preprocessor_source": vlm.preprocessor_source, **tiles_per_request(vlm).to_dict()}


def _qwen_section(plan: VlmPlan) -> dict[str, Any]:
    """What the LLM side needs to place one tile's tokens: the grid its M-RoPE is given (after any extra grid
    compression; get_rope_index divides it by the merge size), and which outputs are DeepStack features."""
    from .qwen_spec import image_grid_thw

    grid = plan.compression.grid_out
    return {"image_grid_thw": image_grid_thw(grid), "merge_size": plan.vlm.shuffle,
            "llm_tokens": (grid[0] // plan.vlm.shuffle) * (grid[1] // plan.vlm.shuffle),
            "deepstack_outputs": list(plan.extra_outputs),
            "deepstack_visual_indexes": list(plan.vlm.config["vision_config"].get("deepstack_visual_indexes") or [])
            if plan.extra_outputs else []}


def _transform_label(vlm: VlmSpec) -> str:
    if vlm.shuffle:
        what = {"lfm2_vl": "pixel unshuffle", "patch_merger": "patch merger"}.get(  # each VLM's own name
            vlm.family.model_type if vlm.family.model_type == "lfm2_vl" else vlm.family.transform, "pixel shuffle")
        return f"{what} {vlm.shuffle}×{vlm.shuffle}"
    return f"avg pool {vlm.pool}×{vlm.pool}"


def _projector_label(vlm: VlmSpec) -> str:
    return {"llava": "mlp", "llava_onevision": "mlp", "internvl": "mlp1", "idefics3": "linear",
            "smolvlm": "linear", "gemma3": "rmsnorm+proj", "paligemma": "linear",
            "qwen2_vl": "layernorm+mlp", "qwen2_5_vl": "rmsnorm+mlp", "qwen3_vl": "layernorm+mlp",
            "qwen3_5": "layernorm+mlp",
            "lfm2_vl": "layernorm+mlp" if vlm.config.get("projector_use_layernorm", True) else "mlp",
            }[vlm.family.model_type]


# Methods whose output tokens are scattered over the grid (no grid_out).
SCATTERED = ("prune", "visionzip", "tome")


def _check_first_only(vlm: VlmSpec, spec: CompressionSpec, prefix: str | None, video: bool) -> None:
    """`default` drops row 0 of a tower whose row 0 is no lone CLS (transformers slices [:, 1:] whatever the
    tower): the export matches that, but nothing that needs the patch grid or the prefix can follow."""
    tower = vlm.tower
    row0 = "patch 0 (the tower has no CLS)" if not tower.prefix_tokens else \
        f"the CLS token and keeps its {tower.prefix_tokens - 1} register token(s)"
    where = f"{vlm.name}: vision_feature_select_strategy 'default' drops {row0}, as transformers does"
    if spec.method != "none":
        raise SpecError(f"{spec.text} cannot apply to {where}; the {tower.prefix_tokens + tower.grid[0] * tower.grid[1] - 1} "
                        "tokens left form no patch grid",
                        "export with --compress none, or set vision_feature_select_strategy \"full\" in config.json "
                        "if the checkpoint was trained on every token")
    if prefix is not None:
        raise SpecError(f"--prefix {prefix} cannot apply to {where}", "leave --prefix unset")
    if video:
        raise SpecError(f"--video cannot apply to {where}: the video pooling resizes the full patch grid "
                        "(transformers' apply_pooling fails on it too)", "drop --video")


def plan_vlm(vlm: VlmSpec, spec: CompressionSpec, prefix: str | None, projector: bool = True,
             video: bool = False) -> VlmPlan:
    """Check that `spec` fits the VLM's own transform and compute every shape.

    Args:
        vlm: the VLM's facts.
        spec: the extra compression (`none` for the VLM as published).
        prefix: the user's --prefix, or None for the VLM's own select strategy.
        projector: include the projector (and any reduction inside it).
        video: LLaVA-OneVision's video frame path (pooling after the projector).
    Raises:
        SpecError (exit 2) for combinations the VLM's transform or projector cannot take.
    """
    tower = vlm.tower
    if vlm.drops_first_only:
        _check_first_only(vlm, spec, prefix, video)
    if vlm.family.transform == "patch_merger":
        from .qwen_spec import check_qwen_compression

        check_qwen_compression(vlm.name, spec.method, spec.text)
    if vlm.family.model_type == "llava_onevision" and spec.method in SCATTERED and not video:
        raise SpecError(f"{spec.text} keeps scattered tokens, but {vlm.name} (LLaVA-OneVision) packs each crop's "
                        "features as a grid (pack_image_features: unpadding, a newline token per row)",
                        "use a grid compression (pool:S or bilinear:HxW) with LLaVA-OneVision")
    own = "drop" if vlm.drops_cls or not tower.prefix_tokens else "keep"
    if prefix is not None and prefix != own and tower.prefix_tokens:
        why = "drops" if own == "drop" else "keeps"
        raise SpecError(f"--prefix {prefix} contradicts {vlm.name}: its vision_feature_select_strategy "
                        f"'{vlm.select}' {why} the {tower.prefix_tokens} CLS token(s) its projector was trained on",
                        f"leave --prefix unset (or use --prefix {own})")
    from ..encoders.tower import resolve_layer

    comp = plan_compression(spec, grid=tower.grid, prefix_tokens=tower.prefix_tokens, has_cls=tower.has_cls,
                            hidden_size=tower.hidden_size, prefix=own,
                            layers=resolve_layer(vlm.tower_layer, tower.num_layers))
    h, w = tower.grid
    stages = [Stage("tower", tower.prefix_tokens + h * w, tower.hidden_size)]
    if own == "drop" and tower.prefix_tokens:
        stages.append(Stage("drop CLS", h * w, tower.hidden_size))
    if vlm.drops_first_only:
        what = "drop patch 0" if not tower.prefix_tokens else "drop CLS (registers kept)"
        stages.append(Stage(f"{what}, select default", tower.prefix_tokens + h * w - 1, tower.hidden_size))
    if spec.method != "none":
        stages.append(Stage(spec.text, comp.tokens_out, comp.dim_out))
    if comp.dim_out != tower.hidden_size:
        raise SpecError(f"{spec.text} makes {comp.dim_out}-channel tokens, but {vlm.name}'s projector takes "
                        f"{tower.hidden_size} channels", "use a compression that keeps the width (pool, "
                        "bilinear, prune) with a VLM")
    factor = vlm.shuffle or vlm.pool
    grid = None if vlm.drops_first_only else comp.grid_out
    transform_runs = factor and (projector or not vlm.family.transform_in_projector)
    native = h * w + (tower.prefix_tokens if own == "keep" else 0) - (1 if vlm.drops_first_only else 0)
    if factor:
        native = (h // factor) * (w // factor)
    if transform_runs:
        what = _transform_label(vlm)
        if grid is None:
            raise SpecError(f"{spec.text} keeps {comp.tokens_out} scattered tokens, but {vlm.name} applies a "
                            f"{what} that needs a full grid", "use pool:S or bilinear:HxW before a grid transform")
        if grid[0] % factor or grid[1] % factor:
            raise SpecError(f"{spec.text} leaves a {grid[0]}x{grid[1]} grid, which {vlm.name}'s {what} "
                            f"(factor {factor}) does not divide",
                            f"pick a compression whose grid is a multiple of {factor} (e.g. bilinear:"
                            f"{max(factor, grid[0] // factor * factor)}x{max(factor, grid[1] // factor * factor)})")
        if comp.prefix_out and prefix is None:
            # Nothing the user passed keeps the CLS: the config's own select strategy does, and transformers'
            # get_image_features cannot run it either (its reshape to a square grid before the shuffle).
            raise SpecError(f"{vlm.name}'s vision_feature_select_strategy '{vlm.select}' keeps "
                            f"{comp.prefix_out} CLS token(s) beside the {grid[0]}x{grid[1]} patch grid, which its "
                            f"{what} cannot take (transformers' get_image_features fails on "
                            f"{comp.tokens_out} tokens too)",
                            "set vision_feature_select_strategy \"default\" in config.json (drops the CLS, as "
                            "published InternVL checkpoints do)")
        if comp.prefix_out:
            raise SpecError(f"{vlm.name}'s {what} cannot take the {comp.prefix_out} prefix token(s) "
                            f"--prefix keep leaves", "leave --prefix unset")
        grid = (grid[0] // factor, grid[1] // factor)
        dim = tower.hidden_size * (factor * factor if vlm.shuffle else 1)
        stages.append(Stage(what, grid[0] * grid[1], dim))
    tokens, dim = stages[-1].tokens, stages[-1].dim
    if projector:
        dim = vlm.projector_out
        stages.append(Stage(_projector_label(vlm), tokens, dim))
    if video:
        if vlm.family.model_type != "llava_onevision":
            raise SpecError(f"--video is LLaVA-OneVision's frame path; {vlm.name} is {vlm.family.model_type}",
                            "drop --video (frames of other VLMs are tiles: export as usual)")
        if not projector:
            raise SpecError("--video pools after the projector, so it cannot go with --no-projector",
                            "drop one of them")
        if grid is None:
            raise SpecError(f"{spec.text} keeps scattered tokens, but LLaVA-OneVision's video pooling resizes a grid",
                            "use pool:S or bilinear:HxW with --video")
        grid = (-(-grid[0] // 2), -(-grid[1] // 2))
        stages.append(Stage(f"video pooling bilinear {grid[0]}x{grid[1]}", grid[0] * grid[1], dim))
        native = (-(-h // 2)) * (-(-w // 2))
        tokens = grid[0] * grid[1]
    extra = ()
    if vlm.family.model_type == "qwen3_vl" and projector:
        from .qwen_spec import deepstack_outputs

        extra = deepstack_outputs(vlm.config["vision_config"].get("deepstack_visual_indexes") or ())
    return VlmPlan(vlm=vlm, compression=comp, projector=projector, video=video, stages=tuple(stages),
                   native_tokens=native, tokens_out=tokens, dim_out=dim, grid_out=grid, extra_outputs=extra)

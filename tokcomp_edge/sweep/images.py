"""One image as a candidate's LLM input: tiled as the deployed runtime tiles it, each candidate's PyTorch vision
path on the tiles, then the family's post-processing and layout by the function the runtime applies to the
engine's outputs (runtime/postprocess.py).

- Tiles: runtime/tiling.py's `tile_image` with the ProcessorParams that vlm/processor_record.py derives from
  the hf: folder — the very record an export writes into the manifest, so no export is needed and the sweep
  feeds the vision path the tiles the device runtime will feed the engine.
- Features: the candidate's vision path (`vlm.path.vision_path`, the module the export traces) on those
  tiles; LLaVA-OneVision's tiles packed with `pack_image_features` (base grid, unpadded crops, the learned
  image_newline, the bilinear downscale above anyres_max), every other family's tiles concatenated in the
  processor's tile order; Qwen3-VL's DeepStack outputs kept beside them.
- Layout: runtime/layout.py's `image_layout` on the candidate's own manifest section (VlmPlan.to_dict, as the
  export records it): the placeholder text for its token count, and for Qwen the REDUCED image_grid_thw that
  the LLM's get_rope_index turns into M-RoPE positions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import CheckFailed

if TYPE_CHECKING:  # pragma: no cover
    from ..runtime.layout import ImageLayout
    from ..runtime.processor import ProcessorParams
    from ..runtime.tiling import TiledImage
    from ..vlm.plan import VlmPlan
    from ..vlm.spec import VlmSpec


@dataclass
class ImageInput:
    """What one candidate gives the LLM for one image.

    Attributes:
        features: torch [tokens, D] float32, the rows that replace the layout's image tokens, in order.
        layout: the runtime's ImageLayout for them (prompt text, counts, image_grid_thw for Qwen).
        deepstack: Qwen3-VL: per DeepStack layer [tokens, D], added to the LLM's hidden states at the image
            positions (deepstack_visual_embeds); [] elsewhere.
    """

    features: Any
    layout: ImageLayout
    deepstack: list[Any] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        return int(self.features.shape[0])


def processor_params(vlm: VlmSpec) -> ProcessorParams:
    """The runtime's ProcessorParams for an hf: folder, from the record the export would write (JSON round
    trip included, so the values are the ones a bundle's manifest gives the runtime)."""
    import json

    from ..runtime.processor import ProcessorParams
    from ..vlm.processor_record import processor_record

    return ProcessorParams.from_dict(json.loads(json.dumps(processor_record(vlm))))


def candidate_manifest(plan: VlmPlan, name: str) -> dict[str, Any]:
    """The parts of a bundle manifest that image_layout reads, as the export would write them for `plan`."""
    import json

    return json.loads(json.dumps({"name": name, "tokens_out": plan.tokens_out, "vlm": plan.to_dict()}))


def tile(image, params: ProcessorParams) -> TiledImage:
    """An RGB image (PIL / HWC uint8 / path) cut into the runtime's tiles."""
    from ..runtime.runtime import load_image
    from ..runtime.tiling import tile_image

    return tile_image(load_image(image), params)


class CandidateImages:
    """One candidate's vision path plus its family post-processing: `encode(tiled)` → ImageInput.

    Args:
        path: the candidate's vision path module (eval).
        plan: its VlmPlan (output names, grid, manifest section).
        spec: its spec text (the manifest name).
        params: the folder's ProcessorParams.
        newline: LLaVA-OneVision's image_newline [D] (float32 numpy); None elsewhere.
    """

    def __init__(self, path, plan: VlmPlan, spec: str, params: ProcessorParams, newline: np.ndarray | None = None):
        self.path, self.plan, self.spec, self.params, self.newline = path, plan, spec, params, newline
        self.manifest = candidate_manifest(plan, spec)
        self.family = plan.vlm.family.model_type
        # The path's outputs after `tokens`, by name: Qwen3-VL's DeepStack first, then a compressor's own.
        self.extra = list(plan.extra_outputs)

    def encode(self, tiled: TiledImage) -> ImageInput:
        import torch

        from ..runtime.postprocess import image_embedding

        with torch.no_grad():
            out = self.path(torch.from_numpy(np.ascontiguousarray(tiled.pixels)))
        tokens, *rest = out if isinstance(out, tuple) else (out,)
        deep = [o for name, o in zip(self.extra, rest) if name.startswith("deepstack_")]
        grid_out = self.manifest["vlm"].get("grid_out")
        if self.params.rule == "anyres" and not grid_out:
            raise CheckFailed(f"{self.spec} on LLaVA-OneVision keeps no token grid, which its packing needs",
                              "sweep a grid-keeping compression (pool, bilinear, unshuffle) or none")
        # The runtime's own post-processing and layout, on the PyTorch tokens (float32 numpy, as an engine's).
        emb, layout = image_embedding(tiled, tokens.float().numpy(), self.params, self.manifest, grid_out,
                                      self.newline, f"{self.spec}'s vision path")
        feats = torch.from_numpy(emb)
        return ImageInput(features=feats, layout=layout, deepstack=[d.reshape(-1, d.shape[-1]) for d in deep])


def onevision_newline(vlm: VlmSpec, model_id: str) -> np.ndarray | None:
    """LLaVA-OneVision's learned image_newline, read from the checkpoint as the export writes it into the
    bundle (float32, whatever dtype the LLM is loaded in); None for other families."""
    from ..vlm.newline import image_newline

    found = image_newline(vlm, model_id, None, 0)
    return None if found is None else found[0]

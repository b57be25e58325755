"""ProcessorParams: what the device needs to cut an image into the engine's tiles as the VLM's processor does.

Read from the bundle (manifest["vlm"]["processor"], written at export by vlm/processor_record.py, which says
where each value comes from and which processor overrides of the saved file it follows). Torch-free.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ..errors import BundleError

RULES = ("single", "crop_to_patches", "split", "anyres")
REEXPORT = "re-export the bundle with this tokcomp-edge (older bundles record no processor section)"


@dataclass(frozen=True)
class ProcessorParams:
    """One family's tiling and normalisation (see vlm/processor_record.py for the sources).

    Attributes:
        family: the VLM's model_type.
        rule: `single` (one tile per image: llava, paligemma, gemma3, qwen*, lfm2_vl), `crop_to_patches`
            (InternVL), `split` (Idefics3/SmolVLM), `anyres` (LLaVA-OneVision).
        tile: (H, W) the engine takes.
        mean, std, rescale_factor (None: no rescale), do_normalize: the normalisation, as transformers'
            PIL backend does it (float64 rescale cast to float32, then (x − mean) / std in float32).
        resample: the PIL filter number of every resize.
        do_convert_rgb: alpha over white, then RGB (transformers' convert_to_rgb).
        frame: the one-tile framing policy (manifest["preprocess"] form): `single` tiles, Gemma 3's crops.
        size, min_patches, max_patches, use_thumbnail: InternVL (size = the tile; thumbnail last when > 1 tile).
        do_resize, longest_edge, max_image_size, do_image_splitting: Idefics3/SmolVLM.
        patch_size, image_grid_pinpoints, model_grid_pinpoints, vision_aspect_ratio: LLaVA-OneVision
            (model_grid_pinpoints / vision_aspect_ratio: config.json's, for pack_image_features).
        do_pad, pad_background: LLaVA's pad-to-square (mean colour) / OneVision's multi-image reading.
        do_pan_and_scan, pan_and_scan_*: Gemma 3 (off: Gemma3Processor passes False unless asked).
    """

    family: str
    rule: str
    tile: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    rescale_factor: float | None = 1 / 255
    do_normalize: bool = True
    resample: int = 3
    do_convert_rgb: bool = True
    frame: dict[str, Any] = field(default_factory=dict, repr=False)
    processor_class: str = ""
    source: str = ""
    size: tuple[int, int] | None = None
    min_patches: int = 1
    max_patches: int = 12
    use_thumbnail: bool = True
    do_resize: bool = True
    longest_edge: int | None = None
    max_image_size: int | None = None
    do_image_splitting: bool = True
    patch_size: int | None = None
    image_grid_pinpoints: tuple[tuple[int, int], ...] = ()
    model_grid_pinpoints: tuple[tuple[int, int], ...] = ()
    vision_aspect_ratio: str = ""
    do_pad: bool = False
    pad_background: tuple[int, int, int] = (0, 0, 0)
    do_pan_and_scan: bool = False
    pan_and_scan_min_crop_size: int = 256
    pan_and_scan_max_num_crops: int = 4
    pan_and_scan_min_ratio_to_activate: float = 1.2

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (tuples as lists)."""
        def plain(v):
            if isinstance(v, tuple):
                return [plain(x) for x in v]
            return v

        return {k: plain(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ProcessorParams:
        """The params of a manifest["vlm"]["processor"] dict (unknown keys ignored: notes, saved flags).

        Raises:
            BundleError: a rule this version does not know, or a missing key.
        """
        rule = d.get("rule")
        if rule not in RULES:
            raise BundleError(f"the manifest's vlm.processor.rule {rule!r} is not one of {', '.join(RULES)}",
                              "upgrade tokcomp-edge to the version that exported the bundle")
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        try:
            for key in ("tile", "size"):
                if kw.get(key) is not None:
                    kw[key] = (int(kw[key][0]), int(kw[key][1]))
            for key in ("mean", "std", "pad_background"):
                if key in kw:
                    kw[key] = tuple(kw[key])
            for key in ("image_grid_pinpoints", "model_grid_pinpoints"):
                if key in kw:
                    kw[key] = tuple((int(h), int(w)) for h, w in kw[key])
            return cls(**kw)
        except (TypeError, ValueError, IndexError) as exc:
            raise BundleError(f"the manifest's vlm.processor section cannot be read ({exc})", REEXPORT) from exc

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> ProcessorParams:
        """The params a VLM bundle recorded.

        Raises:
            BundleError: the bundle is no VLM bundle, or was exported before the processor was recorded.
        """
        vlm = manifest.get("vlm")
        name = manifest.get("name", "the bundle")
        if not vlm:
            raise BundleError(f"{name} is a bare tower bundle: it records no VLM processor to tile images with",
                              "export a VLM (hf:<folder> or a VLM preset) to use the runtime's tiling")
        if not vlm.get("processor"):
            raise BundleError(f"{name} records no vlm.processor section", REEXPORT)
        return cls.from_dict(vlm["processor"])

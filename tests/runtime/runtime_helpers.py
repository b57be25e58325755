"""Tiny VLM folders with a saved image processor (as a real checkpoint has one), exported once per module, and
transformers' full reference path for one image: the processor (PIL backend, the folder's own config, called
with what the family's Processor passes) → get_image_features → the model's own post-processing."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "vlm"))

from vlm_helpers import build_vlm, save_vlm  # noqa: E402

PHOTOS = Path(__file__).resolve().parents[1] / "calibration" / "photos"
# Different sizes and aspect ratios: landscape, portrait, wide, square, tiny (upscaled).
PHOTO_NAMES = ("chelsea-cat-300x200.jpg", "rocket-200x300.jpg", "hubble-400x180.jpg", "astronaut-face-96x64.jpg")
# LLaVA-OneVision at the 128 px tile: grid pinpoints that keep tile counts small, and anyres_max_2 so that
# both packing branches run (downscaled above ratio 1.1, as it is for the larger photos; kept for the tiny one).
OV_PINS = [[128, 128], [128, 256], [256, 128], [256, 256], [128, 384], [384, 128], [256, 384], [384, 256]]
CONFIG_OVER = {"llava_onevision": {"image_grid_pinpoints": OV_PINS, "vision_aspect_ratio": "anyres_max_2"}}


def photos(names=PHOTO_NAMES) -> list[Path]:
    return [PHOTOS / n for n in names]


def image_processor(family: str):
    """The image processor a checkpoint of this family would save, at the tiny models' 128 px tile."""
    import transformers as T

    tile = {"height": 128, "width": 128}
    if family == "llava":
        return T.CLIPImageProcessor(size={"shortest_edge": 128}, crop_size=tile)
    if family == "paligemma":
        return T.SiglipImageProcessor(size=tile)
    if family == "gemma3":
        return T.Gemma3ImageProcessor(size=tile)
    if family == "internvl":
        # -hf checkpoints save crop_to_patches false; InternVLProcessor passes True (the reference does too).
        return T.GotOcr2ImageProcessor(size=tile, crop_to_patches=False, min_patches=1, max_patches=6)
    if family in ("idefics3", "smolvlm"):
        cls = T.Idefics3ImageProcessor if family == "idefics3" else T.SmolVLMImageProcessor
        return cls(size={"longest_edge": 256}, max_image_size={"longest_edge": 128}, do_image_splitting=True)
    if family == "llava_onevision":
        return T.LlavaOnevisionImageProcessor(size=tile, crop_size=tile, image_grid_pinpoints=OV_PINS)
    raise KeyError(family)


def make_folder(family: str, root: Path):
    """(folder, model): the tiny VLM saved with its image processor's preprocessor_config.json."""
    model = build_vlm(family, **CONFIG_OVER.get(family, {}))
    folder = save_vlm(model, root / family)
    image_processor(family).save_pretrained(folder)
    return folder, model


# Export options per family in every test's bundle: llava also carries the nhwc variant (uint8 frames in).
EXPORT_KW = {"llava": {"variants": ("nhwc",)}}


def export(folder: Path, out: Path, compress: str = "none", **kw):
    from tokcomp_edge.export import ExportConfig, export_bundle

    kw = {"batch_max": 4, **EXPORT_KW.get(folder.name, {}), **kw}
    return export_bundle(ExportConfig(model=f"hf:{folder}", compress=compress, out=out, quiet=True, **kw))


# What each family's Processor passes to its image processor on every call (processing_<family>.py).
_CALL_KW = {"internvl": {"crop_to_patches": True}, "gemma3": {"do_pan_and_scan": False}}


def reference(family: str, folder: Path, model, image_path: Path) -> np.ndarray:
    """transformers' features for one image alone: [tokens, llm_hidden], exactly what the VLM splices in."""
    import torch
    from transformers import AutoImageProcessor

    from tokcomp_edge.calibration.images import load_rgb

    proc = AutoImageProcessor.from_pretrained(folder, backend="pil")
    image = load_rgb(image_path)
    batch = proc(images=[image], return_tensors="pt", **_CALL_KW.get(family, {}))
    with torch.no_grad():
        if family == "llava_onevision":
            out = model.get_image_features(batch["pixel_values"], image_sizes=batch["image_sizes"],
                                           batch_num_images=torch.tensor([1])).pooler_output
            return out[0].numpy()
        if family in ("idefics3", "smolvlm"):
            out = model.get_image_features(batch["pixel_values"],
                                           pixel_attention_mask=batch.get("pixel_attention_mask")).pooler_output
        else:
            out = model.get_image_features(batch["pixel_values"]).pooler_output
    feats = torch.stack(list(out)) if isinstance(out, (list, tuple)) else out
    return feats.reshape(-1, feats.shape[-1]).numpy()


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    """max |a − b| / max |b| (the export's parity scale)."""
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))

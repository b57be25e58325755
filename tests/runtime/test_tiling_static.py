"""Qwen-VL and LFM2-VL bundles run at one static tile: the runtime resizes each image to it (the family's
filter) and normalises as the processor does. transformers' own processors, given the photo resized to the
tile (which their smart_resize then keeps), produce the same pixels — compared in their flattened patch form."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import rt_helpers as H  # noqa: E402

from tokcomp_edge.runtime.layout import image_layout  # noqa: E402
from tokcomp_edge.runtime.processor import ProcessorParams  # noqa: E402
from tokcomp_edge.runtime.tiling import tile_image  # noqa: E402

pytest.importorskip("transformers")


def _manifest(preset: str, tile: tuple[int, int]) -> dict:
    from tokcomp_edge.compression.spec import parse_spec
    from tokcomp_edge.vlm.build import resolve_vlm
    from tokcomp_edge.vlm.plan import plan_vlm

    plan = plan_vlm(resolve_vlm(preset, image_size=tile), parse_spec("none"), None)
    return {"name": preset, "tokens_out": plan.tokens_out, "vlm": plan.to_dict()}


def test_qwen_static_tile_equals_qwen2vl_processor():
    from PIL import Image
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    manifest = _manifest("tiny-qwen2.5-vl", (112, 168))
    params = ProcessorParams.from_manifest(manifest)
    assert params.rule == "single" and params.tile == (112, 168) and params.resample == 3
    area = 112 * 168
    proc = Qwen2VLImageProcessorPil(patch_size=14, merge_size=2, temporal_patch_size=2,
                                    size={"shortest_edge": 28 * 28, "longest_edge": 4 * area})
    flat = Qwen2VLImageProcessorPil(patch_size=14, merge_size=2, temporal_patch_size=2, do_resize=False,
                                    do_rescale=False, do_normalize=False, do_convert_rgb=False)
    for path in H.PHOTOS[:4]:
        image = H.photo(path)
        ours = tile_image(image, params)
        ref = proc(images=image.convert("RGB").resize((168, 112), Image.BICUBIC), return_tensors="np")
        assert list(ref["image_grid_thw"][0]) == [1, 8, 12]
        mine = flat(images=[ours.pixels[0]], return_tensors="np", input_data_format="channels_first")
        assert np.abs(mine["pixel_values"] - ref["pixel_values"]).max() <= 1e-6
        lay = image_layout(ours, manifest)
        assert lay.prompt == "<|vision_start|>" + "<|image_pad|>" * 24 + "<|vision_end|>"
        assert lay.token_ids == [manifest["vlm"]["prompt"]["tokens"]["start"]["id"]] + [5] * 24 + \
            [manifest["vlm"]["prompt"]["tokens"]["end"]["id"]]


def test_lfm2_static_tile_equals_lfm2_processor():
    from PIL import Image
    from transformers import Lfm2VlImageProcessor

    manifest = _manifest("tiny-lfm2-vl", (128, 128))
    params = ProcessorParams.from_manifest(manifest)
    assert params.rule == "single" and params.resample == 2  # LFM2-VL resizes bilinearly
    # Lfm2VlImageProcessor has no PIL backend; a photo already at the tile is not resized by either side.
    proc = Lfm2VlImageProcessor(encoder_patch_size=16, downsample_factor=2, min_image_tokens=1,
                                max_image_tokens=64, tile_size=128, do_image_splitting=False,
                                image_mean=list(params.mean), image_std=list(params.std))
    for path in H.PHOTOS[:3]:
        image = H.photo(path).convert("RGB").resize((128, 128), Image.BILINEAR)
        ours = tile_image(image, params)
        enc = proc(images=image, return_tensors="np")
        want = enc["pixel_values"][0, :64].reshape(8, 8, 16, 16, 3).transpose(4, 0, 2, 1, 3).reshape(3, 128, 128)
        assert np.abs(ours.pixels[0] - want).max() <= 1e-6
        lay = image_layout(ours, manifest)
        assert lay.prompt == "<|image_start|>" + "<image>" * 16 + "<|image_end|>"

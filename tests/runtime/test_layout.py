"""runtime.image_layout: the placeholder text and ids equal what transformers' own Processor inserts for the
same image when its image-token count is set to the bundle's compressed count; the stock count is wrong
under compression."""

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


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    root = tmp_path_factory.mktemp("rt_layout")
    cache = {}

    def make(family: str, compress: str = "none"):
        if family not in cache:
            cache[family] = H.make_folder(root, family)
        folder = cache[family]
        manifest = {"name": f"{family}_{compress}", "vlm": H.manifest_vlm(folder, compress)}
        return folder, manifest

    return make


def _processor(family: str, folder: Path, n: int):
    """transformers' Processor of the family, from the folder's image processor and tokenizer, told `n` tokens."""
    import transformers as T

    ip = T.AutoImageProcessor.from_pretrained(folder, backend="pil")
    tok = T.AutoTokenizer.from_pretrained(folder)
    if family == "internvl":
        from transformers.models.internvl.video_processing_internvl import InternVLVideoProcessor

        return T.InternVLProcessor(image_processor=ip, tokenizer=tok, video_processor=InternVLVideoProcessor(),
                                   image_seq_length=n), "<IMG_CONTEXT>"
    if family == "idefics3":
        return T.Idefics3Processor(image_processor=ip, tokenizer=tok, image_seq_len=n), "<image>"
    if family == "gemma3":
        return T.Gemma3Processor(image_processor=ip, tokenizer=tok, image_seq_length=n), "<start_of_image>"
    if family == "paligemma":
        ip.image_seq_length = n
        return T.PaliGemmaProcessor(image_processor=ip, tokenizer=tok), "<image>"
    if family == "llava_onevision":
        from transformers.models.llava_onevision.video_processing_llava_onevision import (
            LlavaOnevisionVideoProcessor,
        )

        return T.LlavaOnevisionProcessor(image_processor=ip, tokenizer=tok, num_image_tokens=n,
                                         video_processor=LlavaOnevisionVideoProcessor(),
                                         vision_feature_select_strategy="full"), "<image>"
    if family == "llava":
        # LlavaProcessor counts (H / patch)² + CLS − 1 (strategy default): a patch of 128/√n gives n.
        return T.LlavaProcessor(image_processor=ip, tokenizer=tok, patch_size=int(128 / n ** 0.5),
                                num_additional_image_tokens=1, vision_feature_select_strategy="default"), "<image>"
    raise KeyError(family)


def _smolvlm_ids(folder, n, image):
    """SmolVLMProcessor needs num2words (not installed here): its own module-level prompt builder on the rows /
    cols its image processor returns, tokenized with the folder's tokenizer."""
    import transformers as T
    from transformers.models.smolvlm.processing_smolvlm import get_image_prompt_string

    ip = T.AutoImageProcessor.from_pretrained(folder, backend="pil")
    out = ip(images=[image], return_row_col_info=True)
    text = get_image_prompt_string(out["rows"][0][0], out["cols"][0][0], n, fake_token_around_image=
                                   "<fake_token_around_image>", image_token="<image>", global_image_token="<global-img>")
    tok = T.AutoTokenizer.from_pretrained(folder)
    return tok(text, add_special_tokens=False)["input_ids"], type("P", (), {"tokenizer": tok})


def _hf_ids(family, folder, n, image):
    if family == "smolvlm":
        return _smolvlm_ids(folder, n, image)
    proc, placeholder = _processor(family, folder, n)
    out = proc(images=[image], text=placeholder, return_tensors="np")
    return [int(i) for i in np.asarray(out["input_ids"])[0]], proc


CASES = [("internvl", "pool:2"), ("idefics3", "pool:2"), ("smolvlm", "pool:2"), ("gemma3", "pool:2"),
         ("paligemma", "pool:2"), ("llava", "pool:2"), ("llava_onevision", "pool:2"), ("internvl", "none")]


@pytest.mark.parametrize("family,compress", CASES)
def test_prompt_equals_the_processors(bundle, family, compress):
    folder, manifest = bundle(family, compress)
    params = ProcessorParams.from_manifest(manifest)
    n = manifest["vlm"]["tokens_per_tile"]
    for path in H.PHOTOS[:4]:
        image = H.photo(path)
        tiled = tile_image(image, params)
        lay = image_layout(tiled, manifest)
        ids, proc = _hf_ids(family, folder, n, image)
        if family == "paligemma":  # the processor appends <bos> after the last image and "\n" after the prompt
            ids = ids[:lay.tokens]
        assert lay.token_ids == ids, f"{family} {path.name}"
        assert proc.tokenizer(lay.prompt, add_special_tokens=False)["input_ids"] == lay.token_ids
        image_id = manifest["vlm"]["prompt"]["tokens"]["image"]["id"]
        assert lay.token_ids.count(image_id) == lay.tokens
        if family != "llava_onevision":
            assert lay.tokens == tiled.tiles * n == sum(lay.tokens_per_tile)


def test_multi_tile_layouts(bundle):
    """InternVL's tiles + thumbnail and Idefics3's row/col markers on a photo cut into 2x2 / 2x3."""
    folder, manifest = bundle("internvl", "pool:2")
    t = tile_image(H.photo(H.PHOTOS[0]), ProcessorParams.from_manifest(manifest))
    lay = image_layout(t, manifest)
    assert (lay.rows, lay.cols, lay.tiles, lay.thumbnail) == (2, 2, 5, True)
    assert lay.prompt == "<img>" + "<IMG_CONTEXT>" * (5 * 4) + "</img>"
    folder, manifest = bundle("idefics3", "pool:2")
    t = tile_image(H.photo(H.PHOTOS[3]), ProcessorParams.from_manifest(manifest))
    lay = image_layout(t, manifest)
    assert (lay.rows, lay.cols, lay.tiles) == (2, 3, 7)
    assert lay.prompt.count("<row_2_col_3>") == 1 and lay.prompt.endswith("<global-img>" + "<image>" * 4
                                                                             + "<fake_token_around_image>")


def test_stock_count_is_wrong_under_compression(bundle):
    """The stock processor (its own count: native tokens per tile) inserts 16 per InternVL tile here, the
    pool:2 bundle emits 4: the layout follows the bundle."""
    folder, manifest = bundle("internvl", "pool:2")
    vlm = manifest["vlm"]
    assert vlm["tokens_per_tile"] == 4 and vlm["prompt"]["stock_tokens_per_tile"] == vlm["native_tokens_per_tile"] == 16
    image = H.photo(H.PHOTOS[0])
    t = tile_image(image, ProcessorParams.from_manifest(manifest))
    lay = image_layout(t, manifest)
    stock, _ = _hf_ids("internvl", folder, vlm["prompt"]["stock_tokens_per_tile"], image)
    image_id = vlm["prompt"]["tokens"]["image"]["id"]
    assert stock.count(image_id) == 16 * t.tiles != lay.tokens == 4 * t.tiles


def test_onevision_count_and_newlines(bundle):
    folder, manifest = bundle("llava_onevision", "pool:2")
    t = tile_image(H.photo(H.PHOTOS[5]), ProcessorParams.from_manifest(manifest))
    lay = image_layout(t, manifest)
    assert lay.newline_positions and lay.newline_positions[0] >= 16  # the base image's 4x4 grid comes first
    width = lay.newline_positions[1] - lay.newline_positions[0]
    assert lay.tokens == 16 + len(lay.newline_positions) * width
    # R2's packed count is taken as given.
    assert image_layout(t, manifest, tokens=lay.tokens, newline_positions=lay.newline_positions) == lay


def test_no_tokenizer_gives_text_without_ids(tmp_path):
    folder = H.make_folder(tmp_path, "idefics3", save_tokenizer=False)
    manifest = {"name": "x", "vlm": H.manifest_vlm(folder, "none")}
    t = tile_image(H.photo(H.PHOTOS[3]), ProcessorParams.from_manifest(manifest))
    lay = image_layout(t, manifest)
    assert lay.token_ids is None and lay.prompt.count("<image>") == lay.tokens == 7 * 16


def test_wrong_token_count_and_old_bundle(bundle):
    from tokcomp_edge.errors import BundleError

    folder, manifest = bundle("internvl", "pool:2")
    t = tile_image(H.photo(H.PHOTOS[1]), ProcessorParams.from_manifest(manifest))
    with pytest.raises(BundleError):
        image_layout(t, manifest, tokens=999)
    with pytest.raises(BundleError):
        image_layout(t, {"name": "old", "tokens_out": 4, "vlm": {"family": "internvl"}})
    assert image_layout(t, manifest).to_dict()["family"] == "internvl"


def test_transformers5_processor_config(tmp_path):
    """A folder written by InternVLProcessor.save_pretrained (transformers 5: the image processor nested in
    processor_config.json, no preprocessor_config.json): the record reads it there, and the stock count is the
    processor's own image_seq_length."""
    import transformers as T
    from transformers.models.internvl.video_processing_internvl import InternVLVideoProcessor

    folder = tmp_path / "internvl"
    H.vlm_config("internvl").save_pretrained(folder)
    T.InternVLProcessor(image_processor=H.image_processor("internvl", max_patches=4), tokenizer=H.tokenizer("internvl"),
                        video_processor=InternVLVideoProcessor(), image_seq_length=256).save_pretrained(folder)
    assert not (folder / "preprocessor_config.json").exists() and (folder / "processor_config.json").exists()
    vlm = H.manifest_vlm(folder, "pool:2")
    assert vlm["processor"]["source"].startswith("processor_config.json (image_processor)")
    assert (vlm["processor"]["max_patches"], vlm["processor"]["crop_to_patches"]) == (4, True)
    assert vlm["prompt"]["stock_tokens_per_tile"] == 256
    assert vlm["prompt"]["stock_source"] == "processor_config.json image_seq_length"


@pytest.mark.parametrize("family,over,call", [
    ("gemma3", {"do_pan_and_scan": True, "pan_and_scan_min_crop_size": 64},
     {"do_pan_and_scan": True, "pan_and_scan_min_crop_size": 64}),
    ("idefics3", {"do_image_splitting": False}, {"do_image_splitting": False}),
])
def test_other_readings_equal_the_processors(bundle, family, over, call):
    """Gemma 3 with pan-and-scan asked for (the original image, then its crops, in Gemma3Processor's sentence)
    and Idefics3 without splitting (the global view alone)."""
    folder, manifest = bundle(family, "pool:2")
    params = ProcessorParams.from_dict({**manifest["vlm"]["processor"], **over})
    n = manifest["vlm"]["tokens_per_tile"]
    proc, placeholder = _processor(family, folder, n)
    for path in (H.PHOTOS[5], H.PHOTOS[6], H.PHOTOS[0]):  # 400x180 and 200x300 are cut by pan-and-scan
        image = H.photo(path)
        tiled = tile_image(image, params)
        lay = image_layout(tiled, manifest)
        out = proc(images=[image], text=placeholder, return_tensors="np", **call)
        assert lay.token_ids == [int(i) for i in np.asarray(out["input_ids"])[0]], path.name
        assert np.abs(tiled.pixels - np.asarray(out["pixel_values"]).reshape(tiled.pixels.shape)).max() <= 1e-6
    assert family != "gemma3" or "here are some crops" in image_layout(tile_image(H.photo(H.PHOTOS[5]), params),
                                                                       manifest).prompt

"""Splicing encode()'s embeddings into the LLM through `inputs_embeds` (docs/runtime.md, "Splicing into an LLM")
gives the logits the VLM itself computes from the processor's pixels: the recipe the docs give is the model's."""

from __future__ import annotations

import numpy as np
import pytest
from runtime_helpers import photos

pytest.importorskip("transformers")
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _model_inputs(family, folder, image_path, image_token, n_tokens):
    import torch
    from transformers import AutoImageProcessor

    from tokcomp_edge.calibration.images import load_rgb

    proc = AutoImageProcessor.from_pretrained(folder, backend="pil")
    kw = {"crop_to_patches": True} if family == "internvl" else {}
    batch = proc(images=[load_rgb(image_path)], return_tensors="pt", **kw)
    ids = torch.tensor([[1, 2, 3] + [image_token] * n_tokens + [4, 2]])
    extra = {"pixel_values": batch["pixel_values"]}
    if family == "llava_onevision":
        extra.update(image_sizes=batch["image_sizes"], batch_num_images=torch.tensor([1]))
    return ids, extra


@pytest.mark.parametrize("family", ["internvl", "llava_onevision"])
def test_inputs_embeds_splice_equals_the_vlm_forward(family_bundle, family):
    import torch

    from tokcomp_edge.runtime import VisionRuntime

    folder, model, bundle = family_bundle(family)
    image_token = 5  # vlm_helpers' configs: image_token_id / image_token_index
    with VisionRuntime.open(bundle) as rt:
        out = rt.encode([photos()[0]])
    emb, lay = out.embeddings[0], out.layout[0]
    ids, extra = _model_inputs(family, folder, photos()[0], image_token, lay.tokens)
    with torch.no_grad():
        want = model(input_ids=ids, **extra).logits
        # The recipe: embed the text, put the image's rows where its placeholders are, run the LLM.
        embeds = model.get_input_embeddings()(ids)
        mask = ids == image_token
        embeds[mask] = torch.from_numpy(emb).to(embeds.dtype)
        got = model(inputs_embeds=embeds).logits
    assert int(mask.sum()) == emb.shape[0]
    err = float((got - want).abs().max() / want.abs().max())
    assert err < 1e-4, err
    assert not np.allclose(got.numpy(), model(input_ids=ids.clamp(max=4)).logits.detach().numpy(), atol=1e-3)

"""encode() on real photos == transformers' full path, per family: the processor (the folder's saved config,
PIL backend) → get_image_features → the model's own post-processing (OneVision: pack_image_features with
image_newline; Idefics3: tiles in processor order, the global view last; InternVL: tiles + thumbnail).

Each family is exported once per session (conftest.py) (seconds each); the ONNX Runtime fp32 path must agree within the
export's own parity tolerance (atol 1e-4 + rtol 1e-4 of the output scale)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from runtime_helpers import photos, reference, rel_err

pytest.importorskip("transformers")
pytestmark = pytest.mark.usefixtures("one_torch_thread")

TOL = 2e-4  # relative to the output's max |value|: the export's atol 1e-4 + rtol 1e-4


def _encode(bundle, images, **kw):
    from tokcomp_edge.runtime import VisionRuntime

    with VisionRuntime.open(bundle, **kw) as rt:
        return rt.encode(images)


# One-tile families whose path llava already covers run in the full suite only (an export each costs seconds).
FAMILIES = ["llava", pytest.param("paligemma", marks=pytest.mark.slow), pytest.param("gemma3", marks=pytest.mark.slow),
            "internvl", "idefics3", pytest.param("smolvlm", marks=pytest.mark.slow), "llava_onevision"]


@pytest.mark.parametrize("family", FAMILIES)
def test_encode_equals_transformers(family_bundle, family):
    folder, model, bundle = family_bundle(family)
    paths = photos()
    out = _encode(bundle, paths)
    assert len(out.embeddings) == len(out.layout) == len(paths)
    for path, emb, lay in zip(paths, out.embeddings, out.layout):
        ref = reference(family, folder, model, path)
        assert emb.shape == ref.shape, (path.name, emb.shape, ref.shape)
        assert rel_err(emb, ref) < TOL, (path.name, rel_err(emb, ref))
        assert lay.tokens == ref.shape[0] and lay.bundle
    assert out.timings.images == len(paths) and out.timings.tiles == sum(lay.tiles for lay in out.layout)
    assert out.timings.inference_ms > 0


def test_multi_tile_cases_are_exercised(family_bundle):
    """The photos really split: InternVL tiles + thumbnail, Idefics3 crops + global view, OneVision anyres with
    newline tokens, downscaled for the larger photos and not for the tiny one."""
    paths = photos()
    iv = _encode(family_bundle("internvl")[2], paths).layout
    assert any(lay.tiles > 2 and lay.thumbnail for lay in iv)
    idf = _encode(family_bundle("idefics3")[2], paths).layout
    assert any(lay.rows * lay.cols > 1 and lay.thumbnail for lay in idf)
    ov = _encode(family_bundle("llava_onevision")[2], paths)
    for emb, lay in zip(ov.embeddings, ov.layout):
        assert lay.newline_positions and lay.tiles > 1
        newline = np.load(Path(family_bundle("llava_onevision")[2]) / "image_newline.npy")
        assert np.array_equal(emb[list(lay.newline_positions)], np.broadcast_to(newline, (len(lay.newline_positions),
                                                                                          newline.shape[0])))
    # Downscaled (anyres_max_2) for the cat, not for the 96x64 face: fewer rows·(cols+1) than the crops hold.
    crops = [(lay.tiles - 1) * 64 for lay in ov.layout]
    packed = [lay.tokens - 64 for lay in ov.layout]
    assert packed[0] < crops[0] and packed[-1] > 0


def test_several_images_run_as_shared_batches(family_bundle):
    """Tiles of all images of a request go through the backend in calls of up to its batch max (4 here)."""
    from tokcomp_edge.runtime import VisionRuntime

    _, _, bundle = family_bundle("internvl")
    with VisionRuntime.open(bundle) as rt:
        out = rt.encode(photos())
        alone = [rt.encode([p]) for p in photos()]
    tiles = out.timings.tiles
    assert out.timings.calls == -(-tiles // 4) < sum(a.timings.calls for a in alone)
    for a, emb in zip(alone, out.embeddings):
        np.testing.assert_allclose(a.embeddings[0], emb, rtol=0, atol=1e-5)


def test_inputs_as_paths_pil_and_arrays_agree(family_bundle):
    from PIL import Image

    from tokcomp_edge.runtime import VisionRuntime

    _, _, bundle = family_bundle("internvl")
    path = photos()[0]
    with Image.open(path) as im:
        pil = im.convert("RGB")
    with VisionRuntime.open(bundle) as rt:
        out = rt.encode([path, pil, np.asarray(pil)])
        streamed = list(rt.encode_stream(iter([path, pil, np.asarray(pil)])))
    assert len(streamed) == 3 and all(len(s) == 1 for s in streamed)
    # The same tiles, in other batch positions and call sizes (ONNX Runtime's kernels round per batch size).
    for emb in out.embeddings[1:] + [s.embeddings[0] for s in streamed]:
        np.testing.assert_allclose(emb, out.embeddings[0], rtol=0, atol=1e-5)


def test_compressed_bundle_layout_counts_what_it_produces(family_bundle):
    """InternVL with pool:2: 4x fewer tokens per tile than the stock processor inserts; the layout and the
    embeddings agree with each other and with the uncompressed bundle's tile count."""
    _, _, plain = family_bundle("internvl")
    _, _, pooled = family_bundle("internvl", "pool:2")
    paths = photos()
    a, b = _encode(plain, paths), _encode(pooled, paths)
    for ea, eb, la, lb in zip(a.embeddings, b.embeddings, a.layout, b.layout):
        assert la.tiles == lb.tiles
        assert eb.shape[0] == lb.tokens == sum(lb.tokens_per_tile)
        assert lb.tokens * 4 == la.tokens == ea.shape[0]
        stock = lb.tiles * la.tokens_per_tile[0]  # what the stock processor inserts for this image
        assert stock != lb.tokens and lb.prompt.count("<IMG_CONTEXT>") == lb.tokens

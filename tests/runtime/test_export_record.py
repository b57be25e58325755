"""`tokcomp export hf:FOLDER` of a VLM records what the device needs (vlm.processor, vlm.prompt); the schema
checks both sections when the bundle is loaded."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "vlm"))

import rt_helpers as H  # noqa: E402

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from vlm_helpers import build_vlm, save_vlm

    from tokcomp_edge.export import ExportConfig, export_bundle

    root = tmp_path_factory.mktemp("rt_export")
    folder = save_vlm(build_vlm("internvl"), root / "internvl")
    H.image_processor("internvl").save_pretrained(folder)
    H.tokenizer("internvl").save_pretrained(folder)
    out = root / "bundle"
    export_bundle(ExportConfig(model=f"hf:{folder}", compress="pool:2", out=out, batch_max=2, quiet=True,
                               lint=False))
    return out


def test_manifest_records_processor_and_prompt(exported):
    from tokcomp_edge.core.bundle import Bundle
    from tokcomp_edge.runtime.layout import image_layout
    from tokcomp_edge.runtime.processor import ProcessorParams
    from tokcomp_edge.runtime.tiling import tile_image

    manifest = Bundle.load(exported).manifest
    proc, prompt = manifest["vlm"]["processor"], manifest["vlm"]["prompt"]
    assert proc["rule"] == "crop_to_patches" and proc["crop_to_patches"] is True
    assert proc["saved_crop_to_patches"] is False and proc["source"].startswith("preprocessor_config.json")
    # The image id is config.json's (what the model's forward looks for: 5 in build_vlm's config), the
    # start/end ids the tokenizer's (config.json has no key for them).
    assert prompt["tokens"]["image"] == {"text": "<IMG_CONTEXT>", "id": 5}
    assert (prompt["tokens"]["start"]["id"], prompt["tokens"]["end"]["id"]) == (20, 21)
    assert prompt["stock_tokens_per_tile"] == 16 and manifest["vlm"]["tokens_per_tile"] == 4
    tiled = tile_image(H.photo(H.PHOTOS[0]), ProcessorParams.from_manifest(manifest))
    lay = image_layout(tiled, manifest)
    assert lay.tokens == 5 * 4 and lay.token_ids == [20] + [5] * 20 + [21]


def test_schema_checks_the_sections(exported):
    from tokcomp_edge.core.manifest_schema import check_manifest
    from tokcomp_edge.errors import BundleError

    manifest = json.loads((exported / "manifest.json").read_text())
    check_manifest(manifest)
    for path, value in ((("processor", "rule"), "zoom"), (("processor", "tile"), [0, 128]),
                        (("prompt", "tokens"), {}), (("prompt", "stock_tokens_per_tile"), 0)):
        bad = copy.deepcopy(manifest)
        bad["vlm"][path[0]][path[1]] = value
        with pytest.raises(BundleError, match=f"vlm.{path[0]}.{path[1]}"):
            check_manifest(bad)

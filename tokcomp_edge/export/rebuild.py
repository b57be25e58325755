"""Rebuild the exact PyTorch module of a bundle from its manifest (for validation against fresh runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import BundleError


def model_from_manifest(manifest: dict[str, Any]):
    """The CompressedEncoder the bundle was exported from, in eval mode.

    Random-init bundles are rebuilt from their seed; file-weights bundles from the same file, whose
    sha256 must still match the one recorded at export.
    """
    from ..compression.module import CompressedEncoder
    from ..compression.plan import plan_compression
    from ..compression.spec import parse_spec
    from ..core.bundle import sha256_file
    from ..encoders import EncoderConfig, build_encoder

    if manifest.get("vlm"):
        return _vlm_from_manifest(manifest)
    enc = manifest["encoder"]
    comp = manifest["compression"]
    weights = enc.get("weights") or {"kind": "random"}
    wpath = _weights_path(weights)
    if wpath is not None:
        if weights.get("sha256") and sha256_file(wpath) != weights["sha256"]:
            raise BundleError(f"weights file {wpath} changed since export", "re-export the bundle")
    image_size = enc["image_size"][0] if enc["image_size"][0] == enc["image_size"][1] else None
    loaded = build_encoder(EncoderConfig(model=enc["name"], image_size=image_size, weights=wpath,
                                         seed=int(enc.get("seed") or weights.get("seed") or 0),
                                         layer=int(enc.get("layer", -1))))
    spec = loaded.spec
    plan = plan_compression(parse_spec(comp["spec"]), grid=spec.grid, prefix_tokens=spec.prefix_tokens,
                            has_cls=spec.has_cls, hidden_size=spec.hidden_size, prefix=comp["prefix"],
                            layers=loaded.tower.num_used)
    return CompressedEncoder(loaded.tower, plan).eval()


def rebuild_blocker(manifest: dict[str, Any]) -> str | None:
    """Why the PyTorch module of `manifest` cannot be rebuilt on this machine, or None when it can.

    Cheap (no module is built): the recorded weights file and the hf: folder must be there. `validate
    --torch auto` uses it to fall back to the golden reference alone, saying why, instead of failing.
    """
    enc = manifest.get("encoder") or {}
    weights = enc.get("weights") or {"kind": "random"}
    if weights.get("kind") == "file" and not Path(str(weights.get("path"))).is_file():
        return f"the bundle's weights file {weights.get('path')} is not there"
    name = str(enc.get("name", ""))
    if name.startswith("hf:") and not Path(name[3:]).is_dir():
        return f"the bundle's model folder {name[3:]} is not there"
    return None


def portable_model_id(model: str) -> str:
    """An hf:<folder> id with the folder made absolute, so a bundle rebuilds from any current directory."""
    return f"hf:{Path(model[3:]).resolve()}" if model.startswith("hf:") else model


def portable_weights(weights: dict[str, Any]) -> dict[str, Any]:
    """A weights record whose file path is absolute (the manifest is read from anywhere)."""
    if weights.get("kind") == "file" and weights.get("path"):
        return {**weights, "path": str(Path(weights["path"]).resolve())}
    return weights


def _weights_path(weights: dict[str, Any]) -> Path | None:
    """The recorded weights file of a file-weights bundle (None for random init); BundleError when gone."""
    if weights.get("kind") != "file":
        return None
    wpath = Path(weights["path"])
    if not wpath.is_file():
        raise BundleError(f"the bundle's weights file {wpath} is not there",
                          "run from the machine/folder it was exported on, or validate against the "
                          "golden reference only (--torch off)")
    return wpath


def _vlm_from_manifest(manifest: dict[str, Any]):
    """A VLM vision path rebuilt from its model id, seed or checkpoint; the vision-path tensors read must
    hash to the digest recorded at export (the LLM's files may change, the vision path may not)."""
    from ..compression.spec import parse_spec
    from ..vlm import load_vlm, plan_vlm
    from ..vlm.path import vision_path

    enc, comp, vlm = manifest["encoder"], manifest["compression"], manifest["vlm"]
    weights = enc.get("weights") or {"kind": "random"}
    wpath = _weights_path(weights)
    # The recorded path is the weights actually read (an hf: folder's index or file, or --weights).
    loaded = load_vlm(enc["name"], wpath, int(enc.get("seed") or weights.get("seed") or 0),
                      image_size=tuple(enc["image_size"]))  # the tile it was exported at (LFM2-VL's is chosen)
    if weights.get("kind") == "file" and weights.get("sha256") and loaded.weights.sha256 != weights["sha256"]:
        raise BundleError(f"the vision-path tensors in {wpath} changed since export", "re-export the bundle")
    # A VLM's prefix policy is its own select strategy, so the plan is rebuilt without a --prefix.
    plan = plan_vlm(loaded.spec, parse_spec(comp["spec"]), None, projector=bool(vlm.get("projector", True)),
                    video=bool(vlm.get("video", False)))
    return vision_path(loaded.tower, plan, loaded.projector).eval()

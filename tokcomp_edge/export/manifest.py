"""Build the manifest dict of a new bundle (the schema is described in README, "The bundle")."""

from __future__ import annotations

import platform
from datetime import datetime, timezone
from importlib import metadata
from typing import Any

from .. import __version__
from ..core.bundle import SCHEMA, SCHEMA_VERSION
from ..image_policy import policy_for_spec

TRACKED_PACKAGES = ("torch", "onnx", "onnxscript", "onnxruntime-gpu", "onnxruntime", "onnxslim", "transformers",
                    "timm", "numpy", "nvidia-modelopt", "polygraphy")


def package_versions() -> dict[str, str]:
    out = {"tokcomp-edge": __version__, "python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def io_entries(plan, spec, batch_dim: Any, vlm=None) -> tuple[list[dict], list[dict]]:
    """The graph I/O as the manifest records it (and as check_onnx verifies it).

    For a VLM vision path (`vlm`, a VlmPlan) `tokens` is what the LLM reads: after the VLM's own
    transform and projector; `indices` (prune, visionzip) and `merge_map` (visionzip) still index the tower's patch grid.
    """
    h, w = spec.image_size
    tokens, dim = (vlm.tokens_out, vlm.dim_out) if vlm is not None else (plan.tokens_out, plan.dim_out)
    inputs = [{"name": "pixel_values", "shape": [batch_dim, 3, h, w], "dtype": "float32", "layout": "NCHW"}]
    outputs = [{"name": "tokens", "shape": [batch_dim, tokens, dim], "dtype": "float32"}]
    # Qwen3-VL's DeepStack features: one per deepstack layer, shaped as the tokens (same grid, same merger width).
    outputs += [{"name": n, "shape": [batch_dim, tokens, dim], "dtype": "float32"}
                for n in (vlm.extra_outputs if vlm is not None else ())]
    if "indices" in plan.extra_outputs:
        outputs.append({"name": "indices", "shape": [batch_dim, plan.indexed_out], "dtype": "int64"})
    if "sizes" in plan.extra_outputs:
        outputs.append({"name": "sizes", "shape": [batch_dim, plan.tokens_out], "dtype": "float32"})
    if "merge_map" in plan.extra_outputs:
        outputs.append({"name": "merge_map", "shape": [batch_dim, plan.patch_tokens_in], "dtype": "int64"})
    return inputs, outputs


def build_manifest(*, name: str, spec, encoder_extra: dict[str, Any], plan, opset: int, batch: tuple[int, int],
                   inputs: list[dict], outputs: list[dict], external_data: bool, cleanup: str,
                   reference: dict[str, Any], parity: dict[str, Any], files: dict[str, Any],
                   vlm=None, blocks: list[dict] | None = None, blocks_note: str = "") -> dict[str, Any]:
    """The manifest of a new bundle; `vlm` (a VlmPlan) adds the `vlm` section and makes the top-level token
    figures the VLM's: tokens_in = what the VLM gives its LLM per tile, tokens_out = what this bundle gives."""
    encoder = spec.to_dict()
    encoder.update(encoder_extra)
    shape = {"tokens_in": plan.tokens_in, "tokens_out": plan.tokens_out,
             "grid_out": list(plan.grid_out) if plan.grid_out else None, "dim_out": plan.dim_out}
    if vlm is not None:
        shape = {"tokens_in": vlm.native_tokens, "tokens_out": vlm.tokens_out,
                 "grid_out": list(vlm.grid_out) if vlm.grid_out else None, "dim_out": vlm.dim_out}
    manifest = {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "name": name,
        "created_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "encoder": encoder,
        "compression": plan.to_dict(),
        # What the consumer of `tokens` sees (for a VLM: after its transform and projector); the compression
        # section keeps the compressor's own figures.
        "tokens_in": shape["tokens_in"],
        "tokens_out": shape["tokens_out"],
        "grid_in": list(plan.grid_in),
        "grid_out": shape["grid_out"],
        "dim_out": shape["dim_out"],
        "preprocess": {"image_size": list(spec.image_size), "mean": list(spec.mean), "std": list(spec.std),
                       "layout": "NCHW", "range": "RGB in [0,1], then (x - mean) / std",
                       # how photos are framed: image_policy.py
                       **policy_for_spec(spec, vlm.vlm.family.model_type if vlm is not None else None).to_dict()},
        "onnx": {"file": "model.onnx", "opset": opset, "batch": {"min": batch[0], "max": batch[1]},
                 "inputs": inputs, "outputs": outputs, "external_data": external_data, "cleanup": cleanup},
        "variants": {"fp32": {"file": "model.onnx", "precision": "fp32", "input_layout": "nchw-float",
                              "inputs": inputs, "outputs": outputs}},
        "reference": reference,
        "parity": parity,
        "versions": package_versions(),
        "files": files,
    }
    if vlm is not None:
        manifest["vlm"] = vlm.to_dict()
    # The transformer blocks and the tensor each hands on, recorded at export (export/block_taps.py) for
    # `tokcomp debug`; [] with the reason when the module's blocks could not be recorded.
    manifest["blocks"] = list(blocks or [])
    if not blocks and blocks_note:
        manifest["blocks_note"] = blocks_note
    return manifest

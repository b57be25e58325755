"""Build the manifest dict of a new bundle (the schema is described in README, "The bundle")."""

from __future__ import annotations

import platform
from datetime import datetime, timezone
from importlib import metadata
from typing import Any

from .. import __version__
from ..calibration.policy import policy_for_spec
from .bundle import SCHEMA, SCHEMA_VERSION

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


def io_entries(plan, spec, batch_dim: Any) -> tuple[list[dict], list[dict]]:
    """The graph I/O as the manifest records it (and as check_onnx verifies it)."""
    h, w = spec.image_size
    inputs = [{"name": "pixel_values", "shape": [batch_dim, 3, h, w], "dtype": "float32", "layout": "NCHW"}]
    outputs = [{"name": "tokens", "shape": [batch_dim, plan.tokens_out, plan.dim_out], "dtype": "float32"}]
    if plan.spec.method == "prune":
        outputs.append({"name": "indices", "shape": [batch_dim, plan.patch_tokens_out], "dtype": "int64"})
    return inputs, outputs


def build_manifest(*, name: str, spec, encoder_extra: dict[str, Any], plan, opset: int, batch: tuple[int, int],
                   inputs: list[dict], outputs: list[dict], external_data: bool, cleanup: str,
                   reference: dict[str, Any], parity: dict[str, Any], files: dict[str, Any]) -> dict[str, Any]:
    encoder = spec.to_dict()
    encoder.update(encoder_extra)
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "name": name,
        "created_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "encoder": encoder,
        "compression": plan.to_dict(),
        # kept at top level for readers that only need the token arithmetic
        "tokens_in": plan.tokens_in,
        "tokens_out": plan.tokens_out,
        "grid_in": list(plan.grid_in),
        "grid_out": list(plan.grid_out) if plan.grid_out else None,
        "dim_out": plan.dim_out,
        "preprocess": {"image_size": list(spec.image_size), "mean": list(spec.mean), "std": list(spec.std),
                       "layout": "NCHW", "range": "RGB in [0,1], then (x - mean) / std",
                       **policy_for_spec(spec).to_dict()},  # how photos are framed: calibration/policy.py
        "onnx": {"file": "model.onnx", "opset": opset, "batch": {"min": batch[0], "max": batch[1]},
                 "inputs": inputs, "outputs": outputs, "external_data": external_data, "cleanup": cleanup},
        "variants": {"fp32": {"file": "model.onnx", "precision": "fp32", "input_layout": "nchw-float",
                              "inputs": inputs, "outputs": outputs}},
        "reference": reference,
        "parity": parity,
        "versions": package_versions(),
        "files": files,
    }

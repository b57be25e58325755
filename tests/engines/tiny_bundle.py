"""Tiny hand-made bundles: a real (two-node) ONNX graph and a real manifest, made in milliseconds.

The graph is `pixel_values [B,3,8,8] → Reshape [B,3,64] → Transpose → tokens [B,64,3]`: valid for
ONNX Runtime and clean for the TensorRT lint. Used by tests/engines (via conftest) and tests/trt_api.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tokcomp_edge.core.bundle import (
    MANIFEST,
    REFERENCE,
    SCHEMA,
    SCHEMA_VERSION,
    dump_manifest,
    file_entry,
    reference_key,
    save_reference,
)

H = W = 8


def tiny_onnx(path: Path, dtype: str = "float32") -> None:
    import onnx
    from onnx import TensorProto, helper

    elem = {"float32": TensorProto.FLOAT, "float16": TensorProto.FLOAT16}[dtype]
    x = helper.make_tensor_value_info("pixel_values", elem, ["batch", 3, H, W])
    y = helper.make_tensor_value_info("tokens", elem, ["batch", H * W, 3])
    shape = helper.make_tensor("shape", TensorProto.INT64, [3], [0, 3, H * W])
    nodes = [helper.make_node("Reshape", ["pixel_values", "shape"], ["flat"], name="/flatten/Reshape"),
             helper.make_node("Transpose", ["flat"], ["tokens"], perm=[0, 2, 1], name="/tokens/Transpose")]
    graph = helper.make_graph(nodes, "tiny", [x], [y], initializer=[shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def io(dtype: str = "float32", layout: str = "NCHW") -> tuple[list[dict], list[dict]]:
    if layout == "NHWC":
        inputs = [{"name": "pixel_values", "shape": ["batch", H, W, 3], "dtype": "uint8", "layout": "NHWC"}]
    else:
        inputs = [{"name": "pixel_values", "shape": ["batch", 3, H, W], "dtype": dtype, "layout": "NCHW"}]
    outputs = [{"name": "tokens", "shape": ["batch", H * W, 3], "dtype": dtype}]
    return inputs, outputs


def write_bundle(folder: Path, name: str = "tiny_pool2", batch: tuple[int, int] = (1, 8),
                 extra_variants: dict[str, dict] | None = None) -> Path:
    """A bundle folder with model.onnx, a manifest and the given extra variants (key → meta).

    Each extra variant gets a file `model.<key>.onnx` (a copy of the tiny graph, in its dtype).
    """
    folder.mkdir(parents=True, exist_ok=True)
    tiny_onnx(folder / "model.onnx")
    inputs, outputs = io()
    variants = {"fp32": {"file": "model.onnx", "precision": "fp32", "input_layout": "nchw-float",
                         "inputs": inputs, "outputs": outputs}}
    files = {"model.onnx": file_entry(folder / "model.onnx")}
    for key, meta in (extra_variants or {}).items():
        fname = f"model.{key}.onnx"
        tiny_onnx(folder / fname, meta.get("dtype", "float32"))
        layout = "NHWC" if "nhwc" in key else "NCHW"
        v_in, v_out = io(meta.get("dtype", "float32"), layout)
        variants[key] = {"file": fname, "precision": meta.get("precision", key.split("-")[0]),
                         "input_layout": "nhwc-uint8" if layout == "NHWC" else "nchw-float",
                         "inputs": v_in, "outputs": v_out}
        files[fname] = file_entry(folder / fname)
    # The golden reference the graph really gives (tokens = pixels reshaped and transposed), so the
    # manifest passes the schema (core/manifest_schema.py) like an exported one.
    batches = sorted({batch[0], batch[1]})
    ref = {}
    for b in batches:
        x = np.random.default_rng(b).random((b, 3, H, W), dtype=np.float32)
        ref[reference_key("pixel_values", b)] = x
        ref[reference_key("tokens", b)] = np.ascontiguousarray(x.reshape(b, 3, H * W).transpose(0, 2, 1))
    save_reference(folder / REFERENCE, ref)
    files[REFERENCE] = file_entry(folder / REFERENCE)
    n = H * W
    manifest = {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION, "name": name,
        # A "tower" of 1-pixel patches with 3 channels, and no compression: tokens [B, 64, 3].
        "encoder": {"name": "tiny", "family": "user", "image_size": [H, W], "patch_size": 1, "prefix_tokens": 0,
                    "hidden_size": 3, "mean": [0.5] * 3, "std": [0.5] * 3, "layer": -1,
                    "weights": {"kind": "none", "seed": None, "path": None, "sha256": None}},
        "compression": {"spec": "none", "method": "none", "params": {}, "prefix": "drop", "prefix_in": 0,
                        "prefix_out": 0, "tokens_in": n, "tokens_out": n, "patch_tokens_in": n,
                        "patch_tokens_out": n, "grid_in": [H, W], "grid_out": [H, W], "dim_in": 3, "dim_out": 3,
                        "indexed_out": 0, "merged_out": 0, "formula": f"{H}·{W} = {n}"},
        "tokens_in": n, "tokens_out": n, "dim_out": 3,
        "preprocess": {"image_size": [H, W], "mean": [0.5] * 3, "std": [0.5] * 3},
        "onnx": {"file": "model.onnx", "opset": 17, "batch": {"min": batch[0], "max": batch[1]},
                 "inputs": inputs, "outputs": outputs, "cleanup": "none"},
        "variants": variants,
        "reference": {"file": REFERENCE, "batch_sizes": batches},
        "files": files,
    }
    (folder / MANIFEST).write_text(dump_manifest(manifest))
    return folder

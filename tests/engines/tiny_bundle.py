"""Tiny hand-made bundles: a real (two-node) ONNX graph and a real manifest, made in milliseconds.

The graph is `pixel_values [B,3,8,8] → Reshape [B,3,64] → Transpose → tokens [B,64,3]`: valid for
ONNX Runtime and clean for the TensorRT lint. Used by tests/engines (via conftest) and tests/trt_api.
"""

from __future__ import annotations

from pathlib import Path

from tokcomp_edge.core.bundle import (
    MANIFEST,
    SCHEMA,
    SCHEMA_VERSION,
    dump_manifest,
    file_entry,
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
    manifest = {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION, "name": name,
        "encoder": {"name": "tiny", "image_size": [H, W], "mean": [0.5] * 3, "std": [0.5] * 3},
        "compression": {"spec": "pool:2"},
        "onnx": {"file": "model.onnx", "opset": 17, "batch": {"min": batch[0], "max": batch[1]},
                 "inputs": inputs, "outputs": outputs},
        "variants": variants,
        "files": files,
    }
    (folder / MANIFEST).write_text(dump_manifest(manifest))
    return folder

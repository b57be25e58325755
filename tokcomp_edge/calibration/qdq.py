"""fp32 ONNX + calibration images → explicit INT8 (Q/DQ) ONNX with NVIDIA ModelOpt, on CPU.

TensorRT 11 has no implicit INT8 calibration: an int8 engine is built from an ONNX that carries
QuantizeLinear/DequantizeLinear pairs with their scales, which TensorRT follows. ModelOpt's
`modelopt.onnx.quantization.quantize(quantize_mode="int8")` places them (per-channel weights, per-tensor
activations, TensorRT's placement rules) and computes the activation scales by running the model on the
calibration images through ONNX Runtime (`calibration_eps=["cpu"]`: no GPU needed).

ModelOpt writes intermediate models next to its input and output, so it works on a private copy of
model.onnx inside a work folder that the caller removes: the bundle's own files are never touched.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ExportFailed, RuntimeMissing

METHODS = ("entropy", "max")
HIGH_PRECISIONS = ("fp16", "fp32")
_EXTERNAL_DATA = "model.onnx.data"  # what export/onnx_export.save_proto writes beside a large model.onnx


def _debug() -> bool:
    return os.environ.get("TOKCOMP_DEBUG", "") not in ("", "0")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Keep ModelOpt's and ONNX Runtime's console output out of ours (unless TOKCOMP_DEBUG is set).

    ONNX Runtime's calibrator print()s to stdout, which our CLI reserves for results, and ModelOpt's
    tqdm bars would run through the progress spinner on stderr. Both are captured and dropped (the
    exception, if any, carries the cause). ModelOpt's `configure_logging` binds a StreamHandler to
    whatever sys.stdout is during the call, so afterwards its handlers are pointed back at the real
    stdout (else later ModelOpt logs would vanish).
    """
    if _debug():
        yield
        return
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            yield
    finally:
        for name in ("modelopt.onnx", "modelopt"):
            for handler in logging.getLogger(name).handlers:
                if isinstance(handler, logging.StreamHandler) and handler.stream is buf:
                    handler.setStream(sys.stdout)


def _copy_source(src: Path, work: Path) -> tuple[Path, bool]:
    """Copy model.onnx (and its external data file, if any) into the work folder."""
    dst = work / src.name
    shutil.copyfile(src, dst)
    external = src.parent / _EXTERNAL_DATA
    if external.is_file():
        shutil.copyfile(external, work / _EXTERNAL_DATA)
    return dst, external.is_file()


def qdq_counts(model) -> dict[str, int]:
    """QuantizeLinear / DequantizeLinear node counts (both > 0 in a quantized graph)."""
    ops = Counter(n.op_type for n in model.graph.node)
    return {"quantize_linear": ops["QuantizeLinear"], "dequantize_linear": ops["DequantizeLinear"]}


def _ops_after_dq(model) -> dict[str, int]:
    """Op types that read a dequantized tensor, counted (where TensorRT can fuse int8 math: MatMul/Conv;
    the others read a quantized-then-dequantized value)."""
    dq_out = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    ops: Counter = Counter()
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear") and any(i in dq_out for i in node.input):
            ops[node.op_type] += 1
    return dict(sorted(ops.items()))


def _single_file(path: Path) -> None:
    """Rewrite `path` as one self-contained file if ModelOpt saved its weights externally."""
    import onnx
    from onnx.external_data_helper import uses_external_data

    if not any(uses_external_data(t) for t in onnx.load(str(path), load_external_data=False).graph.initializer):
        return
    from ..export.variants import save_variant_model

    save_variant_model(onnx.load(str(path)), path, "int8",
                       "calibrate with --high-precision fp16 (half the size of fp32), or use a smaller encoder")


def decision_matmuls(model) -> list[str]:
    """MatMuls of an in-encoder compression (ToMe, VisionZip) that decide or carry out a merge, by graph
    pattern: a similarity of L2-normalised rows (an input that is, or is gathered from, `unit_rows`) or a product
    with a one-hot assignment matrix (an input made by a Cast of a comparison). Kept out of INT8: a
    quantized similarity flips matches between near-equal candidates, and int8 scales on a 0/1 matrix and
    on the tokens being summed turn an exact scatter-add into an approximate one."""
    producer = {o: n for n in model.graph.node for o in n.output}

    def origin(name: str):
        n = producer.get(name)
        while n is not None and n.op_type in ("Transpose", "Reshape", "Unsqueeze", "Squeeze") and n.input:
            n = producer.get(n.input[0])
        return n

    def unit_rows(n) -> bool:  # k / clamp_min(‖k‖): a Div by a Clip
        return n is not None and n.op_type == "Div" and getattr(producer.get(n.input[1]), "op_type", None) == "Clip"

    def decides(name: str) -> bool:
        n = origin(name)
        if n is None:
            return False
        if n.op_type == "Cast":
            src = origin(n.input[0])
            return src is not None and src.op_type == "Equal"
        if n.op_type in ("Gather", "GatherElements"):  # ToMe: rows of the normalised keys
            return unit_rows(origin(n.input[0]))
        return unit_rows(n)  # VisionZip: gathered keys, then normalised

    return [n.name for n in model.graph.node if n.op_type == "MatMul" and any(decides(i) for i in n.input)]


def quantize_int8(src: Path, work: Path, pixel_values: np.ndarray, *, method: str, batch: int,
                  high_precision: str) -> tuple[Path, dict[str, Any]]:
    """Quantize `src` to an explicit INT8 Q/DQ graph with ModelOpt, calibrated on `pixel_values`.

    Args:
        src: the bundle's fp32 model.onnx (read only: a copy is quantized).
        work: an empty folder for ModelOpt's files, on the bundle's filesystem; the caller removes it.
        pixel_values: calibration inputs [N, 3, H, W] float32, preprocessed per the manifest.
        method: "entropy" (KL-divergence thresholds, clips rare outliers) or "max" (full range).
        batch: images per calibration run (1 ≤ batch ≤ N).
        high_precision: dtype of everything not quantized: "fp16" (ModelOpt's default, what an int8
            engine on Orin wants) or "fp32".
    Returns:
        (path of the quantized model inside `work`, facts for the manifest).
    Raises:
        ExportFailed: ModelOpt raised, or inserted no Q/DQ node.
        InputError: the result is over the single-file limit.
        RuntimeMissing: ModelOpt is not installed.
    """
    import onnx

    # Import before quietening: ModelOpt configures its loggers when its modules are imported.
    try:
        from modelopt.onnx.quantization import quantize
    except ImportError as exc:  # e.g. on a Jetson, where JetPack brings TensorRT but not ModelOpt
        raise RuntimeMissing(f"NVIDIA ModelOpt cannot be imported here ({exc}); INT8 calibration needs it",
                             "calibrate on the development machine (`pip install 'nvidia-modelopt[onnx]'`, a "
                             "dependency of tokcomp-edge) and copy the bundle; the int8 variant travels with it") \
            from exc

    model_in, external = _copy_source(src, work)
    out = work / "model.int8.onnx"
    h, w = pixel_values.shape[2], pixel_values.shape[3]
    graph = onnx.load(str(model_in), load_external_data=False)
    input_name = graph.graph.input[0].name
    excluded = decision_matmuls(graph)
    with _quiet():
        try:
            quantize(onnx_path=str(model_in), quantize_mode="int8",
                     calibration_data={input_name: np.ascontiguousarray(pixel_values, dtype=np.float32)},
                     calibration_method=method, calibration_shapes=f"{input_name}:{batch}x3x{h}x{w}",
                     calibration_eps=["cpu"], high_precision_dtype=high_precision,
                     nodes_to_exclude=excluded or None,
                     use_external_data_format=external, output_path=str(out),
                     log_level="INFO" if _debug() else "ERROR")
        except Exception as exc:  # ModelOpt raises assorted types (AssertionError, ValueError, ORT errors)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ExportFailed(f"ModelOpt INT8 quantization of {src.name} failed: {first}",
                               "run with TOKCOMP_DEBUG=1 for ModelOpt's log; --high-precision fp32 avoids the "
                               "fp16 conversion step") from exc
    if not out.is_file():
        raise ExportFailed(f"ModelOpt finished without writing {out.name}",
                           "run with TOKCOMP_DEBUG=1 for ModelOpt's log")
    _single_file(out)
    model = onnx.load(str(out), load_external_data=False)
    counts = qdq_counts(model)
    if not counts["quantize_linear"] or not counts["dequantize_linear"]:
        raise ExportFailed(f"ModelOpt inserted no Q/DQ node into {src.name} (QuantizeLinear "
                           f"{counts['quantize_linear']}, DequantizeLinear {counts['dequantize_linear']}): "
                           "nothing would run in int8",
                           "INT8 quantizes MatMul/Conv/Gemm inputs; an encoder without them has no int8 variant")
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    facts = {**counts, "ops_after_dq": _ops_after_dq(model), "high_precision": high_precision,
             "opset": opset, "not_quantized": excluded}
    return out, facts

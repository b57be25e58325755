"""torch → ONNX with the dynamo exporter, then the checks every bundle must pass.

The graph has one input `pixel_values` [batch, 3, H, W] float32 and outputs `tokens` (+ `indices`,
+ `merge_map`).
The batch axis is dynamic within [batch_min, batch_max]; H and W are static.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path
from typing import Any

from ..errors import ExportFailed

INPUT_NAME = "pixel_values"
BATCH_DIM = "batch"
# protobuf refuses to serialise a single message over 2 GiB; leave headroom for the graph itself.
EXTERNAL_DATA_THRESHOLD = 1_900_000_000
EXTERNAL_DATA_FILE = "model.onnx.data"


def output_names(extra: tuple[str, ...] = ()) -> list[str]:
    """`tokens`, then the plan's extra outputs (CompressionPlan.extra_outputs: `indices`, `merge_map`)."""
    return ["tokens", *extra]


@contextlib.contextmanager
def _quiet_exporter():
    """The dynamo exporter prints progress and warnings to stdout/logging; keep the CLI output ours."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "onnxscript", "torch._dynamo", "torch.export")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lvl in zip(loggers, levels):
            lg.setLevel(lvl)


def export_to_proto(model, image_size: tuple[int, int], *, batch_min: int, batch_max: int, opset: int,
                    extra_outputs: tuple[str, ...] = ()):
    """Export `model` and return the ONNX ModelProto (weights inline, names fixed).

    Traced at batch 2 where the range allows it: a size-1 dimension gets specialised by torch.export,
    which would freeze the batch axis.
    """
    import torch

    h, w = image_size
    trace_batch = min(max(2, batch_min), batch_max)
    example = torch.zeros(trace_batch, 3, h, w, dtype=torch.float32)
    dynamic = batch_min != batch_max
    dynamic_shapes = ({INPUT_NAME: {0: torch.export.Dim(BATCH_DIM, min=batch_min, max=batch_max)}}
                      if dynamic else None)
    names = output_names(extra_outputs)
    # nn.MultiheadAttention's fused fast path is not exportable (user modules may use it).
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.no_grad(), _quiet_exporter():
            program = torch.onnx.export(
                model, (example,), dynamo=True, input_names=[INPUT_NAME], output_names=names,
                dynamic_shapes=dynamic_shapes, opset_version=opset, optimize=True, verify=False,
                external_data=False, report=False)
    except Exception as exc:  # the exporter raises many types; name the first line of the cause
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportFailed(f"torch.onnx export failed: {first}",
                           "run with TOKCOMP_DEBUG=1 for the full trace; check the model has no "
                           "data-dependent Python branches") from exc
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    proto = program.model_proto
    name_batch_axis(proto, dynamic)
    return proto


def name_batch_axis(proto, dynamic: bool) -> None:
    """Give the batch axis of every graph input/output the symbolic name `batch` (the exporter's
    symbol names vary between torch releases; the manifest and TensorRT profiles refer to it by name)."""
    if not dynamic:
        return
    for vi in list(proto.graph.input) + list(proto.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_param = BATCH_DIM


def proto_nbytes(proto) -> int:
    return sum(t.ByteSize() for t in proto.graph.initializer)


def save_proto(proto, path: Path) -> list[str]:
    """Save deterministically; weights go to `model.onnx.data` only when the model nears 2 GB.

    Returns the names of the files written (for the manifest's checksums).
    """
    import onnx

    large = proto_nbytes(proto) > EXTERNAL_DATA_THRESHOLD
    if large:
        onnx.save_model(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=EXTERNAL_DATA_FILE, size_threshold=1024)
        return [path.name, EXTERNAL_DATA_FILE]
    path.write_bytes(proto.SerializeToString(deterministic=True))
    return [path.name]


def check_onnx(path: Path, expected: dict[str, dict[str, Any]]) -> None:
    """Full onnx.checker, strict shape inference, and graph I/O equal to what the manifest will say.

    Args:
        expected: name → {"shape": [...], "dtype": "float32"|"int64"} for every input and output.
    """
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportFailed(f"onnx.checker rejected {path.name}: {str(exc).splitlines()[0]}",
                           "report this with TOKCOMP_DEBUG=1 output") from exc
    model = onnx.load(str(path), load_external_data=False)
    inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True) \
        if not _has_external(model) else model
    actual = {vi.name: _describe(vi) for vi in list(inferred.graph.input) + list(inferred.graph.output)}
    for name, want in expected.items():
        got = actual.get(name)
        if got != {"shape": want["shape"], "dtype": want["dtype"]}:
            raise ExportFailed(f"graph I/O {name} is {got}, the manifest expects {want}",
                               "this is a bug in the exporter configuration; report it")
    extra = set(actual) - set(expected)
    if extra:
        raise ExportFailed(f"graph has unexpected I/O {sorted(extra)}", "report this bug")


def _has_external(model) -> bool:
    from onnx.external_data_helper import uses_external_data

    return any(uses_external_data(t) for t in model.graph.initializer)


_DTYPES = {1: "float32", 10: "float16", 7: "int64", 2: "uint8", 6: "int32", 16: "bfloat16"}


def _describe(vi) -> dict[str, Any]:
    tt = vi.type.tensor_type
    shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tt.shape.dim]
    return {"shape": shape, "dtype": _DTYPES.get(tt.elem_type, str(tt.elem_type))}


def cleanup_proto(proto):
    """onnxslim: constant folding and dead-node removal; the caller checks the outputs did not change."""
    import onnxslim

    with _quiet_exporter():
        return onnxslim.slim(proto)

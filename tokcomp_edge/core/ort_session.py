"""The one ONNX Runtime session loader: every stage (export parity, variant checks, the int8 check,
validate's runner, debug) opens its sessions here, with settings it states in what it writes.

Graph optimisation is ORT_ENABLE_ALL without the NchwcTransformer: onnxruntime 1.24's NCHWc layout
rewrite segfaults while creating the session for some AutoCast fp16 ViT graphs (seen with a Conv patch
embedding + nn.TransformerEncoderLayer encoder), and a ViT has no conv stack for it to speed up beyond
the patch embedding. It changes speed, not results; every other fusion stays on.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

LEVELS = ("disable", "basic", "extended", "all")
DISABLED_OPTIMIZERS = ("NchwcTransformer",)


@dataclass(frozen=True)
class SessionSettings:
    """How a session is opened.

    Attributes:
        providers: execution providers in order of preference (ONNX Runtime's names).
        threads: intra-op threads; None = one per core of this machine.
        optimization: graph optimisation level, one of LEVELS.
    """

    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    threads: int | None = None
    optimization: str = "all"

    def describe(self) -> str:
        """One line for reports: level, what is disabled, threads."""
        threads = self.threads or f"{os.cpu_count() or 1} (one per core)"
        return (f"ORT_ENABLE_{self.optimization.upper()} without {', '.join(DISABLED_OPTIMIZERS)}, "
                f"{threads} intra-op threads")


CPU = SessionSettings()


def ort_session(model: str | Path | bytes, settings: SessionSettings = CPU):
    """An ONNX Runtime InferenceSession for a file path or serialised model bytes.

    Args:
        model: an .onnx path (external data beside it) or ModelProto.SerializeToString().
        settings: providers, threads, optimisation level.
    Returns:
        onnxruntime.InferenceSession (providers as ONNX Runtime granted them: callers that asked for an
        accelerator check `get_providers()` themselves).
    """
    import onnxruntime as ort

    if settings.optimization not in LEVELS:
        raise ValueError(f"optimization {settings.optimization!r} is not one of {LEVELS}")
    opts = ort.SessionOptions()
    opts.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[settings.optimization]
    opts.intra_op_num_threads = int(settings.threads or os.cpu_count() or 1)
    opts.log_severity_level = 3
    src = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(src, sess_options=opts, providers=list(settings.providers),
                                disabled_optimizers=list(DISABLED_OPTIMIZERS))


def runtime_label(sess, settings: SessionSettings = CPU) -> str:
    """`onnxruntime 1.24.4 CPUExecutionProvider (ORT_ENABLE_ALL without NchwcTransformer, 2 threads)`."""
    import onnxruntime

    return f"onnxruntime {onnxruntime.__version__} {sess.get_providers()[0]} ({settings.describe()})"


def session_with_outputs(model, extra: dict[str, int], settings: SessionSettings = CPU):
    """A session over a copy of `model` with extra graph outputs (tensor name → ONNX elem type).

    Args:
        model: an onnx.ModelProto (not modified).
        extra: intermediate tensors to expose; names already among the outputs are skipped.
    Returns:
        InferenceSession. Models past protobuf's 2 GB limit go through a temporary external-data file.
    """
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    have = {o.name for o in copy.graph.output}
    for name, elem in extra.items():
        if name not in have:
            copy.graph.output.append(onnx.helper.make_tensor_value_info(name, elem, None))
    if copy.ByteSize() < 1_800_000_000:
        return ort_session(copy.SerializeToString(), settings)
    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp) / "probed.onnx"
        onnx.save_model(copy, str(big), save_as_external_data=True, location="probed.onnx.data")
        return ort_session(big, settings)


def tensor_types(model) -> dict[str, int]:
    """ONNX elem type of every named tensor shape inference can type (inputs, outputs, intermediates,
    initializers)."""
    import onnx

    try:
        typed = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:  # noqa: BLE001 - a graph inference cannot type: the caller gets what it can
        typed = model
    g = typed.graph
    types = {vi.name: vi.type.tensor_type.elem_type for vi in list(g.input) + list(g.value_info) + list(g.output)
             if vi.type.HasField("tensor_type")}
    types.update({t.name: t.data_type for t in g.initializer})
    return types

"""ONNX Runtime runner: the bundle's ONNX on CPU, CUDA or ONNX Runtime's TensorRT execution provider.

ONNX Runtime silently falls back to CPU when a requested provider cannot be created (missing CUDA or
cuDNN libraries, no GPU): it logs to the process's stderr and carries on. So the runner records the
providers the session really uses (`session.get_providers()`), whether that is what was asked, and the
loader's own explanation, captured from stderr while the session is created.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import InputError, RuntimeMissing
from .base import Runner

DEVICES = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "trt-ep": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


@contextlib.contextmanager
def capture_stderr_fd() -> Iterator[list[str]]:
    """Capture what native code writes to file descriptor 2 inside the block (lines appended on exit).

    ONNX Runtime's C++ logger writes to fd 2 directly, bypassing sys.stderr.
    """
    lines: list[str] = []
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            text = tmp.read().decode("utf-8", "replace")
            lines.extend(ln for ln in (_strip_ansi(x).strip() for x in text.splitlines()) if ln)


def _has_fp16(path: Path) -> bool:
    """Whether the graph stores any float16 tensor (initializer, I/O or value_info)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    fp16 = onnx.TensorProto.FLOAT16
    if any(t.data_type == fp16 for t in model.graph.initializer):
        return True
    infos = list(model.graph.input) + list(model.graph.output) + list(model.graph.value_info)
    return any(v.type.tensor_type.elem_type == fp16 for v in infos) or any(
        a.name == "to" and a.i == fp16 for n in model.graph.node if n.op_type == "Cast" for a in n.attribute)


def _strip_ansi(s: str) -> str:
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", s)


class OnnxRuntimeRunner(Runner):
    """Runs an ONNX file with ONNX Runtime.

    Inference goes through Polygraphy's OnnxrtRunner (it fits: a session in, name→array out). The session
    is built here rather than with Polygraphy's SessionFromOnnx because that loader errors on a provider
    the build lacks and exposes no session options; we want threads and optimisation level set, and the
    fallback recorded rather than refused.
    """

    label = "onnxruntime"

    def __init__(self, onnx_path: Path, device: str = "cpu", threads: int | None = None,
                 emulate_fp16: bool = True):
        """Args:
            onnx_path: the model file (external data beside it is found by ONNX Runtime).
            device: `cpu`, `cuda` or `trt-ep`.
            threads: intra-op threads (None: ONNX Runtime's default, the physical cores).
            emulate_fp16: on CPU, run a graph that holds fp16 tensors (fp16 and int8 variants) through
                tokcomp_edge.export.fp16_emulation. ONNX Runtime's CPU provider computes most fp16 ops in
                fp32 without rounding in between, and its QuantizeLinear truncates fp16 inputs instead of
                rounding them (onnxruntime#18576): natively it over-states fp16 accuracy and under-states
                int8's, while the emulation rounds where an fp16/int8 engine rounds.
        """
        super().__init__()
        if device not in DEVICES:
            raise InputError(f"unknown --device {device!r}", f"use one of {', '.join(DEVICES)}")
        self.onnx_path = Path(onnx_path)
        self.device = device
        self.threads = threads
        self.emulate_fp16 = emulate_fp16
        self._runner = None

    def _activate(self) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            from ...extras import install_line

            raise RuntimeMissing("onnxruntime is not installed", f"{install_line('ort')} (or [ort-gpu] for the "
                                 "CUDA build)") from exc
        from polygraphy.backend.onnxrt import OnnxrtRunner

        requested = DEVICES[self.device]
        available = ort.get_available_providers()
        providers = [p for p in requested if p in available]
        from ...core.ort_session import SessionSettings, ort_session

        settings = SessionSettings(providers=tuple(providers), threads=self.threads or None)
        source, rounding = self._model_source(providers)
        with capture_stderr_fd() as log:
            try:
                sess = ort_session(source, settings)
            except Exception as exc:  # ORT raises its own Fail/InvalidGraph types
                raise InputError(f"ONNX Runtime cannot load {self.onnx_path.name}: {str(exc).splitlines()[0]}",
                                 "re-export the bundle; run with TOKCOMP_DEBUG=1 for details") from exc
        actual = list(sess.get_providers())
        # Every accelerator asked for must be in the session, not only the first: trt-ep asks for TensorRT
        # and CUDA, and a session running CUDA alone has fallen back too. CPU is the last resort, not a wish.
        missing = [p for p in requested if p != "CPUExecutionProvider" and p not in actual]
        fell_back = bool(missing)
        self.info = {
            "runtime": "onnxruntime",
            "version": ort.__version__,
            "device_requested": self.device,
            "providers_requested": requested,
            "providers_available": list(available),
            "providers": actual,
            "ran_on": actual[0] if actual else None,
            "fell_back": fell_back,
            "providers_missing": missing,
            "fallback_reason": _fallback_reason(log, missing[0], available) if fell_back else None,
            "intra_op_threads": settings.threads or os.cpu_count() or 1,
            "graph_optimization": settings.describe(),
            "fp16_rounding": rounding,
        }
        self._runner = OnnxrtRunner(sess, name=f"onnxrt-{self.device}")
        self._runner.activate()
        self.input_meta = {i.name: (i.type, i.shape) for i in sess.get_inputs()}
        self.output_names = [o.name for o in sess.get_outputs()]

    def _model_source(self, providers: list[str]) -> tuple[str | bytes, str]:
        """The model ONNX Runtime loads (a path, or the emulated graph's bytes) and how fp16 is rounded."""
        if not (self.emulate_fp16 and providers[:1] == ["CPUExecutionProvider"] and _has_fp16(self.onnx_path)):
            return str(self.onnx_path), "native"
        import onnx

        from ...export.fp16_emulation import emulate_fp16

        emulated = emulate_fp16(onnx.load(str(self.onnx_path)))
        if emulated is None:  # control-flow subgraphs: the rewrite does not descend into them
            return str(self.onnx_path), "native (graph has subgraphs; emulation not possible)"
        return emulated.SerializeToString(), "emulated fp16 rounding (as an fp16/int8 engine computes)"

    def session_model(self):
        """The ONNX model (ModelProto) this runner's session loads on the providers it ran on: the emulated
        graph for an fp16 file on CPU (validation/tome_judge.py reads ToMe's per-block maps from it)."""
        import onnx

        providers = list(self.info.get("providers") or DEVICES[self.device])
        source, _ = self._model_source(providers)
        return onnx.load_from_string(source) if isinstance(source, bytes) else onnx.load(source)

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        # Inputs were built from the manifest and checked by the caller; skipping Polygraphy's per-call
        # metadata check keeps it out of the timed loop.
        return dict(self._runner.infer(feed, check_inputs=False))

    def _deactivate(self) -> None:
        self._runner.deactivate()
        self._runner = None

    @property
    def on_gpu(self) -> bool:
        return bool(self.info) and self.info.get("ran_on") in ("CUDAExecutionProvider", "TensorrtExecutionProvider")

    def gpu_memory(self) -> dict[str, Any] | None:
        if not self.on_gpu:
            return None
        from ..memory import cuda_mem_info

        info = cuda_mem_info()
        if info is None:
            return None
        free, total = info
        return {"device_used_bytes": total - free, "device_total_bytes": total,
                "note": "whole device in use (CUDA runtime view), includes other processes"}


def _fallback_reason(log: list[str], wanted: str, available: list[str]) -> str:
    if wanted not in available:
        return f"{wanted} is not in this onnxruntime build (available: {', '.join(available)})"
    hits = [ln for ln in log if "Failed" in ln or "error" in ln.lower() or "Require" in ln]
    reason = hits[0] if hits else "ONNX Runtime could not create it and fell back without raising"
    return reason[:400]

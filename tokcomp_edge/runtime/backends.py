"""What the device runtime runs a bundle's vision path on: ONNX Runtime (any variant the bundle holds) or a
TensorRT engine built from it. Both take the tiles of a request and return the graph's outputs per tile.

A backend knows its input (name, NCHW float or NHWC uint8, dtype) and its batch range, and `run` splits the
tiles into calls of at most the range's maximum. A static-batch engine (min = max = B > 1) cannot take a
last call of fewer than B tiles: that is refused in one line unless the runtime was opened with
`pad_static=True` (the call is then padded with copies of its last tile, whose outputs are dropped — the
tiles of a batch never see each other in these vision paths).

The TensorRT backend is thin on purpose: bindings by name from the engine, device buffers and page-locked
(pinned) host buffers kept across calls and grown when a call needs more, copies queued asynchronously on
one CUDA stream through Polygraphy's CUDA wrapper (libcudart by ctypes) — no PyTorch, no cuda-python.
"""

from __future__ import annotations

import abc
import ctypes
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core.bundle import Bundle
from ..engines.sidecar import check_engine_file, read_sidecar, sidecar_batch_range, sidecar_onnx_sha
from ..errors import BundleError, InputError, RuntimeMissing

BACKENDS = ("onnxruntime", "tensorrt")
LAYOUTS = ("nchw-float", "nhwc-uint8")
_NP = {"float32": np.float32, "float16": np.float16, "uint8": np.uint8}
# TensorRT DataType member name → numpy dtype (names are the same in 10.x and 11.x).
_TRT_NP = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32, "INT64": np.int64,
           "BOOL": np.bool_, "UINT8": np.uint8}


@dataclass(frozen=True)
class BackendIO:
    """What a backend takes and gives.

    Attributes:
        input_name: the graph's image input (`pixel_values`).
        layout: `nchw-float` (normalised float pixels [B,3,H,W]) or `nhwc-uint8` (framed pixels [B,H,W,3]).
        dtype: the input's numpy dtype (float32, float16 or uint8).
        outputs: output names, `tokens` first.
        batch_min, batch_max: the batch sizes one call accepts.
    """

    input_name: str
    layout: str
    dtype: np.dtype
    outputs: tuple[str, ...]
    batch_min: int
    batch_max: int

    @property
    def static(self) -> bool:
        return self.batch_min == self.batch_max


def variant_io(bundle: Bundle, variant: str, batch: tuple[int, int] | None = None) -> BackendIO:
    """The BackendIO of a bundle variant (BundleError naming the variants when it is missing)."""
    meta = bundle.variant(variant)
    inputs = meta.get("inputs") or bundle.onnx["inputs"]
    outputs = meta.get("outputs") or bundle.onnx["outputs"]
    if len(inputs) != 1:
        raise BundleError(f"variant {variant} of {bundle.path} has {len(inputs)} inputs, the runtime feeds one image "
                          "input", "re-export the bundle")
    layout = meta.get("input_layout") or ("nhwc-uint8" if inputs[0].get("dtype") == "uint8" else "nchw-float")
    dtype = inputs[0].get("dtype", "float32")
    if layout not in LAYOUTS or dtype not in _NP:
        raise BundleError(f"variant {variant} takes {dtype} {layout} input, which the runtime does not feed",
                          f"use a variant with one of {', '.join(LAYOUTS)}")
    lo, hi = batch or bundle.batch_range
    return BackendIO(input_name=inputs[0]["name"], layout=layout, dtype=np.dtype(_NP[dtype]),
                     outputs=tuple(o["name"] for o in outputs), batch_min=int(lo), batch_max=int(hi))


class Backend(abc.ABC):
    """One model on one runtime. `run` for a request's tiles, `infer` for exactly one call.

    Attributes:
        io: BackendIO.
        label: what ran, for the timings and the layout (`onnxruntime CPUExecutionProvider fp32`, …).
        calls: engine calls made by the last `run`; inference_ms: their summed wall time.
    """

    label = "backend"

    def __init__(self, io: BackendIO, pad_static: bool = False):
        self.io = io
        self.pad_static = pad_static
        self.calls = 0
        self.inference_ms = 0.0

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Run one call on `batch` (its size within the batch range, the input's shape and dtype).

        Raises:
            InputError: a batch size the model does not take, or pixels of the wrong layout.
        """
        n = int(batch.shape[0])
        if not self.io.batch_min <= n <= self.io.batch_max:
            what = (f"exactly {self.io.batch_min}" if self.io.static
                    else f"{self.io.batch_min}–{self.io.batch_max}")
            raise InputError(f"{self.label} takes {what} tiles per call, not {n}",
                             "rebuild the engine with a dynamic batch profile (batch min 1), or open the runtime "
                             "with pad_static=True" if self.io.static else "split the tiles")
        x = np.ascontiguousarray(batch, dtype=self.io.dtype)
        return self._infer(x)

    def run(self, tiles: np.ndarray) -> dict[str, np.ndarray]:
        """All tiles of a request, in calls of at most batch_max; outputs concatenated in tile order."""
        n = int(tiles.shape[0])
        if n == 0:
            raise InputError("no tiles to run", "pass at least one image")
        step = self.io.batch_max
        parts: list[dict[str, np.ndarray]] = []
        self.calls, self.inference_ms = 0, 0.0
        for start in range(0, n, step):
            chunk = tiles[start:start + step]
            real = int(chunk.shape[0])
            if real < self.io.batch_min:
                if not self.pad_static:
                    raise InputError(f"{self.label} is static at batch {self.io.batch_min}, and the request "
                                     f"leaves a last call of {real} tile(s)",
                                     "rebuild the engine with a dynamic batch profile (batch min 1), or open the "
                                     "runtime with pad_static=True")
                fill = np.repeat(chunk[-1:], self.io.batch_min - real, axis=0)
                chunk = np.concatenate([chunk, fill])
            t0 = time.perf_counter()
            out = self.infer(chunk)
            self.inference_ms += (time.perf_counter() - t0) * 1e3
            self.calls += 1
            parts.append({k: v[:real] for k, v in out.items()})
        return {k: np.concatenate([p[k] for p in parts]) if len(parts) > 1 else parts[0][k] for k in parts[0]}

    @abc.abstractmethod
    def _infer(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """One call; returns host arrays the caller may keep."""

    def close(self) -> None:
        """Release the session / engine and its buffers."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class OrtBackend(Backend):
    """A bundle variant on ONNX Runtime (CPU by default; `providers` for CUDA / TensorRT EP).

    The graph runs as exported: on CPU an fp16 graph is computed by ONNX Runtime's own kernels (validate's
    runner emulates fp16 rounding instead; see validation/runners/onnxrt.py for why it differs slightly).
    """

    def __init__(self, bundle: Bundle, variant: str = "fp32", providers: tuple[str, ...] = ("CPUExecutionProvider",),
                 threads: int | None = None, pad_static: bool = False):
        super().__init__(variant_io(bundle, variant), pad_static)
        from ..extras import require_extra

        require_extra("ort", "running a bundle on ONNX Runtime", ("onnxruntime",),
                      instead="pass engine=PLAN to run a TensorRT engine")
        import onnxruntime as ort

        from ..core.ort_session import SessionSettings, ort_session

        path = bundle.onnx_path(variant)
        wanted = tuple(p for p in providers if p in ort.get_available_providers()) or ("CPUExecutionProvider",)
        try:
            self.session = ort_session(path, SessionSettings(providers=wanted, threads=threads))
        except Exception as exc:  # noqa: BLE001 - ORT raises its own Fail/InvalidGraph types
            raise BundleError(f"ONNX Runtime cannot load {path.name}: {str(exc).splitlines()[0]}",
                              "re-export the bundle") from exc
        names = [i.name for i in self.session.get_inputs()]
        if names != [self.io.input_name]:
            raise BundleError(f"{path.name} takes inputs {names}, its manifest says [{self.io.input_name!r}]",
                              "re-export the bundle")
        self.variant = variant
        self.label = f"onnxruntime {self.session.get_providers()[0]} {variant}"

    def _infer(self, x: np.ndarray) -> dict[str, np.ndarray]:
        values = self.session.run(list(self.io.outputs), {self.io.input_name: x})
        return dict(zip(self.io.outputs, values))

    def close(self) -> None:
        self.session = None


# -- TensorRT -----------------------------------------------------------------------------------------


def engine_sidecar(plan: Path) -> dict[str, Any]:
    """The engine's engine.json, after checking that the .plan is the file it describes (its sha256)."""
    plan = Path(plan)
    if not plan.is_file():
        raise InputError(f"engine {plan} does not exist", "pass the .plan written by `tokcomp build`")
    sidecar = read_sidecar(plan)
    check_engine_file(plan, sidecar)
    return sidecar


def match_engine(bundle: Bundle, engine: Path, variant: str | None = None) -> tuple[str, tuple[int, int], dict]:
    """Check that `engine` was built from `bundle` (the sha256 of the source ONNX, as engines/ records it).

    Returns:
        (variant the engine was built from, (batch min, max) of its optimisation profile, engine.json).
    Raises:
        BundleError / InputError (exit 2): another bundle's engine, a changed .plan, a variant mismatch.
    """
    sidecar = engine_sidecar(engine)
    rec = sidecar.get("bundle") if isinstance(sidecar.get("bundle"), dict) else {}
    built_from = str(sidecar.get("variant") or rec.get("variant") or "fp32")
    if variant is not None and variant != built_from:
        raise InputError(f"variant {variant} was asked for, but engine {Path(engine).name} was built from variant "
                         f"{built_from}", "leave the variant out with an engine; it runs what it was built from")
    if built_from not in bundle.variants():
        raise BundleError(f"engine {Path(engine).name} was built from variant {built_from!r}, which bundle "
                          f"{bundle.path} does not have", "pass the bundle the engine was built from")
    onnx_file = bundle.variant(built_from)["file"]
    have = bundle.manifest["files"][onnx_file]["sha256"]
    want = sidecar_onnx_sha(sidecar)
    if want != have:
        raise BundleError(f"engine {Path(engine).name} was not built from bundle {bundle.path} (its source ONNX "
                          f"sha256 is {str(want)[:12]}…, the bundle's {onnx_file} is {have[:12]}…)",
                          "pass the bundle the engine was built from, or rebuild the engine from this bundle")
    io = variant_io(bundle, built_from)
    batch = sidecar_batch_range(sidecar, io.input_name)
    if batch is None:
        raise BundleError(f"the engine.json of {Path(engine).name} records no batch range for {io.input_name}",
                          "rebuild the engine with `tokcomp build`")
    return built_from, batch, sidecar


class _Pinned:
    """Page-locked host memory (cudaHostAlloc through Polygraphy's libcudart handle), grown on demand."""

    def __init__(self, cuda):
        self._cuda, self.ptr, self.nbytes = cuda, None, 0

    def view(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        need = int(np.prod(shape)) * np.dtype(dtype).itemsize
        if need > self.nbytes:
            self.free()
            ptr = ctypes.c_void_p()
            self._cuda.check(self._cuda.handle.cudaHostAlloc(ctypes.byref(ptr), ctypes.c_size_t(max(need, 1)), 0))
            self.ptr, self.nbytes = ptr.value, max(need, 1)
        raw = (ctypes.c_char * self.nbytes).from_address(self.ptr)
        return np.frombuffer(raw, dtype=np.uint8, count=need).view(dtype).reshape(shape)

    def free(self) -> None:
        if self.ptr:
            self._cuda.check(self._cuda.handle.cudaFreeHost(ctypes.c_void_p(self.ptr)))
        self.ptr, self.nbytes = None, 0


class TrtBackend(Backend):
    """A TensorRT engine built from the bundle (`tokcomp build`), matched to it by engine.json.

    Args:
        bundle: the bundle the engine was built from.
        plan: the .plan file (its engine.json beside it).
        variant: the variant asked for (None: the engine's own).
        pad_static: pad a static-batch engine's last call (see the module docstring).
    Raises:
        RuntimeMissing (exit 3): no TensorRT, no GPU, no CUDA runtime.
        BundleError / InputError (exit 2): the engine does not belong to the bundle (sha256, I/O names).
    """

    def __init__(self, bundle: Bundle, plan: Path, variant: str | None = None, pad_static: bool = False):
        plan = Path(plan)
        built_from, batch, sidecar = match_engine(bundle, plan, variant)
        super().__init__(variant_io(bundle, built_from, batch), pad_static)
        self.variant, self.engine_path = built_from, plan
        from ..engines.trt_import import import_tensorrt, require_gpu

        trt = import_tensorrt()
        gpu = require_gpu()
        from polygraphy import cuda

        try:
            self._stream = cuda.Stream()
            self._cuda = cuda.wrapper()
        except Exception as exc:  # noqa: BLE001 - OSError / PolygraphyException, by Polygraphy version
            raise RuntimeMissing(f"the CUDA runtime (libcudart) cannot be used on {gpu.name}: {exc}",
                                 "install the CUDA runtime TensorRT was built for (on a Jetson: JetPack's)") from exc
        self._cuda_mod = cuda
        self._logger = trt.Logger(trt.Logger.WARNING)
        try:
            runtime = trt.Runtime(self._logger)
        except (RuntimeError, TypeError) as exc:  # the factory returned NULL (driver/library mismatch)
            raise RuntimeMissing(f"TensorRT could not create a runtime on {gpu.name}: {exc}",
                                 "check that the NVIDIA driver matches the CUDA version TensorRT was built "
                                 "for") from exc
        if (sidecar.get("profile") or {}).get("version_compatible"):
            runtime.engine_host_code_allowed = True
        self.engine = runtime.deserialize_cuda_engine(plan.read_bytes())
        self._runtime = runtime
        if self.engine is None:
            raise InputError(f"TensorRT {trt.__version__} cannot deserialize {plan.name}",
                             "engines are tied to the GPU and TensorRT version that built them: rebuild it here "
                             "with `tokcomp build`")
        self.context = self.engine.create_execution_context()
        names = {"in": [], "out": []}
        self._dtypes: dict[str, np.dtype] = {}
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            mode = self.engine.get_tensor_mode(name)
            names["in" if mode == trt.TensorIOMode.INPUT else "out"].append(name)
            self._dtypes[name] = np.dtype(_TRT_NP.get(self.engine.get_tensor_dtype(name).name, np.float32))
        if names["in"] != [self.io.input_name] or set(names["out"]) != set(self.io.outputs):
            raise BundleError(f"engine {plan.name} has inputs {names['in']} and outputs {names['out']}, variant "
                              f"{built_from} of {bundle.path} has [{self.io.input_name}] and {list(self.io.outputs)}",
                              "pass the bundle the engine was built from")
        try:
            fmt = self.engine.get_tensor_format(self.io.input_name, 0)
        except TypeError:  # older bindings take no profile index
            fmt = self.engine.get_tensor_format(self.io.input_name)
        if fmt != trt.TensorFormat.LINEAR:
            raise InputError(f"engine input {self.io.input_name} uses tensor format {fmt.name}; the runtime feeds "
                             "linear (row-major) pixels", "build the engine without an HWC input format")
        if self._dtypes[self.io.input_name] != self.io.dtype:
            raise BundleError(f"engine input {self.io.input_name} is {self._dtypes[self.io.input_name]}, variant "
                              f"{built_from} takes {self.io.dtype}", "pass the bundle the engine was built from")
        self._device: dict[str, Any] = {}
        self._host: dict[str, _Pinned] = {}
        self.label = f"tensorrt {trt.__version__} {built_from} on {gpu.name}"

    def _buffers(self, name: str, shape: tuple[int, ...], dtype: np.dtype):
        dev = self._device.get(name)
        if dev is None:
            dev = self._cuda_mod.DeviceArray(shape=shape, dtype=self._dtype_of(dtype))
            self._device[name] = dev
        host = self._host.setdefault(name, _Pinned(self._cuda))
        return dev.resize(shape), host.view(shape, dtype)

    @staticmethod
    def _dtype_of(dtype: np.dtype):
        from polygraphy.datatype import DataType

        return DataType.from_dtype(np.dtype(dtype))

    def _infer(self, x: np.ndarray) -> dict[str, np.ndarray]:
        ctx, stream = self.context, self._stream
        name = self.io.input_name
        if not ctx.set_input_shape(name, tuple(int(d) for d in x.shape)):
            raise InputError(f"engine input {name} does not accept shape {tuple(x.shape)}",
                             "rebuild the engine for this bundle's tile size and batch range")
        dev, host = self._buffers(name, tuple(x.shape), x.dtype)
        host[...] = x  # into pinned memory, so the copy below is truly asynchronous
        dev.copy_from(host, stream)
        ctx.set_tensor_address(name, dev.ptr)
        outs = {}
        for out in self.io.outputs:
            shape = tuple(int(d) for d in ctx.get_tensor_shape(out))
            dev_o, host_o = self._buffers(out, shape, self._dtypes[out])
            ctx.set_tensor_address(out, dev_o.ptr)
            outs[out] = (dev_o, host_o)
        if not ctx.execute_async_v3(stream.ptr):
            raise RuntimeError(f"TensorRT execute_async_v3 failed on {self.engine_path.name} (see the log above)")
        for dev_o, host_o in outs.values():
            dev_o.copy_to(host_o, stream)
        stream.synchronize()
        # Copies out of the pinned buffers: they are reused by the next call.
        return {k: np.array(h, dtype=np.float32 if h.dtype == np.float16 else h.dtype) for k, (_, h) in outs.items()}

    def close(self) -> None:
        for dev in self._device.values():
            dev.free()
        for host in self._host.values():
            host.free()
        self._device, self._host = {}, {}
        if getattr(self, "_stream", None) is not None:
            self._stream.free()
            self._stream = None
        self.context = self.engine = self._runtime = None


def open_backend(bundle: Bundle, engine: str | Path | None = None, backend: str = "onnxruntime",
                 variant: str | None = None, pad_static: bool = False,
                 providers: tuple[str, ...] = ("CPUExecutionProvider",), threads: int | None = None) -> Backend:
    """The backend for a bundle: its TensorRT engine when `engine` is given, else ONNX Runtime on `variant`.

    Raises:
        InputError (exit 2): an unknown backend, a variant the bundle lacks, an engine of another bundle.
        RuntimeMissing (exit 3): the runtime asked for is not installed.
    """
    if engine is not None or backend == "tensorrt":
        if engine is None:
            raise InputError("backend tensorrt needs an engine", "pass engine=PLAN (the .plan from `tokcomp build`)")
        return TrtBackend(bundle, Path(engine), variant, pad_static)
    if backend != "onnxruntime":
        raise InputError(f"unknown backend {backend!r}", f"use one of {', '.join(BACKENDS)}")
    return OrtBackend(bundle, variant or "fp32", providers=providers, threads=threads, pad_static=pad_static)

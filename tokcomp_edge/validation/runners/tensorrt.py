"""TensorRT runner: a serialized engine (.plan) on the GPU, TensorRT 10 and 11 name-based I/O.

Device memory and streams come from Polygraphy's ctypes wrapper of the CUDA runtime, so a Jetson with
JetPack (TensorRT, CUDA) but without PyTorch or cuda-python can validate.

Why not Polygraphy's TrtRunner: for an input built with an HWC `allowed_formats` it expects and returns
NHWC-shaped arrays, while ONNX Runtime and PyTorch take the same model's input as NCHW. To compare all
runtimes on one feed, this runner always takes the *logical* (ONNX) layout and does the channel-minor
packing itself (HWC, and HWC8/HWC16 with zero-padded channels).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ...errors import InputError, RuntimeMissing
from .base import Runner

# Channel-minor formats this runner packs itself, and the channel multiple each pads to.
_HWC_VECTOR = {"HWC": 1, "HWC8": 8, "HWC16": 16}
# TensorRT DataType member name → numpy dtype (by name: the same in 10.x and 11.x, and independent of
# whether the module came as `tensorrt` or as the bare `tensorrt_bindings`).
_NP_DTYPES = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32, "INT64": np.int64,
              "BOOL": np.bool_, "UINT8": np.uint8}


def load_tensorrt():
    """The tensorrt module, via the engines package's lazy importer (RuntimeMissing → exit 3)."""
    try:
        from ...engines.trt_import import import_tensorrt
    except ImportError as exc:  # the engines package is part of tokcomp; this only guards a broken install
        raise RuntimeMissing(f"tokcomp_edge.engines.trt_import is unavailable ({exc})",
                             "reinstall tokcomp-edge") from exc
    return import_tensorrt()


def to_channel_minor(x: np.ndarray, vector: int) -> np.ndarray:
    """[N, C, H, W] → [N, H, W, C'] contiguous, C' = C rounded up to a multiple of `vector` (zero padded)."""
    nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    c = nhwc.shape[-1]
    cpad = -(-c // vector) * vector
    if cpad == c:
        return nhwc
    out = np.zeros(nhwc.shape[:-1] + (cpad,), nhwc.dtype)
    out[..., :c] = nhwc
    return out


class TensorRTRunner(Runner):
    """Runs a serialized TensorRT engine.

    Args:
        engine_path: the .plan file.
        profile: optimization profile index to use.
        host_code_allowed: the engine was built version-compatible (its engine.json says so): it embeds
            its lean runtime, which TensorRT loads only when the runtime allows host code.
    """

    label = "tensorrt"

    def __init__(self, engine_path: Path, profile: int = 0, host_code_allowed: bool = False):
        super().__init__()
        self.engine_path = Path(engine_path)
        self.profile = profile
        self.host_code_allowed = host_code_allowed

    def _activate(self) -> None:
        trt = load_tensorrt()
        from ...engines.trt_import import require_gpu

        # Without a driver, trt.Runtime() fails deep inside the bindings; say it in one line instead.
        gpu = require_gpu()
        from polygraphy import cuda
        from polygraphy.datatype import DataType

        from ..memory import cuda_mem_info

        self._cuda, self._DataType = cuda, DataType
        try:
            # Polygraphy loads libcudart on first use; without it this is the first call that fails.
            self._stream = cuda.Stream()
        except Exception as exc:  # noqa: BLE001 - OSError / PolygraphyException, by Polygraphy version
            raise RuntimeMissing(f"the CUDA runtime (libcudart) cannot be used on {gpu.name}: "
                                 f"{str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}",
                                 "install the CUDA runtime TensorRT was built for (on a Jetson: JetPack's CUDA)") from exc
        before = cuda_mem_info()
        self._logger = trt.Logger(trt.Logger.WARNING)
        try:
            self._runtime = trt.Runtime(self._logger)
        except (RuntimeError, TypeError) as exc:  # the factory returned NULL (driver/library mismatch)
            raise RuntimeMissing(f"TensorRT could not create a runtime on {gpu.name}: {exc}",
                                 "check that the NVIDIA driver matches the CUDA version TensorRT was built for") from exc
        if self.host_code_allowed:
            self._runtime.engine_host_code_allowed = True
        self.engine = self._runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
        if self.engine is None:
            raise InputError(f"TensorRT {trt.__version__} cannot deserialize {self.engine_path.name}",
                             "engines are tied to the GPU and TensorRT version that built them: "
                             "rebuild it here with `tokcomp build`")
        self.context = self.engine.create_execution_context()
        if self.profile:
            self.context.set_optimization_profile_async(self.profile, self._stream.ptr)
        self.inputs, self.outputs = [], []
        self.formats: dict[str, str] = {}
        self.dtypes: dict[str, np.dtype] = {}
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            mode = self.engine.get_tensor_mode(name)
            (self.inputs if mode == trt.TensorIOMode.INPUT else self.outputs).append(name)
            dt = self.engine.get_tensor_dtype(name).name
            if dt not in _NP_DTYPES:
                raise InputError(f"engine tensor {name} has dtype {dt}, which has no numpy equivalent",
                                 "build the engine from a variant with float32/float16/uint8/int64 I/O")
            self.dtypes[name] = np.dtype(_NP_DTYPES[dt])
            try:
                fmt = self.engine.get_tensor_format(name, self.profile)
            except TypeError:  # older bindings take no profile index
                fmt = self.engine.get_tensor_format(name)
            self.formats[name] = fmt.name
            if mode == trt.TensorIOMode.INPUT and fmt != trt.TensorFormat.LINEAR and fmt.name not in _HWC_VECTOR:
                raise InputError(f"engine input {name} uses tensor format {fmt.name}, which this validator "
                                 "cannot pack", "build the engine with LINEAR or HWC input formats")
        self._buffers: dict[str, Any] = {}
        after = cuda_mem_info()
        # device_memory_size_v2 exists in 10.1+ and 11.x (the plain one is gone in 11).
        self._mem = {"context_device_memory_bytes": int(self.engine.device_memory_size_v2),
                     "engine_file_bytes": self.engine_path.stat().st_size,
                     "device_used_delta_bytes": (before[0] - after[0]) if before and after else None}
        self.info = {
            "runtime": "tensorrt",
            "version": trt.__version__,
            "engine": str(self.engine_path),
            "ran_on": f"TensorRT on {gpu.name}",
            "profile": self.profile,
            "io_formats": dict(self.formats),
            "io_dtypes": {k: str(v) for k, v in self.dtypes.items()},
        }

    def _buffer(self, name: str, shape: tuple[int, ...], dtype: np.dtype):
        buf = self._buffers.get(name)
        if buf is None:
            buf = self._cuda.DeviceArray(shape=shape, dtype=self._DataType.from_dtype(dtype))
            self._buffers[name] = buf
        return buf.resize(shape)

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ctx, stream = self.context, self._stream
        for name in self.inputs:
            if name not in feed:
                raise InputError(f"engine input {name!r} is not in the feed ({', '.join(feed)})",
                                 "the engine was built from a different bundle variant")
            x = np.asarray(feed[name])
            if x.dtype != self.dtypes[name]:
                # No silent cast: a float feed cast to the uint8 input of an nhwc engine, or fp32 rounded
                # to fp16, would validate something the application never sends.
                raise InputError(f"engine input {name} takes {self.dtypes[name]}, the feed is {x.dtype}",
                                 "validate the engine against the bundle variant it was built from")
            fmt = self.formats[name]
            if not ctx.set_input_shape(name, tuple(int(d) for d in x.shape)):
                raise InputError(f"engine input {name} does not accept shape {tuple(x.shape)}",
                                 "choose batch sizes inside the engine's optimization profile")
            host = to_channel_minor(x, _HWC_VECTOR[fmt]) if fmt in _HWC_VECTOR else np.ascontiguousarray(x)
            buf = self._buffer(name, host.shape, host.dtype)
            buf.copy_from(host, stream)
            ctx.set_tensor_address(name, buf.ptr)
        hosts = {}
        for name in self.outputs:
            shape = tuple(int(d) for d in ctx.get_tensor_shape(name))
            buf = self._buffer(name, shape, self.dtypes[name])
            ctx.set_tensor_address(name, buf.ptr)
            hosts[name] = np.empty(shape, self.dtypes[name])
        if not ctx.execute_async_v3(stream.ptr):
            raise RuntimeError(f"TensorRT execute_async_v3 failed on {self.engine_path.name} (see log above)")
        for name, host in hosts.items():
            self._buffers[name].copy_to(host, stream)
        stream.synchronize()
        return hosts

    def _deactivate(self) -> None:
        for buf in self._buffers.values():
            buf.free()
        self._buffers.clear()
        self._stream.free()
        del self.context, self.engine, self._runtime

    def gpu_memory(self) -> dict[str, Any] | None:
        return dict(self._mem) if self.active else None

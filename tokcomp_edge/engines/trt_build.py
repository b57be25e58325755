"""The TensorRT adapter: execute a BuildPlan with TensorRT's Python API (10.x and 11.x, one code path).

Deliberately thin and only documented API, because no development machine has TensorRT: every name
used here is checked against the real 10.3 and 11.x bindings by tests/trt_api (names, and call vs
property). Rules that keep one path for both majors:
- the network is created with STRONGLY_TYPED (never EXPLICIT_BATCH, gone in 11) and no precision
  builder flags (FP16/INT8 are gone in 11): precision comes from the ONNX variant's tensor types;
- HWC inputs via `allowed_formats`, checked against the dtype the parser gave the input.
Nothing is written to disk here: the caller writes the bytes this returns, atomically.
Variables are named after what they hold (builder, config, network, parser, profile, runtime, engine,
inspector, context, cache, tensor, layer, error): the conformance test keys its checks on these names.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ..errors import CheckFailed, LintError, ProfileError, RuntimeMissing
from .dla import (
    PlacementReport,
    dla_parser_flags,
    is_placement_message,
    parse_placement_report,
)
from .plan import BuildPlan
from .profile import FORMAT_DTYPES
from .trt_import import trt_version

MAX_KEPT_WARNINGS = 20


@dataclass
class BuiltEngine:
    """What a build produced, in memory.

    Attributes:
        plan_bytes: the serialized engine.
        inspector_json: engine inspector output (LayerInformationFormat.JSON, DETAILED verbosity).
        io: per I/O tensor of the engine: name, mode, dtype, shape, format, format_desc.
        placement: {"dla": n, "gpu": m, "basis": …, "kind": "prediction"}: network layers DLA accepts, before
            the build.
        placement_report: the builder's own "Layers running on DLA/GPU" report (what was really built).
        seconds: wall time of build_serialized_network.
        timing_cache: serialized updated timing cache, or None when caching is off.
        timing_cache_loaded: whether an existing cache file was accepted by this GPU/TensorRT.
        warnings: TensorRT warnings (first MAX_KEPT_WARNINGS).
    """

    plan_bytes: bytes
    inspector_json: str
    io: list[dict[str, Any]]
    placement: dict[str, Any]
    placement_report: PlacementReport
    seconds: float
    timing_cache: bytes | None
    timing_cache_loaded: bool
    warnings: list[str] = field(default_factory=list)


def make_logger(trt):
    """An ILogger that keeps warnings and errors (read after a failed build: TensorRT returns None), and of the
    INFO messages only the builder's DLA/GPU placement report."""

    class CapturingLogger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.errors: list[str] = []
            self.warnings: list[str] = []
            self.placement: list[str] = []

        def log(self, severity, msg):
            if severity in (trt.ILogger.Severity.INTERNAL_ERROR, trt.ILogger.Severity.ERROR):
                self.errors.append(msg)
            elif severity == trt.ILogger.Severity.WARNING:
                self.warnings.append(msg)
            elif severity == trt.ILogger.Severity.INFO and is_placement_message(msg):
                self.placement.append(msg)

    return CapturingLogger()


def dtype_names(trt) -> dict[Any, str]:
    """TensorRT DataType → numpy-style name (as the manifest writes dtypes)."""
    return {trt.DataType.FLOAT: "float32", trt.DataType.HALF: "float16", trt.DataType.BF16: "bfloat16",
            trt.DataType.INT8: "int8", trt.DataType.UINT8: "uint8", trt.DataType.INT32: "int32",
            trt.DataType.INT64: "int64", trt.DataType.BOOL: "bool"}


def format_parser_error(error) -> str:
    """One line per ONNX parser error, naming the failing node (index, name, operator)."""
    node = error.node()
    where = f"node {node} {error.node_name()!r} ({error.node_operator()})" if node >= 0 else "graph"
    return f"{where}: {error.desc()} [{error.code()}]"


def _parse(trt, builder, logger, plan: BuildPlan, version: str):
    # STRONGLY_TYPED: tensor types come from the ONNX; the only flag valid on both 10.x and 11.x.
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if plan.profile.uses_dla:
        # ADJUST_FOR_DLA (10.16+, 11.x) lets the parser reshape layers for the DLA; the names come from a
        # version table that tests/trt_api checks against the real bindings of each version.
        for name in dla_parser_flags(version):
            parser.set_flag(getattr(trt.OnnxParserFlag, name))
    # parse_from_file resolves external weight files next to the model (bundles > 2 GB).
    if not parser.parse_from_file(str(plan.onnx_path)):
        lines = [format_parser_error(parser.get_error(i)) for i in range(parser.num_errors)]
        raise LintError(f"TensorRT's ONNX parser rejected {plan.onnx_path.name}: " + "; ".join(lines or logger.errors),
                        f"run `tokcomp lint {plan.onnx_path}` for the offending nodes, then re-export")
    return network, parser


def _set_input_formats(trt, network, plan: BuildPlan) -> None:
    formats = {"hwc": trt.TensorFormat.HWC, "hwc8": trt.TensorFormat.HWC8, "hwc16": trt.TensorFormat.HWC16}
    names = dtype_names(trt)
    planned = {i.name: i for i in plan.inputs}
    for index in range(network.num_inputs):
        tensor = network.get_input(index)
        inp = planned.get(tensor.name)
        if inp is None:
            raise CheckFailed(f"{plan.onnx_path.name} has input {tensor.name!r}, the manifest lists "
                              f"{', '.join(planned)}", "re-export the bundle")
        if inp.engine_format == "linear":
            continue
        dtype = names.get(tensor.dtype, str(tensor.dtype))
        allowed = FORMAT_DTYPES[inp.engine_format]
        if dtype not in allowed:
            raise ProfileError(f"engine_input_format = {inp.engine_format!r} needs a {' or '.join(allowed)} input; "
                               f"{tensor.name!r} of {plan.onnx_path.name} is {dtype}",
                               "use engine_input_format = 'linear' or a variant with a matching input dtype")
        tensor.allowed_formats = 1 << int(formats[inp.engine_format])


def _configure(trt, builder, plan: BuildPlan):
    p = plan.profile
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    for inp in plan.inputs:
        profile.set_shape(inp.name, inp.shape_min, inp.shape_opt, inp.shape_max)
    config.add_optimization_profile(profile)
    if p.workspace:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, p.workspace)
    config.builder_optimization_level = p.builder_optimization_level
    # DETAILED: the inspector then reports per-layer formats, which is how we prove fp16/int8 layers.
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    if p.hardware_compatibility == "ampere+":
        config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
    if p.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    if p.dla_core is not None:
        cores = builder.num_DLA_cores
        if p.dla_core >= cores:
            raise RuntimeMissing(f"profile {p.name!r} asks for DLA core {p.dla_core}, this TensorRT/GPU has "
                                 f"{cores} DLA core(s)",
                                 "build DLA engines on a Jetson AGX Orin with TensorRT 11.4.1+ (JetPack 7.2.2+), or use orin-fp16")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = p.dla_core
        if p.gpu_fallback:
            config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    return config


def _placement(trt, network, config, plan: BuildPlan) -> dict[str, Any]:
    total = network.num_layers
    if plan.profile.dla_core is None:
        return {"dla": 0, "gpu": total, "basis": "network layers; GPU build", "kind": "prediction"}
    on_dla = 0
    for index in range(total):
        layer = network.get_layer(index)
        if config.can_run_on_DLA(layer):
            on_dla += 1
    basis = "network layers (before fusion) that DLA accepts; the rest run on the GPU"
    if not plan.profile.gpu_fallback and on_dla < total:
        basis += " — without gpu_fallback the build fails on them"
    # A prediction: TensorRT may still move layers between DLA and GPU while building (GPU fallback is silent).
    return {"dla": on_dla, "gpu": total - on_dla, "basis": basis, "kind": "prediction"}


def _load_timing_cache(config, plan: BuildPlan, logger) -> tuple[Any, bool]:
    path = plan.timing_cache_path
    data = path.read_bytes() if path is not None and path.is_file() else b""
    cache = config.create_timing_cache(data)
    if cache is None:  # unreadable file (truncated, another format): start empty, keep the file
        logger.warnings.append(f"timing cache {path} could not be read; building without it")
        cache, data = config.create_timing_cache(b""), b""
    # ignore_mismatch=False: a cache from another GPU/CUDA/TensorRT would mislead tactic selection.
    loaded = config.set_timing_cache(cache, False)
    if not loaded and data:
        logger.warnings.append(f"timing cache {path} was made for another GPU/CUDA/TensorRT; building without it "
                               "and leaving the file unchanged")
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, False)
    return cache, bool(loaded and data)


def _inspect(trt, runtime, plan_bytes: bytes, plan: BuildPlan) -> tuple[str, list[dict[str, Any]]]:
    if plan.profile.version_compatible:
        # A version-compatible plan embeds its lean runtime, which the runtime must be allowed to load.
        runtime.engine_host_code_allowed = True
    engine = runtime.deserialize_cuda_engine(plan_bytes)
    if engine is None:
        raise CheckFailed("TensorRT built the engine but could not load it back", "rebuild; check the GPU memory")
    inspector = engine.create_engine_inspector()
    # With a context at the opt shape the inspector resolves dynamic dims and shows formats.
    context = engine.create_execution_context()
    if context is not None:
        for inp in plan.inputs:
            context.set_input_shape(inp.name, inp.shape_opt)
        inspector.execution_context = context
    text = inspector.get_engine_information(trt.LayerInformationFormat.JSON)
    names = dtype_names(trt)
    io = []
    for index in range(engine.num_io_tensors):
        name = engine.get_tensor_name(index)
        io.append({"name": name,
                   "mode": "input" if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else "output",
                   "dtype": names.get(engine.get_tensor_dtype(name), str(engine.get_tensor_dtype(name))),
                   "shape": list(engine.get_tensor_shape(name)),
                   "format": engine.get_tensor_format(name).name,
                   "format_desc": engine.get_tensor_format_desc(name)})
    return text, io


def build_serialized(plan: BuildPlan, trt) -> BuiltEngine:
    """Build the engine the plan describes.

    Args:
        plan: a plan whose variant exists (`plan.variant_ready`) and whose names are final.
        trt: the module `import_tensorrt()` returned.

    Returns:
        BuiltEngine (bytes in memory; nothing written).

    Raises:
        LintError: the ONNX parser rejected the graph (each error with its node).
        ProfileError: the input dtype does not allow the requested engine input format.
        RuntimeMissing: DLA requested where there is none.
        CheckFailed: TensorRT returned no engine (the logger's errors are in the message).
    """
    logger = make_logger(trt)
    builder = trt.Builder(logger)
    network, parser = _parse(trt, builder, logger, plan, trt_version(trt))
    _set_input_formats(trt, network, plan)
    config = _configure(trt, builder, plan)
    cache, loaded = _load_timing_cache(config, plan, logger) if plan.timing_cache_path is not None else (None, False)
    placement = _placement(trt, network, config, plan)
    start = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - start
    if serialized is None:
        detail = "; ".join(logger.errors[-5:]) or "no error message from TensorRT"
        raise CheckFailed(f"TensorRT could not build {plan.onnx_path.name} with profile {plan.profile.name!r}: "
                          f"{detail}", "try another profile (e.g. fp32, or without DLA), or a larger workspace")
    plan_bytes = bytes(serialized)
    cache_bytes = bytes(config.get_timing_cache().serialize()) if cache is not None else None
    runtime = trt.Runtime(logger)
    text, io = _inspect(trt, runtime, plan_bytes, plan)
    return BuiltEngine(plan_bytes=plan_bytes, inspector_json=text, io=io, placement=placement,
                       placement_report=parse_placement_report(logger.placement), seconds=seconds,
                       timing_cache=cache_bytes, timing_cache_loaded=loaded,
                       warnings=logger.warnings[:MAX_KEPT_WARNINGS])

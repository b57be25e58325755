"""The trtexec command equivalent to a BuildPlan, for people who build with NVIDIA's CLI (or compare).

Spellings differ between majors, checked against trtexec's option parser (samples/common/
sampleOptions.cpp of the 10.x and 11.x releases):
- 10.x: `--inputIOFormats=<type>:<fmt>` (e.g. `fp16:hwc8`), `--stronglyTyped` needed;
  `hwc16` is parsed from 10.10 on.
- 11.x: networks are always strongly typed (`--stronglyTyped` is a deprecated no-op, left out) and
  `--inputIOFormats` takes the format alone (`hwc8`): the type comes from the network.
- DLA: only 11.x (11.4.1+) builds DLA strongly typed — 10.x trtexec adds `--fp16`'s builder flag to every DLA
  build — so a DLA plan has no 10.x command; `--adjustForDLA` sets the parser's ADJUST_FOR_DLA (10.16+, 11.x).
"""

from __future__ import annotations

import shlex

from .plan import BuildPlan

# Our names → trtexec's.
_FORMATS = {"linear": "chw", "hwc": "hwc", "hwc8": "hwc8", "hwc16": "hwc16"}
_TYPES = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16", "int8": "int8", "uint8": "uint8",
          "int32": "int32", "int64": "int64", "bool": "bool"}
# When the variant does not exist yet its input dtype is unknown; a non-linear format has one dtype
# that a float NCHW graph input can take with it (FORMAT_DTYPES ∩ {float32, float16}).
_FORMAT_IMPLIED_TYPE = {"hwc": "float32", "hwc8": "float16", "hwc16": "float16"}


def _shape(name: str, dims: tuple[int, ...]) -> str:
    return f"{name}:{'x'.join(str(d) for d in dims)}"


def _mem_size(n: int) -> str:
    """trtexec's memPoolSize takes base-2 suffixes B/K/M/G (10.x and 11.x)."""
    for suffix, scale in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n % scale == 0:
            return f"{n // scale}{suffix}"
    return f"{n}B"


def trtexec_args(plan: BuildPlan, trt_major: int) -> list[str]:
    """The argument vector (`trtexec` first) that builds what `plan` builds.

    Args:
        plan: the build plan.
        trt_major: 10 or 11 (the spellings differ, see module docstring).

    Returns:
        list of arguments; `shlex.join` it for a shell.
    """
    if trt_major not in (10, 11):
        raise ValueError(f"trt_major must be 10 or 11, got {trt_major}")
    p = plan.profile
    args = ["trtexec", f"--onnx={plan.onnx_path}", f"--saveEngine={plan.engine_path}"]
    for flag, attr in (("--minShapes", "shape_min"), ("--optShapes", "shape_opt"), ("--maxShapes", "shape_max")):
        args.append(f"{flag}={','.join(_shape(i.name, getattr(i, attr)) for i in plan.inputs)}")
    if trt_major == 10:
        args.append("--stronglyTyped")
    formats = []
    for inp in plan.inputs:
        fmt = _FORMATS[inp.engine_format]
        if trt_major == 11:
            formats.append(fmt)
            continue
        dtype = inp.dtype or _FORMAT_IMPLIED_TYPE.get(inp.engine_format)
        formats.append(f"{_TYPES[dtype]}:{fmt}" if dtype else "")
    # trtexec wants every input listed (or one broadcast); with an unknown dtype on 10.x and linear
    # format we leave the option out so the network's own types apply.
    if formats and all(formats):
        args.append(f"--inputIOFormats={','.join(formats)}")
    if plan.timing_cache_path is not None:
        args.append(f"--timingCacheFile={plan.timing_cache_path}")
    if p.workspace:
        args.append(f"--memPoolSize=workspace:{_mem_size(p.workspace)}")
    args.append(f"--builderOptimizationLevel={p.builder_optimization_level}")
    if p.dla_core is not None:
        if trt_major != 11:
            raise ValueError("a DLA plan has only a TensorRT 11.x trtexec command (10.x builds DLA weakly typed)")
        args += [f"--useDLACore={p.dla_core}", "--adjustForDLA"]
        if p.gpu_fallback:
            args.append("--allowGPUFallback")
    if p.hardware_compatibility != "none":
        args.append(f"--hardwareCompatibilityLevel={p.hardware_compatibility}")
    if p.version_compatible:
        args.append("--versionCompatible")
    args += ["--profilingVerbosity=detailed", f"--exportLayerInfo={plan.layers_path}", "--skipInference"]
    return args


def trtexec_commands(plan: BuildPlan) -> dict[int, str]:
    """Shell command lines keyed by TensorRT major: the target's one, or both when it is unknown."""
    majors = [plan.target.trt_major] if plan.target.trt_major in (10, 11) else [10, 11]
    if plan.profile.uses_dla:
        majors = [m for m in majors if m == 11]
    return {m: shlex.join(trtexec_args(plan, m)) for m in majors}

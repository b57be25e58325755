"""Build profiles: TOML presets shipped in `engines/presets/` and user files (`--profile my_orin.toml`).

A profile says *how* to build, independent of any bundle: precision (which ONNX variant), input layout,
engine-side input format, batch range, workspace, optimisation level, timing cache, portability flags
and DLA. Checks that need the bundle (batch inside its range, input dtype vs format) happen in the plan.

Every field is optional except `precision`; unknown fields and impossible combinations raise
ProfileError naming the field, so a typo never silently builds something else.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import ProfileError

try:  # stdlib from Python 3.11; JetPack 6's system Python is 3.10, where the `tomli` backport provides it
    import tomllib  # novm: guarded — vermin (tests/packaging) checks the rest of the 3.10 path
except ModuleNotFoundError:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

PRECISIONS = ("fp32", "fp16", "int8")
INPUTS = ("nchw-float", "nhwc-uint8")
ENGINE_INPUT_FORMATS = ("linear", "hwc", "hwc8", "hwc16")
HARDWARE_COMPATIBILITY = ("none", "ampere+")
OPT_LEVELS = range(0, 6)

# Which input dtypes each TensorRT I/O format accepts (TensorFormat docs of the 10.x / 11.x headers):
# HWC is bound to FP32 or UINT8, HWC8 to FP16/BF16, HWC16 to FP16 (and INT8 from 11.x). LINEAR takes any.
FORMAT_DTYPES: dict[str, tuple[str, ...]] = {
    "linear": (),
    "hwc": ("float32", "uint8"),
    "hwc8": ("float16", "bfloat16"),
    "hwc16": ("float16", "int8"),
}

_UNITS = {"": 1, "b": 1, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

_TOP_FIELDS = {"name", "description", "precision", "input", "engine_input_format", "batch", "workspace",
               "builder_optimization_level", "timing_cache", "hardware_compatibility", "version_compatible",
               "dla_core", "gpu_fallback"}
_BATCH_FIELDS = {"min", "opt", "max"}


def parse_size(value: Any, field_name: str = "workspace") -> int:
    """`"2GiB"`, `"512MiB"`, `"1.5G"` or an integer number of bytes → bytes.

    Raises:
        ProfileError: not a size, a unit other than B/KiB/MiB/GiB (K/M/G), or not positive.
    """
    if isinstance(value, bool):
        raise ProfileError(f"{field_name} = {value!r} is not a size", 'write e.g. workspace = "2GiB"')
    if isinstance(value, int):
        n = value
    else:
        m = _SIZE_RE.match(str(value))
        unit = m.group(2).lower() if m else None
        if not m or unit not in _UNITS or (_UNITS[unit] == 1 and "." in m.group(1)):
            raise ProfileError(f"{field_name} = {value!r} is not a size (expected a number with B, KiB, MiB or GiB)",
                               'write e.g. workspace = "2GiB"')
        n = int(float(m.group(1)) * _UNITS[unit])
    if n <= 0:
        raise ProfileError(f"{field_name} = {value!r} must be positive", 'write e.g. workspace = "2GiB"')
    return n


def format_size(n: int) -> str:
    """Bytes → the largest exact binary unit: 2147483648 → `2GiB`."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n % scale == 0:
            return f"{n // scale}{unit}"
    return f"{n}B"


@dataclass(frozen=True)
class BatchRange:
    """Optimisation-profile batch sizes; None = take it from the bundle (min/max) or from min (opt)."""

    min: int | None = None
    opt: int | None = None
    max: int | None = None

    def is_static(self) -> bool:
        return self.min is not None and self.min == self.opt == self.max


@dataclass(frozen=True)
class BuildProfile:
    """How to build an engine. See the README, "Building TensorRT engines" for what each field does.

    Attributes:
        name: preset name or the user file's stem (part of the engine file name).
        precision: fp32 | fp16 | int8 — selects the ONNX variant (strongly typed: precision comes from it).
        input: nchw-float (float32 [B,3,H,W]) | nhwc-uint8 (camera frames [B,H,W,3], normalised in-graph).
        engine_input_format: linear | hwc | hwc8 | hwc16 — TensorRT memory layout of the input binding.
        batch: optimisation-profile batch sizes.
        workspace: builder workspace pool limit in bytes (None: TensorRT's default, all device memory).
        builder_optimization_level: 0–5 (TensorRT default 3; higher builds longer, may run faster).
        timing_cache: "auto" (engines/timing/<gpu>-trt<ver>.cache), "off", or a path ({gpu}, {trt} expand).
        hardware_compatibility: none | ampere+ (engine runs on any Ampere-or-newer GPU, a bit slower).
        version_compatible: engine loads on newer TensorRT of the same major (lean runtime embedded).
        dla_core: DLA core to build for (Jetson Orin), or None for the GPU.
        gpu_fallback: with dla_core, let layers DLA cannot run fall back to the GPU.
        description: one line shown by `tokcomp profiles`.
        source: where the profile came from (preset or file path) — informational.
    """

    name: str
    precision: str
    input: str = "nchw-float"
    engine_input_format: str = "linear"
    batch: BatchRange = field(default_factory=BatchRange)
    workspace: int | None = None
    builder_optimization_level: int = 3
    timing_cache: str = "auto"
    hardware_compatibility: str = "none"
    version_compatible: bool = False
    dla_core: int | None = None
    gpu_fallback: bool = False
    description: str = ""
    source: str = ""

    @property
    def uses_dla(self) -> bool:
        return self.dla_core is not None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["workspace"] = format_size(self.workspace) if self.workspace else None
        d["workspace_bytes"] = self.workspace
        return d


def _expect(value: Any, kind: type | tuple[type, ...], field_name: str, example: str) -> Any:
    # bool is an int in Python; a TOML `true` where a number is expected is a mistake, not 1.
    if isinstance(value, bool) and kind is not bool:
        raise ProfileError(f"{field_name} = {value!r} has the wrong type", f"write e.g. {example}")
    if not isinstance(value, kind):
        raise ProfileError(f"{field_name} = {value!r} has the wrong type", f"write e.g. {example}")
    return value


def _choice(data: dict, key: str, choices: tuple[str, ...], default: str) -> str:
    value = data.get(key, default)
    if value not in choices:
        raise ProfileError(f"{key} = {value!r} is not one of {', '.join(choices)}",
                           f"set {key} to one of: {', '.join(choices)}")
    return value


def profile_from_record(recorded: dict[str, Any]) -> BuildProfile:
    """The profile an engine was built with, from its engine.json `profile` entry (BuildProfile.to_dict,
    with the batch sizes actually built and the full shapes), e.g. to build a twin of that engine.

    Raises:
        ProfileError: the entry is not a profile this version can read.
    """
    if not isinstance(recorded, dict):
        raise ProfileError(f"engine.json profile is {recorded!r}, not a profile record",
                           "rebuild the engine with `tokcomp build`")
    data = {k: v for k, v in recorded.items() if k in _TOP_FIELDS and v is not None}
    if data.get("dla_core") is None:
        data.pop("gpu_fallback", None)  # recorded as False for GPU builds; a profile file leaves it out
    if recorded.get("workspace_bytes"):
        # The human-readable form rounds; parse_size refuses a non-integer (an edited record) as a ProfileError.
        data["workspace"] = recorded["workspace_bytes"]
    return profile_from_dict(data, str(recorded.get("name", "engine")), source="engine.json")


def profile_from_dict(data: dict[str, Any], name: str, source: str = "") -> BuildProfile:
    """Validate a parsed TOML table and build the profile.

    Args:
        data: the TOML document as a dict.
        name: fallback name (file stem) when the document has no `name`.
        source: where it came from, for messages.

    Returns:
        BuildProfile.

    Raises:
        ProfileError: unknown field, wrong type or value, or an impossible combination; the message
            names the field.
    """
    where = f" in {source}" if source else ""
    unknown = sorted(set(data) - _TOP_FIELDS)
    if unknown:
        raise ProfileError(f"unknown profile field {unknown[0]!r}{where}",
                           f"known fields: {', '.join(sorted(_TOP_FIELDS))}")
    name = str(data.get("name", name))
    if not _NAME_RE.match(name):
        raise ProfileError(f"name = {name!r}{where} is not usable in a file name",
                           "use letters, digits, '-', '_' or '.'")
    if "precision" not in data:
        raise ProfileError(f"profile {name!r}{where} has no precision", 'add precision = "fp16" (fp32 | fp16 | int8)')
    precision = _choice(data, "precision", PRECISIONS, "fp32")
    input_layout = _choice(data, "input", INPUTS, "nchw-float")
    fmt = _choice(data, "engine_input_format", ENGINE_INPUT_FORMATS, "linear")

    batch_data = _expect(data.get("batch", {}), dict, "batch", "batch = { min = 1, opt = 1, max = 8 }")
    unknown = sorted(set(batch_data) - _BATCH_FIELDS)
    if unknown:
        raise ProfileError(f"unknown profile field 'batch.{unknown[0]}'{where}", "batch takes min, opt and max")
    sizes = {}
    for key in ("min", "opt", "max"):
        if key in batch_data:
            v = _expect(batch_data[key], int, f"batch.{key}", f"batch.{key} = 1")
            if v < 1:
                raise ProfileError(f"batch.{key} = {v} must be at least 1", f"set batch.{key} = 1 or more")
            sizes[key] = v
    batch = BatchRange(**sizes)
    lo, opt, hi = batch.min, batch.opt, batch.max
    if lo is not None and hi is not None and lo > hi:
        raise ProfileError(f"batch.min = {lo} is larger than batch.max = {hi}", "make min ≤ opt ≤ max")
    if opt is not None and ((lo is not None and opt < lo) or (hi is not None and opt > hi)):
        raise ProfileError(f"batch.opt = {opt} is outside batch.min–batch.max", "make min ≤ opt ≤ max")

    workspace = parse_size(data["workspace"]) if "workspace" in data else None
    level = _expect(data.get("builder_optimization_level", 3), int, "builder_optimization_level",
                    "builder_optimization_level = 3")
    if level not in OPT_LEVELS:
        raise ProfileError(f"builder_optimization_level = {level} is outside 0–5",
                           "use 0 (fastest build) to 5 (slowest build, most tactics); TensorRT's default is 3")
    timing_cache = _expect(data.get("timing_cache", "auto"), str, "timing_cache", 'timing_cache = "auto"')
    if not timing_cache.strip():
        raise ProfileError("timing_cache is empty", 'use "auto", "off" or a file path')
    hw = _choice(data, "hardware_compatibility", HARDWARE_COMPATIBILITY, "none")
    vc = _expect(data.get("version_compatible", False), bool, "version_compatible", "version_compatible = false")
    dla_core = data.get("dla_core")
    if dla_core is not None:
        dla_core = _expect(dla_core, int, "dla_core", "dla_core = 0")
        if dla_core < 0:
            raise ProfileError(f"dla_core = {dla_core} must be 0 or more", "Orin has DLA cores 0 and 1")
    fallback = _expect(data.get("gpu_fallback", dla_core is not None), bool, "gpu_fallback", "gpu_fallback = true")
    description = _expect(data.get("description", ""), str, "description", 'description = "…"')

    # -- combinations ------------------------------------------------------------------------------
    if input_layout == "nhwc-uint8" and fmt != "linear":
        raise ProfileError(
            f"engine_input_format = {fmt!r} cannot be combined with input = 'nhwc-uint8'",
            "the nhwc-uint8 graph input is already channel-last [B,H,W,3]; TensorRT's HWC formats apply to "
            "NCHW tensors — keep engine_input_format = 'linear'")
    if precision == "fp32" and fmt in ("hwc8", "hwc16"):
        raise ProfileError(f"engine_input_format = {fmt!r} needs a float16 input, precision 'fp32' has float32",
                           "use engine_input_format = 'hwc' (float32) or precision = 'fp16'")
    if dla_core is None and "gpu_fallback" in data:
        raise ProfileError("gpu_fallback is set without dla_core", "gpu_fallback only applies to DLA builds: "
                           "set dla_core = 0, or remove gpu_fallback")
    if dla_core is not None:
        if precision == "fp32":
            raise ProfileError("dla_core is set with precision = 'fp32'; DLA runs fp16 and int8 only",
                               "use precision = 'fp16' or 'int8' for DLA")
        if not (batch.min is None and batch.opt is None and batch.max is None) and not batch.is_static():
            raise ProfileError(f"batch = {batch.min}/{batch.opt}/{batch.max} is dynamic; DLA needs static shapes",
                               "set batch.min = batch.opt = batch.max (e.g. all 1) for DLA")
        if hw != "none":
            raise ProfileError(f"hardware_compatibility = {hw!r} cannot be combined with dla_core",
                               "hardware compatibility targets GPU architectures; a DLA build is tied to the Orin DLA")
    return BuildProfile(name=name, precision=precision, input=input_layout, engine_input_format=fmt, batch=batch,
                        workspace=workspace, builder_optimization_level=level, timing_cache=timing_cache,
                        hardware_compatibility=hw, version_compatible=vc, dla_core=dla_core,
                        gpu_fallback=fallback, description=description, source=source)


def parse_profile_text(text: str, name: str, source: str = "") -> BuildProfile:
    """Parse TOML text into a profile (ProfileError on a TOML syntax error, with its line)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{source or name} is not valid TOML ({exc})", "fix the syntax (https://toml.io)") from exc
    return profile_from_dict(data, name=name, source=source)


def _preset_dir():
    return resources.files("tokcomp_edge.engines") / "presets"


def preset_names() -> list[str]:
    """Names of the built-in presets, sorted."""
    return sorted(p.name[:-5] for p in _preset_dir().iterdir() if p.name.endswith(".toml"))


def load_preset(name: str) -> BuildProfile:
    """A built-in preset by name (ProfileError listing the presets when unknown)."""
    entry = _preset_dir() / f"{name}.toml"
    if not entry.is_file():
        raise ProfileError(f"unknown profile {name!r}", f"use a preset ({', '.join(preset_names())}) or a .toml file")
    return parse_profile_text(entry.read_text(encoding="utf-8"), name=name, source=f"preset {name}")


def load_profile(spec: str | Path) -> BuildProfile:
    """A preset name (`fp16`) or a path to a TOML file (`my_orin.toml`).

    A value is a file when it ends in `.toml`, contains a path separator, or names an existing file.
    """
    text = str(spec)
    path = Path(text)
    if text.endswith(".toml") or "/" in text or path.is_file():
        if not path.is_file():
            raise ProfileError(f"profile file {path} does not exist", "check the path, or use a preset name")
        try:
            body = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ProfileError(f"cannot read profile file {path} ({exc})", "check the file") from exc
        return parse_profile_text(body, name=path.stem, source=str(path))
    return load_preset(text)


def list_presets() -> list[BuildProfile]:
    """Every built-in preset, parsed (a broken preset raises: the test suite loads them all)."""
    return [load_preset(n) for n in preset_names()]

"""BuildPlan: bundle + profile + target machine → everything a build needs, decided before any work.

The plan is pure data: which ONNX variant, the optimisation-profile shapes, the input dtype and
format, every builder setting, and the output paths
`engines/<bundle>/<gpu-slug>-trt<ver>-<profile>.plan` (+ `.engine.json`, `.layers.json`).
It is what `--dry-run` prints and what the TensorRT adapter executes; it needs neither TensorRT nor a
GPU — unknown parts of the name are the marked placeholders `{gpu}` and `{trt}`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.bundle import Bundle
from ..errors import ProfileError
from .dla import autocast_has_dla_target, check_dla_build, dla_parser_flags
from .profile import FORMAT_DTYPES, BuildProfile
from .trt_import import BuildTarget

GPU_PLACEHOLDER = "{gpu}"
TRT_PLACEHOLDER = "{trt}"
DEFAULT_ENGINES_DIR = Path("engines")
# The variant keys as tokcomp_edge.export.variants names them (precision, input layout) → key.
_LAYOUT_SUFFIX = {"nchw-float": "", "nhwc-uint8": "nhwc"}


def variant_for(precision: str, input_layout: str) -> str:
    """Variant key of the bundle that a profile builds from (`fp16` + `nhwc-uint8` → `fp16-nhwc`)."""
    from ..export.variants import variant_key

    return variant_key(precision, input_layout)


@dataclass(frozen=True)
class InputPlan:
    """The engine's image input as the optimisation profile and I/O format see it.

    Attributes:
        name: graph input name (`pixel_values`).
        layout: `NCHW` or `NHWC` (the graph tensor's own layout).
        shape_min, shape_opt, shape_max: full shapes of the optimisation profile.
        dtype: the graph input dtype (`float32`, `float16`, `uint8`), or None when the variant does not
            exist yet and its I/O dtype is decided when it is made.
        engine_format: linear | hwc | hwc8 | hwc16 (TensorRT memory layout of the binding).
    """

    name: str
    layout: str
    shape_min: tuple[int, ...]
    shape_opt: tuple[int, ...]
    shape_max: tuple[int, ...]
    dtype: str | None
    engine_format: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "layout": self.layout, "shape_min": list(self.shape_min),
                "shape_opt": list(self.shape_opt), "shape_max": list(self.shape_max), "dtype": self.dtype,
                "engine_format": self.engine_format}


@dataclass(frozen=True)
class BuildPlan:
    """Everything one engine build needs (see module docstring).

    Attributes:
        bundle_path, bundle_name: the bundle folder and its manifest name.
        manifest_sha256: sha256 of manifest.json when planned (recorded in engine.json).
        profile: the build profile.
        variant: bundle variant key (`fp32`, `fp16`, `nhwc`, `fp16-nhwc`, `int8`, `int8-nhwc`).
        onnx_path: the variant's ONNX file (may not exist yet: `variant_ready`).
        variant_ready: whether the bundle already holds the variant.
        inputs: the image input(s).
        output_names: graph outputs.
        engine_path, sidecar_path, layers_path: `.plan`, `.engine.json`, `.layers.json` (inspector).
        timing_cache_path: the cache file to load and update, or None (off).
        target: GPU and TensorRT version the names were made for (parts may be unknown).
        notes: things a reader of the dry run must know (placeholders, variant to create, caveats).
        fp32_islands: nodes the variant keeps in fp32 (`tokcomp debug --fix`); the strongly typed build
            takes them as the ONNX types them — nothing to set.
    """

    bundle_path: Path
    bundle_name: str
    manifest_sha256: str
    profile: BuildProfile
    variant: str
    onnx_path: Path
    variant_ready: bool
    inputs: tuple[InputPlan, ...]
    output_names: tuple[str, ...]
    engine_path: Path
    sidecar_path: Path
    layers_path: Path
    timing_cache_path: Path | None
    target: BuildTarget
    notes: tuple[str, ...] = field(default_factory=tuple)
    fp32_islands: tuple[str, ...] = field(default_factory=tuple)

    @property
    def has_placeholders(self) -> bool:
        return GPU_PLACEHOLDER in self.engine_path.name or TRT_PLACEHOLDER in self.engine_path.name

    def to_dict(self) -> dict[str, Any]:
        return {
            "bundle": {"path": str(self.bundle_path), "name": self.bundle_name,
                       "manifest_sha256": self.manifest_sha256},
            "profile": self.profile.to_dict(),
            "variant": self.variant, "onnx": str(self.onnx_path), "variant_ready": self.variant_ready,
            "inputs": [i.to_dict() for i in self.inputs], "outputs": list(self.output_names),
            "engine": str(self.engine_path), "sidecar": str(self.sidecar_path), "layers": str(self.layers_path),
            "timing_cache": str(self.timing_cache_path) if self.timing_cache_path else None,
            "target": {"gpu": self.target.gpu.to_dict() if self.target.gpu else None,
                       "tensorrt": self.target.trt_version},
            "placeholders": self.has_placeholders, "notes": list(self.notes),
            "fp32_islands": list(self.fp32_islands),
        }


def resolve_batch(profile: BuildProfile, bundle_range: tuple[int, int], bundle_name: str) -> tuple[int, int, int]:
    """Fill the profile's batch sizes from the bundle and check they lie inside its exported range.

    Defaults: min/max from the bundle, opt = min (edge engines mostly run one frame at a time); a DLA
    profile without sizes gets the static batch `max(1, bundle min)`.

    Raises:
        ProfileError: a size outside the bundle's range, or min ≤ opt ≤ max broken after filling.
    """
    lo_b, hi_b = bundle_range
    b = profile.batch
    if profile.uses_dla and b.min is None and b.opt is None and b.max is None:
        static = max(1, lo_b)
        lo = opt = hi = static
    else:
        lo = b.min if b.min is not None else lo_b
        hi = b.max if b.max is not None else hi_b
        opt = b.opt if b.opt is not None else lo
    for key, value in (("min", lo), ("opt", opt), ("max", hi)):
        if not lo_b <= value <= hi_b:
            raise ProfileError(
                f"profile {profile.name!r} has batch.{key} = {value}, outside the batch range {lo_b}–{hi_b} "
                f"that bundle {bundle_name!r} was exported with",
                f"set batch.{key} within {lo_b}–{hi_b}, or re-export with --batch-min/--batch-max covering it")
    if not lo <= opt <= hi:
        raise ProfileError(f"profile {profile.name!r} resolves to batch min/opt/max = {lo}/{opt}/{hi} for bundle "
                           f"{bundle_name!r} (batch {lo_b}–{hi_b})", "set batch.min ≤ batch.opt ≤ batch.max explicitly")
    return lo, opt, hi


def _input_entry(bundle: Bundle, variant: str, input_layout: str) -> tuple[dict[str, Any], bool]:
    """The variant's first input from the manifest, or one derived from the base graph's input."""
    variants = bundle.variants()
    if variant in variants and variants[variant].get("inputs"):
        return dict(variants[variant]["inputs"][0]), True
    base = dict(bundle.onnx["inputs"][0])
    shape = list(base["shape"])
    if input_layout == "nhwc-uint8":
        # The nhwc variants' contract: uint8 [B,H,W,3] (cast/transpose/normalise inside the graph).
        base.update(shape=[shape[0], shape[2], shape[3], shape[1]], dtype="uint8", layout="NHWC")
    elif variant == "fp16":
        # `build` makes it with the default AutoCast options; predict the input dtype they give.
        from ..export.fp16 import Fp16Options

        base["dtype"] = base.get("dtype", "float32") if Fp16Options().keep_io_types else "float16"
    elif variant != "fp32":
        base["dtype"] = None  # int8: decided by calibration
    return base, False


def _full_shape(template: list[Any], batch: int) -> tuple[int, ...]:
    dims = []
    for i, d in enumerate(template):
        if i == 0:
            dims.append(batch)
        elif isinstance(d, int):
            dims.append(d)
        else:
            raise ProfileError(f"input dimension {i} is {d!r}; only the batch axis may be dynamic",
                               "re-export the bundle with a static image size")
    return tuple(dims)


def expand_name(template: str, target: BuildTarget) -> str:
    """Replace `{gpu}` / `{trt}` with the target's slug / short version where known (else keep them)."""
    out = template
    if target.gpu is not None:
        out = out.replace(GPU_PLACEHOLDER, target.gpu.slug)
    if target.trt_short is not None:
        out = out.replace(TRT_PLACEHOLDER, target.trt_short)
    return out


def make_plan(bundle: Bundle, profile: BuildProfile, target: BuildTarget,
              engines_dir: Path = DEFAULT_ENGINES_DIR) -> BuildPlan:
    """Decide the build.

    Args:
        bundle: a loaded bundle.
        profile: the build profile.
        target: the GPU / TensorRT version to name outputs for (`probe_target()`; parts may be None).
        engines_dir: root of the engine folders (`engines/`).

    Returns:
        BuildPlan.

    Raises:
        ProfileError: the profile does not fit this bundle (batch range, input dtype vs engine format), or
            builds for the DLA with a TensorRT version that cannot (engines/dla.py: 10.x, 11.0–11.4.0).
    """
    if profile.uses_dla and target.trt_version is not None:
        check_dla_build(profile.name, target.trt_version)
    variant = variant_for(profile.precision, profile.input)
    entry, ready = _input_entry(bundle, variant, profile.input)
    lo, opt, hi = resolve_batch(profile, bundle.batch_range, bundle.name)
    dtype = entry.get("dtype")
    fmt = profile.engine_input_format
    allowed = FORMAT_DTYPES[fmt]
    if allowed and dtype is not None and dtype not in allowed:
        raise ProfileError(
            f"engine_input_format = {fmt!r} needs a {' or '.join(allowed)} input, but variant {variant!r} of "
            f"bundle {bundle.name!r} takes {dtype}",
            "use engine_input_format = 'linear', or a precision whose variant has a matching input dtype")
    inp = InputPlan(name=entry["name"], layout=entry.get("layout", "NCHW"),
                    shape_min=_full_shape(entry["shape"], lo), shape_opt=_full_shape(entry["shape"], opt),
                    shape_max=_full_shape(entry["shape"], hi), dtype=dtype, engine_format=fmt)

    onnx_path = bundle.onnx_path(variant) if ready else bundle.path / f"model.{variant}.onnx"
    stem = expand_name(f"{GPU_PLACEHOLDER}-trt{TRT_PLACEHOLDER}-{profile.name}", target)
    folder = Path(engines_dir) / bundle.name
    if profile.timing_cache == "off":
        cache = None
    elif profile.timing_cache == "auto":
        cache = Path(engines_dir) / "timing" / expand_name(f"{GPU_PLACEHOLDER}-trt{TRT_PLACEHOLDER}.cache", target)
    else:
        cache = Path(expand_name(profile.timing_cache, target)).expanduser()

    notes = []
    if not ready:
        if profile.precision == "int8" and "int8" not in bundle.variants():
            notes.append(f"bundle has no {variant!r} variant: INT8 needs the calibrated Q/DQ graph — calibrate "
                         f"first (`tokcomp calibrate {bundle.path} --images DIR`); `build` stops here until then")
        else:
            made_from = "the int8 variant" if profile.precision == "int8" else "model.onnx"
            notes.append(f"variant {variant!r} is not in the bundle yet: `build` creates it from {made_from} "
                         f"(and records it in the manifest) before building")
    if target.gpu is None or target.trt_version is None:
        notes.append(f"{GPU_PLACEHOLDER} / {TRT_PLACEHOLDER} in file names are placeholders "
                     f"({'; '.join(target.missing) or 'unknown'}); the build machine fills them in")
    major = target.trt_major
    if profile.uses_dla:
        notes.extend(_dla_notes(profile, target))
    if fmt == "hwc16" and major == 10 and target.trt_version and _minor(target.trt_version) < 10:
        notes.append("trtexec before 10.10 does not parse the 'hwc16' I/O format (the Python build does)")
    islands = fp32_islands(bundle, variant) if ready else ()
    if islands:
        notes.append(f"{len(islands)} nodes run in fp32 inside the {variant} graph (fp32 islands from `tokcomp debug "
                     "--fix`): the strongly typed build keeps the precisions the ONNX carries")
    return BuildPlan(bundle_path=bundle.path, bundle_name=bundle.name, manifest_sha256=bundle.manifest_sha256(),
                     profile=profile, variant=variant, onnx_path=onnx_path, variant_ready=ready, inputs=(inp,),
                     output_names=tuple(bundle.output_names), engine_path=folder / f"{stem}.plan",
                     sidecar_path=folder / f"{stem}.engine.json", layers_path=folder / f"{stem}.layers.json",
                     timing_cache_path=cache, target=target, notes=tuple(notes), fp32_islands=islands)


def fp32_islands(bundle: Bundle, variant: str) -> tuple[str, ...]:
    """The fp32 islands recorded for `variant` (an nhwc wrapper inherits those of the variant it wraps)."""
    entries = bundle.variants()
    entry = entries.get(variant) or {}
    if "fp32_islands" not in entry and (entry.get("base") or {}).get("variant") in entries:
        entry = entries[entry["base"]["variant"]]
    return tuple((entry.get("fp32_islands") or {}).get("nodes", ()))


def _dla_notes(profile: BuildProfile, target: BuildTarget) -> list[str]:
    notes = []
    if target.trt_version is None:
        notes.append("DLA builds need TensorRT 11.4.1+ on JetPack 7.2.2+ (strongly typed DLA); TensorRT 10.x "
                     "(JetPack 6) builds DLA only weakly typed and 11.0–11.4.0 has no DLA on Jetson: "
                     "`build` refuses those")
    elif dla_parser_flags(target.trt_version):
        notes.append(f"ONNX parser flag {', '.join(dla_parser_flags(target.trt_version))} set for the DLA")
    if profile.precision == "fp16" and autocast_has_dla_target() is not True:
        # No released nvidia-modelopt (0.47.0 the newest) has the `--target_dla` AutoCast option that
        # TensorRT 11.4.1's DLA guide shows: say what the DLA gets instead of pretending.
        notes.append("the fp16 variant for the DLA is ModelOpt AutoCast's ordinary one (AutoCast here has no DLA "
                     "target option; TensorRT 11.4.1's DLA guide uses `--target_dla`): fp16 tensors with explicit "
                     "Casts around the fp32 islands; layers the DLA cannot run fall back to the GPU")
    notes.append("DLA falls back to the GPU silently for layers it cannot run: engine.json records the predicted "
                 "placement and, after the build, the measured one (layers.placement_measured)")
    return notes


def _minor(version: str) -> int:
    parts = version.split(".")
    try:
        return int(parts[1]) if len(parts) > 1 else 0
    except ValueError:
        return 0

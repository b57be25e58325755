"""Precision and input-layout variants of a bundle, made on demand, checked, and cached in the bundle.

    key         precision  input                         made by
    fp32        fp32       float NCHW (model.onnx)       `tokcomp export`
    fp16        fp16       float NCHW                    ModelOpt AutoCast (export/fp16.py)
    nhwc        fp32       uint8 NHWC frames             in-graph preprocessing (export/nhwc.py)
    fp16-nhwc   fp16       uint8 NHWC frames             the nhwc wrapper around fp16
    int8        int8       float NCHW                    calibration (Q/DQ ONNX), not made here
    int8-nhwc   int8       uint8 NHWC frames             the nhwc wrapper around int8

Every variant passes its check on ONNX Runtime CPU (variant_check.py) before `Bundle.add_variants`
records it with its checksum; a failing variant raises ParityError and leaves the bundle as it was.
A cached nhwc variant is reused only while the model it wraps is unchanged (sha256 recorded).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from .. import __version__
from ..atomic import destination_errors, user_mode
from ..console import StageTimes, stage
from ..core.bundle import Bundle, sha256_file
from ..core.comparison import OutputLayout
from ..core.tolerance import DEFAULTS, NHWC, Tolerance
from ..errors import InputError, ParityError
from .fp16 import Fp16Options, convert_fp16, modelopt_version
from .nhwc import wrap_nhwc
from .variant_check import TomeForcing, check_fp16, check_nhwc

PRECISIONS = ("fp32", "fp16", "int8")
INPUT_LAYOUTS = ("nchw-float", "nhwc-uint8")
VARIANT_KEYS = ("fp32", "fp16", "int8", "nhwc", "fp16-nhwc", "int8-nhwc")
# protobuf cannot serialise a single message of 2 GiB or more.
SINGLE_FILE_LIMIT = 2**31 - 1

_DTYPES = {1: "float32", 2: "uint8", 7: "int64", 10: "float16", 6: "int32"}


@dataclass(frozen=True)
class VariantOptions:
    """How variants are made and checked.

    Attributes:
        fp16: AutoCast settings (I/O dtypes, ops kept in fp32, overflow threshold).
        fp16_tolerance: fp16 vs the golden reference (validate's fp16 defaults).
        nhwc_tolerance: nhwc wrapper vs the NCHW model it wraps.
        image_seed: seed of the uint8 frames the nhwc check feeds.
        quiet: no progress lines.
    """

    fp16: Fp16Options = field(default_factory=Fp16Options)
    fp16_tolerance: Tolerance = DEFAULTS["fp16"]
    nhwc_tolerance: Tolerance = NHWC
    image_seed: int = 0
    quiet: bool = False


def variant_key(precision: str, input_layout: str) -> str:
    """The bundle key of a (precision, input layout) pair: ("fp16", "nhwc-uint8") → "fp16-nhwc".

    Raises:
        InputError: an unknown precision or layout.
    """
    if precision not in PRECISIONS:
        raise InputError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}",
                         "use fp32, fp16 or int8")
    if input_layout not in INPUT_LAYOUTS:
        raise InputError(f"input layout {input_layout!r} is not one of {', '.join(INPUT_LAYOUTS)}",
                         "use nchw-float (float pixels, normalised) or nhwc-uint8 (camera frames)")
    if input_layout == "nchw-float":
        return precision
    return "nhwc" if precision == "fp32" else f"{precision}-nhwc"


def parse_variant_key(key: str) -> tuple[str, str]:
    """Inverse of variant_key: "fp16-nhwc" → ("fp16", "nhwc-uint8").

    Raises:
        InputError: a key that names no variant.
    """
    for precision in PRECISIONS:
        for layout in INPUT_LAYOUTS:
            if variant_key(precision, layout) == key:
                return precision, layout
    raise InputError(f"unknown variant {key!r}; expected one of {', '.join(VARIANT_KEYS)}",
                     "e.g. --variants fp16,nhwc")


def ensure_variant(bundle: Bundle, key: str, *, force: bool = False, options: VariantOptions | None = None,
                   times: StageTimes | None = None) -> Path:
    """Return the variant's ONNX file, making, checking and registering it first if needed.

    Args:
        bundle: a loaded bundle (its folder is written: the variant file and manifest.json).
        key: one of VARIANT_KEYS.
        force: remake `key` even if cached (the variant it wraps is reused if current).
        options: see VariantOptions.
        times: stage timings are added here.
    Returns:
        Path of model.<key>.onnx (model.onnx for fp32) inside the bundle.
    Raises:
        InputError: unknown key; int8 without a calibrated int8 variant.
        ParityError: the new variant failed its check (nothing registered).
        ExportFailed: AutoCast or the wrapper failed.
    """
    options = options or VariantOptions()
    precision, layout = parse_variant_key(key)
    if key == "fp32":
        return bundle.onnx_path("fp32")
    if not force and _is_current(bundle, key):
        return bundle.path / bundle.variants()[key]["file"]
    if key == "int8":
        raise InputError(f"bundle {bundle.path} has no int8 variant; calibrate first",
                         "int8 needs a Q/DQ model from INT8 calibration on representative images: run "
                         f"`tokcomp calibrate {bundle.path} --images DIR`, which registers the int8 variant")
    if layout == "nhwc-uint8":
        base_key = variant_key(precision, "nchw-float")
        base = ensure_variant(bundle, base_key, options=options, times=times)
        return _make_nhwc(bundle, key, base_key, base, options, times)
    return _make_fp16(bundle, options, times)


def create_variants(bundle: Bundle, keys: list[str] | tuple[str, ...], *, force: bool = False,
                    options: VariantOptions | None = None, times: StageTimes | None = None) -> dict[str, Path]:
    """Make every variant in `keys` (for `tokcomp export … --variants fp16,nhwc`).

    All keys are validated before any work, and NCHW variants are made before the nhwc ones that wrap
    them. Returns key → ONNX path. Raises as ensure_variant.
    """
    wanted = list(dict.fromkeys(keys))
    layouts = {k: parse_variant_key(k) for k in wanted}
    if any(p == "int8" for p, _ in layouts.values()) and "int8" not in bundle.variants():
        raise InputError(f"bundle {bundle.path} has no int8 variant; calibrate first",
                         f"make the int8 variant with `tokcomp calibrate {bundle.path} --images DIR`, then ask "
                         "for int8-nhwc")
    ordered = sorted(wanted, key=lambda k: layouts[k][1] == "nhwc-uint8")
    return {k: ensure_variant(bundle, k, force=force, options=options, times=times) for k in ordered}


# --- making one variant ---------------------------------------------------------------------------


def _is_current(bundle: Bundle, key: str) -> bool:
    entry = bundle.variants().get(key)
    if not entry or not (bundle.path / entry["file"]).is_file():
        return False
    base = entry.get("base")
    if not base or base.get("variant") == "fp32":
        return True
    base_entry = bundle.variants().get(base["variant"])
    return bool(base_entry) and bundle.manifest["files"].get(base_entry["file"], {}).get("sha256") == base["sha256"]


def _make_fp16(bundle: Bundle, options: VariantOptions, times: StageTimes | None) -> Path:
    src = bundle.onnx_path("fp32")
    batches = bundle.reference_batches()
    # A remade fp16 variant keeps the fp32 islands `tokcomp debug --fix` found for this bundle (unless the
    # caller names its own): they are part of its recipe, and dropping them would bring back the overflow.
    islands = (bundle.variants().get("fp16") or {}).get("fp32_islands")
    extra = None
    if islands and islands.get("nodes") and not options.fp16.fp32_nodes:
        options = replace(options, fp16=replace(options.fp16, fp32_nodes=tuple(islands["nodes"])))
        extra = {"fp32_islands": islands}
    with stage("fp16 variant: ModelOpt AutoCast" + (f" ({len(islands['nodes'])} fp32 islands kept)" if extra else ""),
               times, options.quiet):
        model, facts = convert_fp16(src, bundle.reference()[f"pixel_values.b{max(batches)}"], options.fp16)
    with staged_variant_file(bundle, "fp16") as tmp:
        save_variant_model(model, tmp, "fp16")
        del model
        return register_fp16(bundle, tmp, options, facts, times, extra=extra)


def register_fp16(bundle: Bundle, tmp: Path, options: VariantOptions, facts: dict[str, Any],
                  times: StageTimes | None = None, extra: dict[str, Any] | None = None) -> Path:
    """Check a converted fp16 file (staged inside the bundle folder) and register it as the `fp16` variant.

    Args:
        tmp: the fp16 ONNX, from staged_variant_file (renamed into place on success).
        options: the options it was converted with (recorded); facts: convert_fp16's facts.
        extra: more fields for the variant entry (`fp32_islands` from `tokcomp debug --fix`).
    Returns:
        The registered file's path.
    Raises:
        ParityError: the check failed; nothing was registered.
    """
    src = bundle.onnx_path("fp32")
    reference = bundle.reference()
    batches = bundle.reference_batches()
    with stage(f"fp16 check: ONNX Runtime CPU vs golden reference (batch {', '.join(map(str, batches))})",
               times, options.quiet):
        result = check_fp16(tmp, src, reference, batches, options.fp16_tolerance,
                            OutputLayout.from_manifest(bundle.manifest),
                            tome=TomeForcing.from_manifest(bundle.manifest))
    if not result:
        raise ParityError(f"fp16 variant fails its check against the golden reference: {result.failure_text()}",
                          "nothing was registered; find the layer that breaks with `tokcomp debug BUNDLE "
                          "--variant fp16` (`--fix` keeps it in fp32), or keep the sensitive op types in fp32 "
                          "(Fp16Options.fp32_op_types, e.g. Softmax)")
    meta = {
        "precision": "fp16", "input_layout": "nchw-float",
        **variant_io(tmp),
        "source": f"modelopt-autocast {modelopt_version()}",
        "options": asdict(options.fp16),
        "conversion": facts,
        "base": {"variant": "fp32", "file": src.name, "sha256": sha256_file(src)},
        "lint": lint_counts(tmp),
        "check": result.to_dict(),
        **(extra or {}),
    }
    return register_with_wrappers(bundle, "fp16", tmp, meta, options, times)


def wrappers_of(bundle: Bundle, key: str) -> list[str]:
    """The variants that wrap variant `key` (fp16-nhwc for fp16, int8-nhwc for int8)."""
    return [k for k, v in bundle.variants().items() if (v.get("base") or {}).get("variant") == key]


def register_with_wrappers(bundle: Bundle, key: str, tmp: Path, meta: dict[str, Any],
                           options: VariantOptions | None = None, times: StageTimes | None = None) -> Path:
    """Register the checked variant file `tmp` as `key`, with the nhwc variants that wrap `key` re-derived
    from it, in one manifest write: fp16 and fp16-nhwc (int8 and int8-nhwc) change together or not at all.

    Raises:
        ParityError: a re-derived wrapper failed its check; nothing was registered.
    """
    options = options or VariantOptions()
    wrappers = wrappers_of(bundle, key)
    with contextlib.ExitStack() as stack:
        items = [(key, tmp, meta)]
        for wkey in wrappers:
            staged = stack.enter_context(staged_variant_file(bundle, wkey))
            items.append((wkey, staged, _stage_nhwc(bundle, wkey, key, tmp, staged, options, times)))
        return bundle.add_variants(items)[key]


def _make_nhwc(bundle: Bundle, key: str, base_key: str, base: Path, options: VariantOptions,
               times: StageTimes | None) -> Path:
    with staged_variant_file(bundle, key) as tmp:
        meta = _stage_nhwc(bundle, key, base_key, base, tmp, options, times)
        return bundle.add_variant(key, tmp, meta)


def _stage_nhwc(bundle: Bundle, key: str, base_key: str, base: Path, tmp: Path, options: VariantOptions,
                times: StageTimes | None) -> dict[str, Any]:
    """Wrap `base` (the file of variant `base_key`) for uint8 NHWC input into `tmp`, check it against `base`
    on the same frames, and return its manifest entry. Raises ParityError (nothing registered)."""
    import onnx

    enc = bundle.encoder
    mean, std = enc["mean"], enc["std"]
    image_size = (int(enc["image_size"][0]), int(enc["image_size"][1]))
    batches = bundle.reference_batches()
    q = options.quiet
    with stage(f"{key} variant: uint8 NHWC input, normalised in the graph", times, q):
        model = wrap_nhwc(onnx.load(str(base)), mean=mean, std=std)
    save_variant_model(model, tmp, key)
    del model
    with stage(f"{key} check: ONNX Runtime CPU vs {base_key} on the same frames", times, q):
        result = check_nhwc(tmp, base, mean=mean, std=std, image_size=image_size, batches=batches,
                            seed=options.image_seed, tol=options.nhwc_tolerance,
                            layout=OutputLayout.from_manifest(bundle.manifest))
    if not result:
        raise ParityError(f"{key} variant differs from the {base_key} variant on the same frames: {result.failure_text()}",
                          "nothing was registered; check the bundle's encoder mean/std and image size")
    precision = parse_variant_key(key)[0]
    return {
        "precision": precision, "input_layout": "nhwc-uint8",
        **variant_io(tmp),
        "source": f"tokcomp-edge {__version__} nhwc wrapper around {base_key}",
        "preprocess": {"input": "uint8 RGB [B,H,W,3]", "ops": "Cast → Transpose → (x/255 − mean)/std",
                       "mean": list(mean), "std": list(std)},
        "base": {"variant": base_key, "file": base.name, "sha256": sha256_file(base)},
        "lint": lint_counts(tmp),
        "check": result.to_dict(),
    }


@contextlib.contextmanager
def staged_variant_file(bundle: Bundle, key: str) -> Iterator[Path]:
    """A temp file inside the bundle folder (same filesystem, so add_variant can rename it into place),
    removed on any failure; after a successful add_variant it no longer exists."""
    fd, name = tempfile.mkstemp(prefix=f".model.{key}.", suffix=".onnx.tmp", dir=bundle.path)
    os.close(fd)
    path = Path(name)
    try:
        user_mode(path)  # the umask's mode, not mkstemp's 0600
        with destination_errors(bundle.path):
            yield path
    finally:
        path.unlink(missing_ok=True)


def save_variant_model(model, path: Path, key: str,
                       hint: str = "use the fp16 variant (half the size) or a smaller encoder") -> None:
    """Write a variant as one deterministic file (variants carry no external data)."""
    size = model.ByteSize()
    if size >= SINGLE_FILE_LIMIT:
        raise InputError(f"the {key} variant would be {size / 2**30:.1f} GiB, over protobuf's 2 GiB single-file "
                         "limit; variants are stored as one file", hint)
    path.write_bytes(model.SerializeToString(deterministic=True))


def variant_io(path: Path) -> dict[str, list[dict[str, Any]]]:
    """The variant's graph I/O in the manifest's format (name, shape with the batch dim name, dtype, layout)."""
    import onnx

    g = onnx.load(str(path), load_external_data=False).graph

    def describe(vi, is_input: bool) -> dict[str, Any]:
        t = vi.type.tensor_type
        shape = [d.dim_param if d.dim_param else d.dim_value for d in t.shape.dim]
        entry: dict[str, Any] = {"name": vi.name, "shape": shape, "dtype": _DTYPES.get(t.elem_type, str(t.elem_type))}
        if is_input:
            entry["layout"] = "NHWC" if len(shape) == 4 and shape[-1] == 3 and t.elem_type == 2 else "NCHW"
        return entry

    return {"inputs": [describe(i, True) for i in g.input], "outputs": [describe(o, False) for o in g.output]}


def lint_counts(path: Path) -> dict[str, int]:
    """TensorRT lint of the new variant, recorded (an error here becomes fatal only at `build`)."""
    from ..core.lint import lint_model

    report = lint_model(path)
    return {"errors": len(report.errors), "warnings": len(report.warnings)}

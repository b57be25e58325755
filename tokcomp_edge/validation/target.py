"""What is being validated: a bundle variant on ONNX Runtime, or a TensorRT engine built from a bundle.

An engine carries no metadata of its own; the engines stage writes `<engine stem>.engine.json` beside
it. This module reads that sidecar and refuses an engine whose source ONNX file is not the one the given
bundle holds (its golden reference would not be the engine's reference).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.bundle import MANIFEST, Bundle
from ..engines.sidecar import (check_engine_file, read_sidecar, sidecar_batch_range, sidecar_onnx_sha,  # noqa: F401
                               sidecar_path)
from ..errors import BundleError, InputError
from .inputs import InputSpec, input_specs, output_names

ENGINE_SUFFIXES = (".plan", ".engine", ".trt")


@dataclass
class Target:
    """The artifact under test and the bundle it answers to.

    Attributes:
        kind: `onnx` or `tensorrt`.
        path: the .onnx file or the engine file.
        bundle: the (verified) bundle.
        variant: bundle variant the artifact implements.
        precision: `fp32`, `fp16`, `int8` (chooses default tolerances).
        inputs, outputs: input specs and output names of the artifact.
        batch_range: (min, max) batch the artifact accepts.
        sidecar: the engine's sidecar JSON (engines only).
        label: short name used in report file names.
    """

    kind: str
    path: Path
    bundle: Bundle
    variant: str
    precision: str
    inputs: list[InputSpec]
    outputs: list[str]
    batch_range: tuple[int, int]
    label: str
    sidecar: dict[str, Any] | None = field(default=None)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "target"


def _bundle_target(bundle: Bundle, variant: str | None, device: str, onnx_file: Path | None = None) -> Target:
    if onnx_file is not None and variant is None:
        matches = [k for k, v in bundle.variants().items() if v.get("file") == onnx_file.name]
        if not matches:
            raise InputError(f"{onnx_file.name} is not a variant of bundle {bundle.path}",
                             f"variants are: {', '.join(bundle.variants()) or 'none'}")
        variant = matches[0]
    variant = variant or "fp32"
    meta = bundle.variant(variant)
    return Target(kind="onnx", path=bundle.onnx_path(variant), bundle=bundle, variant=variant,
                  precision=str(meta.get("precision", "fp32")), inputs=input_specs(bundle, variant),
                  outputs=output_names(bundle, variant), batch_range=bundle.batch_range,
                  label=_slug(f"onnx-{variant}-{device}"))


def _engine_target(engine: Path, bundle_dir: Path | None, variant: str | None) -> Target:
    sc = read_sidecar(engine)
    check_engine_file(engine, sc)
    if bundle_dir is None:
        recorded = (sc.get("bundle") or {}).get("path") if isinstance(sc.get("bundle"), dict) else None
        if not recorded or not isinstance(recorded, str):
            raise InputError(f"validating engine {engine.name} needs its bundle",
                             "pass --bundle DIR (the bundle the engine was built from)")
        bundle_dir = Path(recorded)
        if not bundle_dir.is_absolute():
            bundle_dir = (engine.parent / bundle_dir).resolve()
    bundle = Bundle.load(bundle_dir, verify=True)
    sc_variant = sc.get("variant") or "fp32"
    if variant and variant != sc_variant:
        raise InputError(f"--variant {variant} does not match engine {engine.name}, built from variant {sc_variant}",
                         "leave --variant out when validating an engine")
    want = sidecar_onnx_sha(sc)
    if not want:
        raise BundleError(f"engine sidecar {sidecar_path(engine).name} records no source ONNX sha256",
                          "rebuild the engine with `tokcomp build`")
    if sc_variant not in bundle.variants():
        raise BundleError(f"engine {engine.name} was built from variant {sc_variant!r}, which bundle {bundle.path} "
                          "does not have", "pass the --bundle the engine was built from")
    onnx_file = bundle.variant(sc_variant)["file"]
    have = bundle.manifest["files"][onnx_file]["sha256"]
    if want != have:
        raise BundleError(f"engine {engine.name} was built from a different {onnx_file} (sha256 {want[:12]}…, "
                          f"the bundle's is {have[:12]}…)",
                          "pass the --bundle the engine was built from, or rebuild the engine from this bundle")
    meta = bundle.variant(sc_variant)
    specs = input_specs(bundle, sc_variant)
    lo, hi = bundle.batch_range
    prof = sidecar_batch_range(sc, specs[0].name)
    if prof:
        lo, hi = max(lo, prof[0]), min(hi, prof[1])
    return Target(kind="tensorrt", path=engine, bundle=bundle, variant=sc_variant,
                  precision=str(sc.get("precision") or meta.get("precision", "fp32")), inputs=specs,
                  outputs=output_names(bundle, sc_variant), batch_range=(lo, hi),
                  label=_slug(f"trt-{engine.stem}"), sidecar=sc)


def resolve_target(target: Path, bundle: Path | None = None, variant: str | None = None,
                   device: str = "cpu") -> Target:
    """Work out what to validate from the command-line target.

    Args:
        target: bundle folder, its manifest.json, one of its .onnx files, or an engine file.
        bundle: --bundle (required for an engine whose sidecar records no bundle path).
        variant: --variant.
        device: --device (ONNX Runtime), used in the report label.
    Returns:
        Target, with the bundle's checksums verified.
    Raises:
        BundleError/InputError (exit 2): missing paths, changed bundle files, mismatched engine.
    """
    target = Path(target)
    if not target.exists():
        raise InputError(f"{target} does not exist", "pass a bundle folder or an engine .plan file")
    if target.is_file() and target.suffix in ENGINE_SUFFIXES:
        return _engine_target(target, bundle, variant)
    if target.is_file() and target.suffix == ".onnx":
        b = Bundle.load(target.parent, verify=True)
        return _bundle_target(b, variant, device, onnx_file=target)
    if target.is_dir() or target.name == MANIFEST:
        b = Bundle.load(target, verify=True)
        if bundle is not None and Path(bundle).resolve() != b.path.resolve():
            raise InputError(f"--bundle {bundle} differs from the bundle being validated ({b.path})",
                             "--bundle is only needed for engines; leave it out")
        return _bundle_target(b, variant, device)
    raise InputError(f"{target} is neither a bundle folder nor an engine ({', '.join(ENGINE_SUFFIXES)})",
                     "pass a folder written by `tokcomp export`, or an engine from `tokcomp build`")


def stored_debug(bundle: Bundle, variant: str | None) -> dict[str, Any] | None:
    """The `tokcomp debug` result stored in the bundle (`debug/<variant>.json`), for the report's "Precision
    debug" section — only while it still describes the variant file the manifest holds now (same sha256),
    and only a committed one (debug/store.py: its JSON and HTML written together)."""
    from ..core.debug_record import read_result

    if not variant:
        return None
    key = variant[: -len("-nhwc")] if variant.endswith("-nhwc") else variant
    d = read_result(bundle.path, key)
    try:
        entry = bundle.manifest["variants"][key]
        current = bundle.manifest["files"][entry["file"]]["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return d if isinstance(d, dict) and d.get("variant_sha256") == current else None

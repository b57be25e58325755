"""engine.json, the sidecar of every engine, and the layer statistics it carries.

Engines carry no user metadata (and metadata inside the plan file would break trtexec/DeepStream), so
what an engine is — TensorRT version, GPU, profile, bundle, variant, formats, layer precisions — lives
beside it. Everything here is pure (no TensorRT): the adapter hands in the inspector JSON and the numbers.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .. import __version__
from ..core.bundle import read_tagged_json
from ..errors import BundleError

SCHEMA = "tokcomp-edge/engine"
SCHEMA_VERSION = 1

# Data-type words as the engine inspector writes them in "Format/Datatype" (e.g. "Row major linear FP32",
# "Channel major FP16 format where channel % 8 == 0", Myelin's "Half"), following TREx's table.
_DTYPE_WORDS = [
    (re.compile(r"\b(?:UInt8|UINT8)\b"), "uint8"),
    (re.compile(r"\b(?:Int8|INT8)\b"), "int8"),
    (re.compile(r"\b(?:FP8)\b"), "fp8"),
    (re.compile(r"\b(?:BFloat16|BF16)\b"), "bf16"),
    (re.compile(r"\b(?:FP16|Half)\b"), "fp16"),
    (re.compile(r"\b(?:FP32|Float)\b"), "fp32"),
    (re.compile(r"\b(?:Int32|INT32)\b"), "int32"),
    (re.compile(r"\b(?:Int64|INT64)\b"), "int64"),
    (re.compile(r"\b(?:Bool|BOOL)\b"), "bool"),
]
# A layer counts at the lowest float precision among its inputs and outputs: a GEMM reading int8 and
# writing fp16 ran int8 math; a cast fp32→fp16 is where fp16 starts. Integer-only layers (shape math,
# indices) count as "other".
_RANK = ["int8", "fp8", "fp16", "bf16", "fp32"]


def tensor_dtype(format_desc: str) -> str | None:
    """The data type named in an inspector "Format/Datatype" string, or None."""
    for pattern, name in _DTYPE_WORDS:
        if pattern.search(format_desc or ""):
            return name
    return None


def layer_precision(layer: dict[str, Any]) -> str:
    """fp32 | fp16 | bf16 | int8 | fp8 | other — see `_RANK` for the rule."""
    seen = {tensor_dtype(t.get("Format/Datatype", "")) for t in [*layer.get("Inputs", []), *layer.get("Outputs", [])]
            if isinstance(t, dict)}
    for name in _RANK:
        if name in seen:
            return name
    return "other"


def parse_inspector(text: str) -> dict[str, Any]:
    """The inspector's engine information (`LayerInformationFormat.JSON`) as a dict with a `Layers` list.

    With profiling verbosity below DETAILED TensorRT lists bare layer names (strings); those count as
    layers of unknown precision.
    """
    data = json.loads(text)
    if isinstance(data, list):
        data = {"Layers": data}
    data.setdefault("Layers", [])
    return data


# Engine layers that move or re-describe data rather than compute: format conversions TensorRT inserts
# ("Reformatting CopyNode …", LayerType Reformat or NoOp, Origin REFORMAT), casts, shape arithmetic and
# copies. Counting them would let an fp16 engine look half fp32 because of its I/O reformats.
DATA_MOVEMENT_TYPES = {"Reformat", "NoOp", "Cast", "Shape", "ShapeHostToDevice", "Copy", "Identity"}


# GPU<->DLA copies of a DLA engine, named "<tensor> to nvm", "<tensor> from nvm", "<tensor> copy finish"
# (a real Orin DLA engine's per-layer profile in NVIDIA/TensorRT issue #3143).
_DLA_TRANSFER = re.compile(r" (?:to nvm|from nvm|copy finish)$")


def is_data_movement(layer: dict[str, Any]) -> bool:
    """A reformat / cast / shape / copy layer (see DATA_MOVEMENT_TYPES), not a compute layer."""
    name = str(layer.get("Name", ""))
    return (str(layer.get("LayerType")) in DATA_MOVEMENT_TYPES or layer.get("Origin") == "REFORMAT"
            or name.startswith("Reformatting CopyNode") or bool(_DLA_TRANSFER.search(name)))


def _layer_name(layer: Any) -> str:
    return str(layer.get("Name", "")) if isinstance(layer, dict) else str(layer)


def measured_placement(inspector: dict[str, Any], report, uses_dla: bool) -> dict[str, Any]:
    """Where the engine's compute layers run, after the build (`kind: measured`).

    The engine inspector lists the engine's layers; the builder's placement report (dla.PlacementReport)
    names the DLA subgraphs among them. An inspector layer named like a reported DLA subgraph runs on the
    DLA, every other compute layer on the GPU (data movement is left out, as in `layer_stats`).

    Args:
        inspector: parsed inspector JSON (`parse_inspector`).
        report: the PlacementReport the builder logged (None when nothing was captured).
        uses_dla: whether the profile built for a DLA core.

    Returns:
        {"kind": "measured", "dla": n, "gpu": m, "dla_layers": [names], "basis": …}, or, for a DLA build
        whose placement report was not logged or names no inspector layer, {"kind": "unknown", "reason": …}.
    """
    compute = [layer for layer in inspector.get("Layers", [])
               if not is_data_movement(layer if isinstance(layer, dict) else {"Name": layer})]
    if not uses_dla:
        return {"kind": "measured", "dla": 0, "gpu": len(compute), "dla_layers": [],
                "basis": "GPU build: every engine compute layer runs on the GPU"}
    if report is None or not report.seen:
        return {"kind": "unknown", "reason": "TensorRT logged no 'Layers running on DLA' report during the build"}
    dla_names = set(report.dla)
    on_dla = [_layer_name(layer) for layer in compute if _layer_name(layer) in dla_names]
    missing = sorted(dla_names - set(on_dla))
    if missing:
        return {"kind": "unknown", "reason": f"the builder reported DLA subgraph {missing[0]!r}, which the engine "
                                             "inspector does not list"}
    return {"kind": "measured", "dla": len(on_dla), "gpu": len(compute) - len(on_dla), "dla_layers": on_dla,
            "basis": "engine inspector layers (after fusion; each DLA entry is one ForeignNode subgraph) matched "
                     "against the builder's 'Layers running on DLA' report"}


def layer_stats(inspector: dict[str, Any]) -> dict[str, Any]:
    """Counts by precision (compute layers only) and by layer type from parsed inspector JSON.

    Returns:
        {"total": n, "compute": c, "precision": {"fp32": …, "fp16": …, "int8": …, …} (of the c compute
        layers), "excluded": {LayerType: n} (reformat / cast / shape / copy layers, not in `precision`),
        "types": {LayerType: n}} — precision keys fp32/fp16/int8 are always present (0 when none).
    """
    precision: Counter[str] = Counter({"fp32": 0, "fp16": 0, "int8": 0})
    types: Counter[str] = Counter()
    excluded: Counter[str] = Counter()
    layers = inspector.get("Layers", [])
    for layer in layers:
        if isinstance(layer, dict):
            kind = str(layer.get("LayerType", "?"))
            types[kind] += 1
            if is_data_movement(layer):
                excluded[kind] += 1
            else:
                precision[layer_precision(layer)] += 1
        else:  # a bare name (profiling verbosity below DETAILED): a layer of unknown kind and precision
            types["?"] += 1
            if is_data_movement({"Name": layer}):
                excluded["?"] += 1
            else:
                precision["other"] += 1
    return {"total": len(layers), "compute": len(layers) - sum(excluded.values()), "precision": dict(precision),
            "excluded": dict(excluded), "types": dict(types)}


def engine_record(*, plan, trt_version: str, gpu: dict[str, Any], engine_bytes: int, engine_sha256: str,
                  onnx_sha256: str, io: list[dict[str, Any]], layers: dict[str, Any], placement: dict[str, Any],
                  build_seconds: float, timing_cache: dict[str, Any], warnings: list[str],
                  measured: dict[str, Any] | None = None) -> dict[str, Any]:
    """The engine.json document (schema `tokcomp-edge/engine` v1; see the README, "Building TensorRT engines").

    Args:
        plan: the BuildPlan that was executed.
        trt_version: TensorRT's full version string.
        gpu: GpuInfo.to_dict() of the build GPU.
        engine_bytes, engine_sha256: size and digest of the `.plan` file.
        onnx_sha256: digest of the ONNX variant that was parsed.
        io: per engine I/O tensor: name, mode, dtype, shape, format, format_desc (from the engine).
        layers: `layer_stats()` of the inspector JSON.
        placement: {"dla": n, "gpu": m, "basis": …, "kind": "prediction"} — where the network layers were
            predicted to run before the build (IBuilderConfig.can_run_on_DLA), not measured.
        measured: `measured_placement()` — where the engine's layers run after the build (`kind: measured`).
        build_seconds: wall time of build_serialized_network.
        timing_cache: {"path", "loaded", "saved", "note"}.
        warnings: builder warnings worth keeping (capped by the caller).
    """
    profile = plan.profile.to_dict()
    first = plan.inputs[0]
    # The batch sizes actually built (the profile file may leave them to the bundle) and full shapes.
    profile["batch"] = {"min": first.shape_min[0], "opt": first.shape_opt[0], "max": first.shape_max[0]}
    profile["shapes"] = {i.name: {"min": list(i.shape_min), "opt": list(i.shape_opt), "max": list(i.shape_max)}
                         for i in plan.inputs}
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "created_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "tokcomp_edge": __version__,
        "engine": {"file": plan.engine_path.name, "bytes": engine_bytes, "sha256": engine_sha256,
                   "inspector": plan.layers_path.name},
        "tensorrt": {"version": trt_version, "major": int(trt_version.split(".")[0])},
        "gpu": gpu,
        "variant": plan.variant,
        "precision": plan.profile.precision,
        "profile": profile,
        # The bundle path is stored relative to the engine's folder, so engines/ and export/ can move together.
        "bundle": {"name": plan.bundle_name, "path": _relative(plan.bundle_path, plan.engine_path.parent),
                   "manifest_sha256": plan.manifest_sha256, "variant": plan.variant, "onnx": plan.onnx_path.name,
                   "onnx_sha256": onnx_sha256},
        "inputs": [dict(i.to_dict(), **_io_for(io, i.name)) for i in plan.inputs],
        "io": io,
        "build": {"seconds": round(build_seconds, 3), "timing_cache": timing_cache, "warnings": warnings},
        "layers": {**layers, "placement": placement,
                   "placement_measured": measured if measured is not None else {"kind": "unknown",
                                                                               "reason": "not recorded"}},
    }


def _relative(path: Path, start: Path) -> str:
    try:
        return os.path.relpath(Path(path).resolve(), Path(start).resolve())
    except ValueError:  # different drives (Windows): keep it absolute
        return str(Path(path).resolve())


def _io_for(io: list[dict[str, Any]], name: str) -> dict[str, Any]:
    for t in io:
        if t.get("name") == name:
            return {"engine_dtype": t.get("dtype"), "engine_format_desc": t.get("format_desc")}
    return {}


def read_engine_info(path: str | Path) -> dict[str, Any]:
    """Load an engine's sidecar: accepts the `.plan` path or the `.engine.json` path.

    Raises:
        BundleError: missing or not a tokcomp engine.json (exit 2).
    """
    path = Path(path)
    sidecar = path if path.name.endswith(".engine.json") else path.with_name(path.name.removesuffix(".plan")
                                                                            + ".engine.json")
    if not sidecar.is_file():
        raise BundleError(f"{sidecar} does not exist, so {path.name} has no tokcomp build record",
                          "build the engine with `tokcomp build`, which writes it beside the .plan")
    record = read_tagged_json(sidecar, SCHEMA, "rebuild the engine with `tokcomp build`")
    # The sections readers open (validate's target and runner, debug's twin build) are objects; an edited
    # record is one BundleError here rather than an AttributeError in whichever reader meets it first.
    for key in ("engine", "bundle", "profile", "tensorrt", "layers"):
        if key in record and not isinstance(record[key], dict):
            raise BundleError(f"{sidecar} key {key} is {record[key]!r:.60}, expected an object",
                              "rebuild the engine with `tokcomp build` (engine.json is not edited by hand)")
    for key in ("variant", "precision"):
        if key in record and not isinstance(record[key], str):
            raise BundleError(f"{sidecar} key {key} is {record[key]!r:.60}, expected a string",
                              "rebuild the engine with `tokcomp build` (engine.json is not edited by hand)")
    return record

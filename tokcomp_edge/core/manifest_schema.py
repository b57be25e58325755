"""The manifest's schema (version 1), checked once where a bundle is loaded (core/bundle.py `Bundle.load`).

Consumers index the manifest directly (`manifest["onnx"]["batch"]["max"]`); this module is what makes that
safe: every key a consumer reads without a default is required here with its type and range, so a manifest
with a dropped key or a value of the wrong type is one BundleError (exit 2) naming the key path, the value
and what was expected — not a KeyError / TypeError deep in `inspect` or `build`. Figures that describe the
same tensor must agree (`_check_relations`). Keys that are not listed (notes, parity details, versions, a
stage's own extras) are allowed; optional sections consumers read (`vlm`, `blocks`, …) are checked when
present. Hand-written on purpose: the core install stays light (no jsonschema dependency), and the rules are
a few small classes. Every manifest the exporter writes passes (tests/fuzz/test_schema_accepts.py).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from ..errors import BundleError

HINT = "re-export the bundle with this version of tokcomp; a manifest is not edited by hand"


class _Rule:
    def check(self, value: Any, path: str) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def expected(self) -> str:  # pragma: no cover - interface
        raise NotImplementedError

    def fail(self, value: Any, path: str, what: str | None = None) -> None:
        shown = repr(value)
        if len(shown) > 60:
            shown = shown[:57] + "..."
        raise BundleError(f"manifest key {path} is {shown}, expected {what or self.expected()}", HINT)


@dataclass(frozen=True)
class Int(_Rule):
    lo: int | None = None
    hi: int | None = None

    def expected(self) -> str:
        if self.lo is not None and self.hi is not None:
            return f"an integer in [{self.lo}, {self.hi}]"
        return f"an integer ≥ {self.lo}" if self.lo is not None else "an integer"

    def check(self, value, path):
        # bool is an int subclass in Python; a manifest `true` where a count belongs is wrong.
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(value, path)
        if (self.lo is not None and value < self.lo) or (self.hi is not None and value > self.hi):
            self.fail(value, path)


@dataclass(frozen=True)
class Num(_Rule):
    positive: bool = False

    def expected(self) -> str:
        return "a finite number > 0" if self.positive else "a finite number"

    def check(self, value, path):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            self.fail(value, path)
        if self.positive and not value > 0:
            self.fail(value, path)


@dataclass(frozen=True)
class Str(_Rule):
    choices: tuple[str, ...] = ()
    nonempty: bool = True
    pattern: str = ""      # a full-match regular expression, when the string has a form (a digest)
    what: str = ""         # how to name that form in the message

    def expected(self) -> str:
        if self.choices:
            return f"one of {', '.join(self.choices)}"
        return self.what or ("a non-empty string" if self.nonempty else "a string")

    def check(self, value, path):
        if not isinstance(value, str) or (self.nonempty and not value) or (self.choices and value not in self.choices):
            self.fail(value, path)
        if self.pattern and not re.fullmatch(self.pattern, value):
            self.fail(value, path)


@dataclass(frozen=True)
class FileName(_Rule):
    """A file inside the bundle folder: relative, no `..`, no empty part — consumers join it to the folder."""

    def expected(self) -> str:
        return "a file name inside the bundle folder"

    def check(self, value, path):
        if not isinstance(value, str) or not value or value.startswith(("/", "\\")) or "\x00" in value:
            self.fail(value, path)
        parts = value.replace("\\", "/").split("/")
        if any(p in ("", ".", "..") for p in parts) or ":" in parts[0]:
            self.fail(value, path)


@dataclass(frozen=True)
class Bool(_Rule):
    def expected(self) -> str:
        return "true or false"

    def check(self, value, path):
        if not isinstance(value, bool):
            self.fail(value, path)


@dataclass(frozen=True)
class Any_(_Rule):
    def expected(self) -> str:
        return "any value"

    def check(self, value, path):
        return None


@dataclass(frozen=True)
class Nullable(_Rule):
    inner: _Rule

    def expected(self) -> str:
        return f"null or {self.inner.expected()}"

    def check(self, value, path):
        if value is not None:
            self.inner.check(value, path)


@dataclass(frozen=True)
class Either(_Rule):
    options: tuple[_Rule, ...]

    def expected(self) -> str:
        return " or ".join(o.expected() for o in self.options)

    def check(self, value, path):
        for o in self.options:
            try:
                o.check(value, path)
                return
            except BundleError:
                continue
        self.fail(value, path)


@dataclass(frozen=True)
class List(_Rule):
    item: _Rule
    min_len: int = 0
    length: int | None = None

    def expected(self) -> str:
        n = (f"{self.length} items" if self.length is not None else
             f"at least {self.min_len} item{'s' if self.min_len > 1 else ''}" if self.min_len else "items")
        return f"a list of {n}, each {self.item.expected()}"

    def check(self, value, path):
        if not isinstance(value, list) or len(value) < self.min_len or (
                self.length is not None and len(value) != self.length):
            self.fail(value, path)
        for i, v in enumerate(value):
            self.item.check(v, f"{path}[{i}]")


@dataclass(frozen=True)
class Map(_Rule):
    """A JSON object of free keys, each value following `value`."""
    value: _Rule
    min_len: int = 0

    def expected(self) -> str:
        return "an object" + (" (not empty)" if self.min_len else "")

    def check(self, value, path):
        if not isinstance(value, dict) or len(value) < self.min_len:
            self.fail(value, path)
        for k, v in value.items():
            self.value.check(v, f"{path}.{k}")


@dataclass(frozen=True)
class Obj(_Rule):
    """A JSON object with `required` and `optional` keys; other keys are allowed (other stages' sections)."""
    required: dict[str, _Rule] = field(default_factory=dict)
    optional: dict[str, _Rule] = field(default_factory=dict)

    def expected(self) -> str:
        return "an object"

    def check(self, value, path):
        if not isinstance(value, dict):
            self.fail(value, path)
        for key, rule in self.required.items():
            sub = f"{path}.{key}" if path else key
            if key not in value:
                raise BundleError(f"manifest key {sub} is missing, expected {rule.expected()}", HINT)
            rule.check(value[key], sub)
        for key, rule in self.optional.items():
            if key in value:
                rule.check(value[key], f"{path}.{key}" if path else key)


POS = Int(lo=1)
NONNEG = Int(lo=0)
DIM = Either((POS, Str()))                       # a static size or a named dynamic axis ("batch")
GRID = List(POS, length=2)
RGB = List(Num(), length=3)
RGB_STD = List(Num(positive=True), length=3)
# The element types the exporter and the variants write (export/onnx_export.py, export/variants.py _DTYPES).
DTYPES = ("float32", "float16", "bfloat16", "uint8", "int8", "int32", "int64")
TENSOR = Obj(required={"name": Str(), "shape": List(DIM, min_len=1), "dtype": Str(choices=DTYPES)},
             optional={"layout": Str(choices=("NCHW", "NHWC"))})
TENSORS = List(TENSOR, min_len=1)
SHA256 = Str(pattern="[0-9a-f]{64}", what="64 lower-case hex digits (a sha256)")

WEIGHTS = Obj(optional={"kind": Str(), "seed": Nullable(Int()), "path": Nullable(Str()), "sha256": Nullable(Str()),
                        "covers": Str()})
# `inspect` prints family, layer and weights of every bundle: required.
ENCODER = Obj(
    required={"name": Str(), "family": Str(), "image_size": GRID, "patch_size": POS, "prefix_tokens": NONNEG,
              "hidden_size": POS, "mean": RGB, "std": RGB_STD, "layer": Int(), "weights": WEIGHTS},
    optional={"source": Str(), "grid": GRID, "has_cls": Bool(), "num_layers": NONNEG, "num_heads": POS,
              "layers_run": NONNEG, "default_prefix": Str(), "config": Obj(), "seed": Nullable(Int())},
)

# The compressor's figures (CompressionPlan.to_dict): the comparison reads the prefix, the grids and the
# indexed / merged counts to pair tokens, so all of them are required and related in `_check_relations`.
COMPRESSION = Obj(
    required={"spec": Str(), "method": Str(), "params": Obj(), "tokens_in": POS, "tokens_out": POS,
              "dim_out": POS, "prefix": Str(choices=("keep", "drop")), "prefix_in": NONNEG, "prefix_out": NONNEG,
              "patch_tokens_in": POS, "patch_tokens_out": POS, "grid_in": GRID, "grid_out": Nullable(GRID),
              "dim_in": POS, "indexed_out": NONNEG, "merged_out": NONNEG,
              "formula": Str(nonempty=False)},
    optional={"schedule": List(NONNEG), "block_tokens": List(NONNEG)},
)

PREPROCESS = Obj(required={"image_size": GRID, "mean": RGB, "std": RGB_STD},
                 optional={"layout": Str(), "resize_size": Nullable(Either((POS, GRID))),
                           "crop": Nullable(GRID), "rescale_factor": Nullable(Num(positive=True))})

ONNX = Obj(required={"file": FileName(), "opset": POS, "batch": Obj(required={"min": POS, "max": POS}),
                     "inputs": TENSORS, "outputs": TENSORS, "cleanup": Str()},
           optional={"external_data": Bool()})

VARIANT = Obj(required={"file": FileName()},
              optional={"precision": Str(), "input_layout": Str(), "inputs": TENSORS, "outputs": TENSORS})

REFERENCE = Obj(required={"file": FileName(), "batch_sizes": List(POS, min_len=1)}, optional={"seed": Int()})

FILE = Obj(required={"sha256": SHA256, "bytes": NONNEG})

BLOCK = Obj(required={"index": NONNEG, "module": Str(), "output": Str()})

# A VLM bundle's section (vlm/plan.py VlmPlan.to_dict): what `inspect` and the report's token economics read.
LLM = Obj(required={"model_type": Str(), "hidden": POS, "layers": POS, "heads": POS, "kv_heads": POS, "mlp": POS,
                    "gated": Bool()},
          optional={"kv_layers": NONNEG, "head_dim": POS, "attn_gate": Bool(), "conv_layers": NONNEG,
                    "conv_kernel": POS, "linear_layers": NONNEG, "linear_k_heads": POS, "linear_k_dim": POS,
                    "linear_v_heads": POS, "linear_v_dim": POS, "linear_conv_kernel": POS})
# Qwen-VL: what the LLM side needs to place one tile's tokens (vlm/plan.py _qwen_section).
QWEN = Obj(required={"image_grid_thw": List(POS, length=3), "merge_size": POS, "llm_tokens": POS,
                     "deepstack_outputs": List(Str(pattern=r"deepstack_\d+", what="deepstack_<i>"))},
           optional={"deepstack_visual_indexes": List(Int(lo=0))})
# How the device tiles an image and writes its placeholders (vlm/processor_record.py; runtime/ reads them).
PROCESSOR = Obj(required={"family": Str(), "tile": GRID, "mean": RGB, "std": RGB_STD,
                          "rescale_factor": Nullable(Num(positive=True)), "do_normalize": Bool(),
                          "do_convert_rgb": Bool(), "resample": Int(lo=0, hi=5),
                          "rule": Str(choices=("single", "crop_to_patches", "split", "anyres")),
                          "frame": Obj(required={"image_size": GRID, "resize": Str()})},
                optional={"processor_class": Str(), "source": Str(), "size": GRID, "min_patches": POS,
                          "max_patches": POS, "longest_edge": POS, "max_image_size": POS, "patch_size": POS,
                          "image_grid_pinpoints": List(GRID, min_len=1), "model_grid_pinpoints": List(GRID),
                          "vision_aspect_ratio": Str(), "do_pan_and_scan": Bool(), "do_image_splitting": Bool()})
TOKEN = Obj(required={"text": Str(), "id": Nullable(Int(lo=0))})
PROMPT = Obj(required={"tokens": Map(TOKEN, min_len=1), "stock_tokens_per_tile": POS},
             optional={"grid_tokens": Map(Nullable(Int(lo=0))), "text_ids": Map(List(Int(lo=0))),
                       "stock_source": Str()})
VLM = Obj(required={"family": Str(), "transformers_class": Str(), "feature_layer": Int(), "select": Str(),
                    "projector": Bool(), "arithmetic": Str(), "native_tokens_per_tile": POS, "llm": LLM},
          optional={"tokens_per_tile": POS, "dim_out": POS, "grid_out": Nullable(GRID), "video": Bool(),
                    "qwen": QWEN, "processor": PROCESSOR, "prompt": PROMPT,
                    "tile": Obj(optional={"tiles_per_request": POS, "tiles_rule": Str(), "image_size": GRID})})

# The bundle's name becomes a folder (`engines/<name>/`, reports): one path component, never `..`.
NAME = Str(pattern=r"(?!\.\.?$)[^/\\\x00]+", what="a name usable as one folder name (no slashes, not ..)")

MANIFEST_V1 = Obj(
    required={"schema": Str(), "schema_version": Int(), "name": NAME, "encoder": ENCODER,
              "compression": COMPRESSION, "tokens_in": POS, "tokens_out": POS, "dim_out": POS,
              "preprocess": PREPROCESS, "onnx": ONNX, "variants": Map(VARIANT, min_len=1),
              "reference": REFERENCE, "files": Map(FILE, min_len=1)},
    optional={"grid_in": Nullable(GRID), "grid_out": Nullable(GRID), "versions": Map(Any_()),
              "parity": Obj(optional={"passed": Bool()}), "vlm": Nullable(VLM), "blocks": List(BLOCK),
              "created_at": Str()},
)


def check_manifest(manifest: Any) -> None:
    """Check a parsed manifest against schema version 1 and the relations consumers rely on.

    Raises:
        BundleError (exit 2) naming the key path, the value found and what was expected.
    """
    MANIFEST_V1.check(manifest, "")
    for name in manifest["files"]:
        FileName().check(name, f"files (key {name!r})")
    batch = manifest["onnx"]["batch"]
    if batch["min"] > batch["max"]:
        raise BundleError(f"manifest key onnx.batch is {batch}, expected min ≤ max", HINT)
    for b in manifest["reference"]["batch_sizes"]:
        if not batch["min"] <= b <= batch["max"]:
            raise BundleError(f"manifest key reference.batch_sizes holds {b}, expected a batch size in "
                              f"[{batch['min']}, {batch['max']}] (onnx.batch)", HINT)
    for section in ("onnx", *(f"variants.{k}" for k in manifest["variants"])):
        node = manifest["onnx"] if section == "onnx" else manifest["variants"][section.split(".", 1)[1]]
        for io in ("inputs", "outputs"):
            names = [t["name"] for t in node.get(io, [])]
            if len(set(names)) != len(names):
                raise BundleError(f"manifest key {section}.{io} names {names}, expected distinct names", HINT)
    if "fp32" not in manifest["variants"]:
        raise BundleError(f"manifest key variants has {sorted(manifest['variants'])}, expected an fp32 entry "
                          "(model.onnx)", HINT)
    _check_relations(manifest)


def _relation(ok: bool, key: str, value: Any, expected: str) -> None:
    if not ok:
        raise BundleError(f"manifest key {key} is {value!r}, expected {expected}", HINT)


def _shape(tensors: list[dict], name: str) -> list | None:
    return next((t["shape"] for t in tensors if t["name"] == name), None)


def _check_relations(m: dict[str, Any]) -> None:
    """The figures that describe the same tensor agree, as the exporter writes them (export/manifest.py
    io_entries, CompressionPlan): a re-signed manifest whose numbers disagree would make the comparison
    index past a tensor's end instead of failing with one line."""
    onnx, c = m["onnx"], m["compression"]
    h, w = m["preprocess"]["image_size"]
    for section, node in [("onnx", onnx), *((f"variants.{k}", v) for k, v in m["variants"].items())]:
        for i, t in enumerate(node.get("inputs", [])):
            _relation(len(t["shape"]) == 4, f"{section}.inputs[{i}].shape", t["shape"],
                      "4 dimensions (an image batch [B,3,H,W] or [B,H,W,3])")
    first = onnx["inputs"][0]["shape"]
    _relation(first[1:] == [3, h, w], "onnx.inputs[0].shape", first,
              f"[batch, 3, {h}, {w}] (NCHW at preprocess.image_size)")
    _relation(c["tokens_in"] == c["prefix_in"] + c["patch_tokens_in"], "compression.tokens_in", c["tokens_in"],
              f"prefix_in + patch_tokens_in = {c['prefix_in'] + c['patch_tokens_in']}")
    _relation(c["tokens_out"] == c["prefix_out"] + c["patch_tokens_out"], "compression.tokens_out", c["tokens_out"],
              f"prefix_out + patch_tokens_out = {c['prefix_out'] + c['patch_tokens_out']}")
    _relation(c["prefix_out"] <= c["prefix_in"], "compression.prefix_out", c["prefix_out"],
              f"at most prefix_in = {c['prefix_in']}")
    gh, gw = c["grid_in"]
    _relation(gh * gw == c["patch_tokens_in"], "compression.grid_in", c["grid_in"],
              f"a grid of patch_tokens_in = {c['patch_tokens_in']} cells")
    if c["grid_out"] is not None:
        oh, ow = c["grid_out"]
        _relation(oh * ow == c["patch_tokens_out"], "compression.grid_out", c["grid_out"],
                  f"a grid of patch_tokens_out = {c['patch_tokens_out']} cells")
    _relation(c["merged_out"] + c["indexed_out"] <= c["patch_tokens_out"], "compression.indexed_out",
              c["indexed_out"], f"indexed_out + merged_out ≤ patch_tokens_out = {c['patch_tokens_out']}")
    tile = (m.get("vlm") or {}).get("tile", {})
    _relation("tiles_per_request" not in tile or "tiles_rule" in tile, "vlm.tile", tile,
              "tiles_rule beside tiles_per_request")
    if not m.get("vlm"):  # a VLM's top-level figures are after its own transform and projector
        for key in ("tokens_out", "dim_out"):
            _relation(m[key] == c[key], key, m[key], f"compression.{key} = {c[key]} (a bare tower)")
    outs = onnx["outputs"]
    want = {"tokens": [m["tokens_out"], m["dim_out"]], "indices": [c["indexed_out"]],
            "sizes": [c["tokens_out"]], "merge_map": [c["patch_tokens_in"]]}
    _relation(_shape(outs, "tokens") is not None, "onnx.outputs", [t["name"] for t in outs], "a `tokens` output")
    qwen = (m.get("vlm") or {}).get("qwen")
    if qwen:
        g = qwen["image_grid_thw"]
        _relation(qwen["llm_tokens"] * qwen["merge_size"] ** 2 == g[1] * g[2] and qwen["llm_tokens"] == m["tokens_out"]
                  or not m["vlm"].get("projector", True), "vlm.qwen.image_grid_thw", g,
                  f"h·w = tokens_out {m['tokens_out']} × merge_size² ({qwen['merge_size']}²)")
        for name in qwen["deepstack_outputs"]:
            want[name] = [m["tokens_out"], m["dim_out"]]
            _relation(_shape(outs, name) is not None, "vlm.qwen.deepstack_outputs", qwen["deepstack_outputs"],
                      f"outputs of the graph (no `{name}` among {[t['name'] for t in outs]})")
    for name, dims in want.items():
        shape = _shape(outs, name)
        if shape is not None:
            _relation(len(shape) == 1 + len(dims) and shape[1:] == dims, f"onnx.outputs[{name}].shape", shape,
                      f"[batch, {', '.join(map(str, dims))}]")
    _relation((_shape(outs, "indices") is not None) == (c["indexed_out"] > 0), "compression.indexed_out",
              c["indexed_out"], "> 0 exactly when the graph has an `indices` output")

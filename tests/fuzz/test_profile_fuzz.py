"""Build-profile files (TOML) and engine sidecars (engine.json), mutated: the profile parser and the sidecar
readers accept or refuse with one TokcompError, and `build --dry-run` / `validate ENGINE` exit 2/3 (0 for a
profile that parses) with one line, never a traceback, and write no engines folder or report.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from pathlib import Path

from hypothesis import given, note
from hypothesis import strategies as st

from fuzz_helpers import check_outcome, json_paths, get_at, mutate, replacements, run_main
from tokcomp_edge.core.bundle import Bundle
from tokcomp_edge.errors import TokcompError

FIELDS = ["name", "description", "precision", "input", "engine_input_format", "batch", "workspace",
          "builder_optimization_level", "timing_cache", "hardware_compatibility", "version_compatible",
          "dla_core", "gpu_fallback", "bogus"]
GOOD = {"precision": ["fp32", "fp16", "int8"], "input": ["nchw-float", "nhwc-uint8"],
        "engine_input_format": ["linear", "hwc", "hwc8", "hwc16"], "workspace": ["2GiB", "512MiB", "1.5G", 1 << 20],
        "builder_optimization_level": [0, 3, 5], "timing_cache": ["auto", "off", "{gpu}-{trt}.cache"],
        "hardware_compatibility": ["none", "ampere+"], "version_compatible": [True, False], "dla_core": [0, 1],
        "gpu_fallback": [True, False], "name": ["orin", "a b", "x/y", ""], "description": ["d"]}
scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2 ** 70), 2 ** 70),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12))
batch = st.dictionaries(st.sampled_from(["min", "opt", "max", "x"]), st.one_of(st.integers(-2, 20), scalars),
                        max_size=4)


def _value(field: str):
    good = st.sampled_from(GOOD.get(field, [1]))
    if field == "batch":
        return st.one_of(batch, scalars)
    return st.one_of(good, good, scalars, st.lists(scalars, max_size=2), batch)


@st.composite
def profiles(draw):
    keys = draw(st.lists(st.sampled_from(FIELDS), unique=True, max_size=7))
    doc = {k: draw(_value(k)) for k in keys}
    if draw(st.booleans()):
        doc.setdefault("precision", draw(st.sampled_from(GOOD["precision"])))
    return doc


def _toml_value(v) -> str:
    if v is None:
        return '"none"'  # TOML has no null
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a TOML basic string is a JSON string (\\uXXXX escapes included)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"


def to_toml(doc: dict) -> str:
    return "".join(f"{json.dumps(k)} = {_toml_value(v)}\n" for k, v in doc.items())


@given(doc=profiles(), garble=st.sampled_from([None, None, None, "truncate", "bytes"]))
def test_profile_files(fuzz_bundles, fuzz_cases, capsys, doc, garble):
    from tokcomp_edge.engines.profile import parse_profile_text

    fuzz_cases.count()
    text = to_toml(doc)
    if garble == "truncate":
        text = text[: len(text) // 2 + 1]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        path = tmp / "my_profile.toml"
        if garble == "bytes":
            path.write_bytes(b"\xff\xfe" + text.encode())
        else:
            path.write_text(text)
        try:
            parse_profile_text(text, name="my_profile", source=str(path))
        except TokcompError as exc:
            assert exc.exit_code == 2
        what = f"build --dry-run --profile <{text!r}>"
        note(what)
        code, out, err = run_main(capsys, "build", fuzz_bundles["prune"], "--dry-run", "--profile", path,
                                  "--engines-dir", tmp / "engines")
        check_outcome(code, out, err, what)
        assert code in (0, 2), f"{what}: exit {code}\n{err}"
        assert not (tmp / "engines").exists(), f"{what}: a dry run wrote engines/"


def _sidecar(bundle_dir: Path, engines: Path) -> Path:
    """A .plan with the engine.json `tokcomp build` writes (engine_record's keys; the plan bytes are no
    real engine, which a machine without TensorRT never gets to load)."""
    from tokcomp_edge.engines.profile import load_preset

    engines.mkdir(parents=True, exist_ok=True)
    plan = engines / "gpu-trt10.3-fp16.plan"
    plan.write_bytes(b"not a real engine")
    bundle = Bundle.load(bundle_dir)
    profile = load_preset("fp16").to_dict()
    profile["batch"] = {"min": 1, "opt": 1, "max": 2}
    profile["shapes"] = {"pixel_values": {"min": [1, 3, 224, 224], "opt": [1, 3, 224, 224], "max": [2, 3, 224, 224]}}
    side = {"schema": "tokcomp-edge/engine", "schema_version": 1, "created_at": "2026-01-01T00:00:00Z",
            "tokcomp_edge": "0.1.0",
            "engine": {"file": plan.name, "bytes": plan.stat().st_size,
                       "sha256": hashlib.sha256(plan.read_bytes()).hexdigest(), "inspector": "x.layers.json"},
            "tensorrt": {"version": "10.3.0", "major": 10}, "gpu": {"name": "gpu"}, "variant": "fp32",
            "precision": "fp16", "profile": profile,
            "bundle": {"name": bundle.name, "path": os.path.relpath(bundle_dir, engines),
                       "manifest_sha256": bundle.manifest_sha256(), "variant": "fp32", "onnx": "model.onnx",
                       "onnx_sha256": bundle.manifest["files"]["model.onnx"]["sha256"]},
            "inputs": [], "io": [], "build": {"seconds": 1.0}, "layers": {"total": 0}}
    plan.with_name(plan.stem + ".engine.json").write_text(json.dumps(side))
    return plan


@given(data=st.data())
def test_engine_sidecars(fuzz_bundles, fuzz_cases, capsys, data):
    from tokcomp_edge.engines.profile import profile_from_record
    from tokcomp_edge.validation.target import read_sidecar, sidecar_batch_range, sidecar_onnx_sha

    fuzz_cases.count()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        plan = _sidecar(fuzz_bundles["prune"], tmp / "engines")
        side_path = plan.with_name(plan.stem + ".engine.json")
        base = json.loads(side_path.read_text())
        path = data.draw(st.sampled_from(json_paths(base)))
        op = data.draw(st.sampled_from(["drop", "set"]))
        new = data.draw(st.sampled_from(replacements(get_at(base, path)))) if op == "set" else None
        doc = mutate(base, path, op, new)
        side_path.write_text(json.dumps(doc))
        what = f"engine.json {'.'.join(map(str, path))} {op} {new!r}"
        note(what)
        try:  # the readers `validate ENGINE` and `debug --engine` use, alone
            sc = read_sidecar(plan)
            sidecar_onnx_sha(sc)
            sidecar_batch_range(sc, "pixel_values")
            if isinstance(sc.get("profile"), dict):
                profile_from_record(sc["profile"])
        except TokcompError as exc:
            assert exc.exit_code == 2, exc
        code, out, err = run_main(capsys, "validate", plan, "--torch", "off", "--iterations", "0",
                                  "--extra-inputs", "0", "--quiet", "--out", tmp / "reports")
        check_outcome(code, out, err, what)
        assert code != 0, f"{what}: exit 0 for a file that is not an engine\n{err}"
        assert not (tmp / "reports").exists(), f"{what}: refused, yet wrote a report"

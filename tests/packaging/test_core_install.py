"""The Jetson install: a real second virtual environment with only the core (no torch, no ONNX Runtime),
running the device-side commands on a bundle the workstation environment exported.

The environment is built by core_env.py (cached in .cache/core-venv, reused while the pins stay the same).
A second one, the core plus the `[ort]` extra (.cache/core-ort-venv, built the same way), runs the device
runtime — `tokcomp encode` and `VisionRuntime` — on ONNX Runtime and must give what this environment gives.
Every command runs the *installed* tokcomp console script, with no PYTHONPATH, from a folder outside the
checkout — so nothing of this environment or checkout can leak in. Size and start-up time are measured by
`make bench` (benchmarks/run.py), not here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # --import-mode=importlib: make the helper importable

from core_env import ORT_CACHE, IndexUnreachable, build_core_env, core_requirements, resolve_closure  # noqa: E402

PHOTOS = Path(__file__).resolve().parents[1] / "calibration" / "photos"


@pytest.fixture(scope="module")
def core():
    try:
        return build_core_env()
    except IndexUnreachable as exc:
        pytest.skip(f"cannot build the core environment: {exc}")


@pytest.fixture(scope="module")
def core_ort():
    """`pip install 'tokcomp-edge[ort]'`: the core plus ONNX Runtime (CPU), in its own cached venv."""
    try:
        return build_core_env(ORT_CACHE, extra="ort")
    except IndexUnreachable as exc:
        pytest.skip(f"cannot build the core + [ort] environment: {exc}")


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A bundle, a validation report and a fake engine, made by this (workstation) environment."""
    from tokcomp_edge.core.bundle import Bundle
    from tokcomp_edge.engines.engine_info import SCHEMA
    from tokcomp_edge.export import ExportConfig, export_bundle
    from tokcomp_edge.validation import ValidateConfig, validate

    root = tmp_path_factory.mktemp("jetson")
    bundle = export_bundle(ExportConfig(model="tiny-clip", compress="pool:2", out=root / "export" / "tiny_pool2",
                                        batch_max=4, quiet=True)).path
    res = validate(ValidateConfig(target=bundle, iterations=1, warmup=0, extra_inputs=0, torch="off", quiet=True,
                                  out_dir=root / "reports"))
    # An engine file with its sidecar, as `tokcomp build` writes them (the plan bytes are not a real engine:
    # validate must get as far as needing TensorRT, which is exit 3 here).
    engines = root / "engines" / "tiny_pool2"
    engines.mkdir(parents=True)
    plan = engines / "gpu-trt10.3.0-fp32.plan"
    plan.write_bytes(b"not a real engine")
    b = Bundle.load(bundle)
    import hashlib

    side = {"schema": SCHEMA, "schema_version": 1, "variant": "fp32", "precision": "fp32",
            "engine": {"file": plan.name, "sha256": hashlib.sha256(plan.read_bytes()).hexdigest()},
            "profile": {"batch": {"min": 1, "opt": 1, "max": 4}},
            "bundle": {"name": b.name, "path": os.path.relpath(bundle, engines), "manifest_sha256": b.manifest_sha256(),
                       "variant": "fp32", "onnx_sha256": b.manifest["files"]["model.onnx"]["sha256"]}}
    plan.with_name(plan.stem + ".engine.json").write_text(json.dumps(side))
    # A VLM vision path (tower + pixel shuffle + projector) travels the same way.
    vlm = export_bundle(ExportConfig(model="tiny-internvl", out=root / "export" / "tiny_internvl", batch_max=4,
                                     quiet=True)).path
    return {"root": root, "bundle": bundle, "report": res.report_paths["json"], "plan": plan, "vlm": vlm}


def tokcomp(core, *args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(core.tokcomp), *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          env=core.env(), timeout=300)


def one_error_line(res) -> str:
    """The single `error:` line (progress lines such as build's lint step may precede it)."""
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, res.stdout + res.stderr
    return lines[0]


def test_the_core_environment_is_only_the_core(core, tmp_path):
    code = ("import importlib.util as u, json, tokcomp_edge; "
            "print(json.dumps({'file': tokcomp_edge.__file__, "
            "'absent': [m for m in ('torch', 'transformers', 'timm', 'onnxruntime', 'modelopt', 'onnxscript', "
            "'onnxslim', 'safetensors', 'torchvision') if u.find_spec(m) is None]}))")
    res = subprocess.run([str(core.python), "-c", code], capture_output=True, text=True, cwd=tmp_path,
                         env=core.env(), timeout=120)
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    assert Path(info["file"]).is_relative_to(core.path)  # the installed copy, not the checkout
    assert len(info["absent"]) == 9
    assert "torch" not in core.pins and not any(n.startswith("onnxruntime") for n in core.pins)


@pytest.mark.parametrize("args", [
    ("--help",),
    ("inspect", "{bundle}"),
    ("lint", "{bundle}"),
    ("profiles",),
    ("models",),
    ("methods",),
    ("build", "{bundle}", "--profile", "fp16", "--dry-run", "--engines-dir", "{root}/engines-dry"),
    ("report", "{report}", "--out", "{tmp}/rendered"),
    ("preprocess", "{bundle}", str(PHOTOS), "--out", "{tmp}/pixels.npy"),
    ("preprocess", "{bundle}", str(PHOTOS / "rocket-200x300.jpg"), "--nhwc", "--out", "{tmp}/frames.npy"),
    ("inspect", "{vlm}"),
    ("lint", "{vlm}"),
    ("build", "{vlm}", "--profile", "fp32", "--dry-run", "--engines-dir", "{root}/engines-dry-vlm"),
])
def test_device_side_commands_run(core, made, tmp_path, args):
    argv = [a.format(tmp=tmp_path, **made) for a in args]
    res = tokcomp(core, *argv, cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    if args[0] == "inspect":
        assert "all files match their sha256" in " ".join(res.stdout.split())
        if "{vlm}" in args:  # the VLM's chain, read from the manifest alone
            assert "pixel shuffle 2×2 → 16 → mlp1 → 16 × 48" in " ".join(res.stdout.split())
    if args[0] == "report":
        assert (tmp_path / "rendered").is_dir() and any((tmp_path / "rendered").glob("*.html"))
    if args[0] == "preprocess" and "--nhwc" not in args:
        assert np.load(tmp_path / "pixels.npy").shape == (len(list(PHOTOS.glob("*.jpg"))), 3, 224, 224)


def test_validate_an_engine_gets_as_far_as_tensorrt(core, made, tmp_path):
    res = tokcomp(core, "validate", made["plan"], "--iterations", "1", "--warmup", "0", "-q", cwd=tmp_path)
    assert res.returncode == 3, res.stdout + res.stderr
    assert "TensorRT is not installed" in one_error_line(res)


def test_build_gets_as_far_as_tensorrt(core, made, tmp_path):
    res = tokcomp(core, "build", made["bundle"], "--profile", "fp32", "--engines-dir", tmp_path / "e", cwd=tmp_path)
    assert res.returncode == 3 and "TensorRT" in one_error_line(res)
    assert not (tmp_path / "e").exists() or not any((tmp_path / "e").rglob("*.plan"))


@pytest.mark.parametrize("args, extra", [
    (("export", "tiny-clip", "--out", "{tmp}/b"), "export"),
    (("calibrate", "{bundle}", "--synthetic"), "export"),
    (("validate", "{bundle}", "-q"), "ort"),
])
def test_commands_that_need_an_extra_name_it(core, made, tmp_path, args, extra):
    argv = [a.format(tmp=tmp_path, **made) for a in args]
    res = tokcomp(core, *argv, cwd=tmp_path)
    assert res.returncode == 3, res.stdout + res.stderr
    assert f"pip install 'tokcomp-edge[{extra}]'" in one_error_line(res)
    assert "Traceback" not in res.stderr


# Multi-tile InternVL photos: 2x4 crops + thumbnail (9 tiles: three calls at the bundle's batch max of 4),
# 3x2 + thumbnail, and one tile (a square photo is a 1x1 grid with no thumbnail).
ENCODE_PHOTOS = ("hubble-400x180.jpg", "rocket-200x300.jpg", "camera-gray-180x180.jpg")
HEAVY = ("torch", "transformers", "timm", "torchvision", "modelopt")

# Run in the core + [ort] venv: the library path, with the three kinds of input a device program passes (a
# path, a PIL image, an HWC uint8 frame), then what got imported on the way.
ENCODE_SCRIPT = """
import json, sys
import numpy as np
from PIL import Image
from tokcomp_edge.runtime import VisionRuntime

bundle, out, a, b, c = sys.argv[1:]
with VisionRuntime.open(bundle) as rt:
    res = rt.encode([a, Image.open(b), np.asarray(Image.open(c).convert("RGB"))])
    label = rt.backend.label
np.savez(out, *res.embeddings)
print(json.dumps({"layout": [lay.to_dict() for lay in res.layout], "backend": label,
                  "tiles": res.timings.tiles, "calls": res.timings.calls,
                  "heavy": sorted(m for m in sys.modules if m.split(".")[0] in %r)}))
""" % (HEAVY,)


def _same_embeddings(got, want, where: str) -> None:
    """Equal to the workstation's, or within 1e-6 (the same ONNX Runtime release on the same CPU: equal)."""
    assert got.dtype == want.dtype == np.float32 and got.shape == want.shape, where
    if not np.array_equal(got, want):
        assert float(np.max(np.abs(got - want))) <= 1e-6, where


def test_the_ort_environment_is_the_core_plus_onnxruntime(core_ort, tmp_path):
    from packaging.utils import canonicalize_name

    code = ("import importlib.util as u, importlib.metadata as md, json, sys\n"
            "import tokcomp_edge.runtime\n"
            f"heavy = sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})\n"
            "after_runtime = 'onnxruntime' in sys.modules\n"
            "import onnxruntime as ort\n"
            "print(json.dumps({'heavy': heavy, 'after_runtime': after_runtime, 'ort': ort.__file__,\n"
            "  'version': ort.__version__, 'providers': ort.get_available_providers(),\n"
            f"  'absent': [m for m in {HEAVY!r} if u.find_spec(m) is None],\n"
            "  'dists': sorted(d.metadata['Name'] for d in md.distributions())}))")
    res = subprocess.run([str(core_ort.python), "-c", code], capture_output=True, text=True, cwd=tmp_path,
                         env=core_ort.env(), timeout=120)
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    assert info["heavy"] == [] and info["absent"] == list(HEAVY)
    assert not info["after_runtime"]  # the backend is imported when a session opens, not with the package
    assert Path(info["ort"]).is_relative_to(core_ort.path) and "CPUExecutionProvider" in info["providers"]
    assert info["version"] == core_ort.pins["onnxruntime"]
    # Exactly the core closure plus [ort]'s: nothing of the workstation came along.
    core_pins = resolve_closure(core_requirements())
    assert set(core_pins) < set(core_ort.pins) and "onnxruntime" not in core_pins
    assert sorted(canonicalize_name(d) for d in info["dists"]) == sorted([*core_ort.pins, "tokcomp-edge"])


def test_encode_on_onnxruntime_equals_the_workstation(core_ort, made, tmp_path):
    from tokcomp_edge.runtime import VisionRuntime

    images = [PHOTOS / name for name in ENCODE_PHOTOS]
    with VisionRuntime.open(made["vlm"]) as rt:  # the workstation's runtime and ONNX Runtime
        want = rt.encode(images)
    want_layout = [json.loads(json.dumps(lay.to_dict())) for lay in want.layout]
    assert [lay["tiles"] for lay in want_layout] == [9, 7, 1] and want.timings.calls == 5

    # The CLI, as a device user runs it.
    res = tokcomp(core_ort, "encode", made["vlm"], *images, "--out", tmp_path / "cli", "--json", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    doc = json.loads(res.stdout)
    assert "onnxruntime" in doc["backend"]
    assert (doc["timings"]["tiles"], doc["timings"]["calls"]) == (17, want.timings.calls)
    with np.load(tmp_path / "cli" / "embeddings.npz") as npz:
        assert sorted(npz.files) == ["image_0", "image_1", "image_2"]
        for i, item in enumerate(doc["images"]):
            assert item["file"] == str(images[i]) and item["layout"] == want_layout[i]
            assert item["shape"] == [want_layout[i]["tokens"], 48]
            _same_embeddings(npz[f"image_{i}"], want.embeddings[i], f"tokcomp encode, image_{i}")

    # The library, as a device program calls it.
    res = subprocess.run([str(core_ort.python), "-c", ENCODE_SCRIPT, str(made["vlm"]), str(tmp_path / "py.npz"),
                          *map(str, images)], capture_output=True, text=True, cwd=tmp_path, env=core_ort.env(),
                         timeout=300)
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    assert info["heavy"] == [] and "onnxruntime" in info["backend"]
    assert info["layout"] == want_layout and (info["tiles"], info["calls"]) == (17, want.timings.calls)
    with np.load(tmp_path / "py.npz") as npz:
        for i in range(len(images)):
            _same_embeddings(npz[f"arr_{i}"], want.embeddings[i], f"VisionRuntime.encode, image {i}")

"""`tokcomp sweep --backend`: the option (also spelled --latency), the TensorRT backend's plumbing that runs
without TensorRT (exit 3 before any model is loaded; the plan of builds per candidate, from the real export
and the real build planner; the scratch folder removed), and `--export` as the issue says it: the variants
asked for in the bundle, the validation report linking back to the sweep, nothing left by a failed export or
validation. Engine builds and timing themselves need TensorRT and a GPU (none here)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "vlm"))

from vlm_helpers import run_main  # noqa: E402

FAST = ["--answer-tokens", "4", "--max-pairs", "2", "--latency-runs", "2", "-q"]


def _sweep(capsys, folder, photos, prompts, out, *extra):
    return run_main(capsys, "sweep", f"hf:{folder}", "--images", photos, "--prompts", prompts, "--out", out,
                    *FAST, *extra)


@pytest.fixture
def spies(monkeypatch):
    """Records every model load and export the sweep starts (the real functions still run)."""
    import tokcomp_edge.export as export_pkg
    import tokcomp_edge.sweep.llm as llm
    import tokcomp_edge.vlm as vlm

    calls = []
    for module, name in ((llm, "load_language_model"), (vlm, "load_vlm"), (export_pkg, "export_bundle")):
        real = getattr(module, name)

        def spy(*a, _real=real, _name=name, **kw):
            calls.append(_name)
            return _real(*a, **kw)

        monkeypatch.setattr(module, name, spy)
    return calls


@pytest.mark.parametrize("extra", [[], ["--export", "--variants", "fp16"], ["--profile", "fp32"]])
def test_tensorrt_missing_exits_3_before_any_model(capsys, llava, photos, prompts, tmp_path, spies, extra):
    out = tmp_path / "out"
    rc, _, err = _sweep(capsys, llava[0], photos, prompts, out, "--backend", "tensorrt", "--tokens", "16", *extra)
    assert rc == 3, err
    assert len(err.strip().splitlines()) == 1 and "TensorRT is not installed" in err
    assert spies == [] and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("extra, want", [
    (["--backend", "cuda"], "--backend 'cuda' is not a latency backend"),
    (["--latency", "cuda"], "--backend 'cuda' is not a latency backend"),
    (["--backend", "tensorrt", "--profile", "int8"], "builds INT8"),
    (["--backend", "tensorrt", "--profile", "nosuch"], "nosuch"),
    (["--profile", "fp16"], "Add --backend tensorrt"),
    (["--variants", "nhwc"], "Add --export"),
    (["--export", "--variants", "int8"], "int8 needs calibration"),
    (["--export", "--variants", "fp17"], "fp17"),
])
def test_bad_backend_options_exit_2(capsys, llava, photos, prompts, tmp_path, spies, extra, want):
    """Bad values are exit 2 (also with --backend tensorrt on a machine without TensorRT: input first)."""
    out = tmp_path / "out"
    rc, _, err = _sweep(capsys, llava[0], photos, prompts, out, "--tokens", "16", *extra)
    assert rc == 2, err
    assert len(err.strip().splitlines()) == 1 and want in err
    assert spies == [] and not out.exists()


def test_plan_of_builds(llava, tmp_path):
    """Per candidate: its own bundle exported by the normal pipeline at static batch 1, the engine planned by
    `tokcomp build`'s planner with the sweep's profile: which ONNX variant, precision and optimisation profile."""
    from tokcomp_edge.core.bundle import Bundle
    from tokcomp_edge.sweep.trt_latency import plan_facts, plan_jobs, prepare

    model = f"hf:{llava[0]}"
    jobs = plan_jobs(["none", "pool:2", "prune:16:cls-attn"], "fp16", tmp_path / "scratch")
    assert [j.spec for j in jobs] == ["none", "pool:2", "prune:16:cls-attn"]
    assert len({j.bundle.name for j in jobs}) == 3 and all(j.bundle.parent == tmp_path / "scratch" for j in jobs)
    # One engines root (one timing cache); the engines themselves go to engines/<bundle name>/.
    assert {j.engines_dir for j in jobs} == {tmp_path / "scratch" / "engines"} and {j.profile for j in jobs} == {"fp16"}
    exp = jobs[1].export_config(model)
    assert (exp.compress, exp.batch_min, exp.batch_max, exp.out) == ("pool:2", 1, 1, jobs[1].bundle)

    plan = prepare(jobs[1], model)
    bundle = Bundle.load(jobs[1].bundle)
    assert bundle.batch_range == (1, 1) and bundle.manifest["compression"]["spec"] == "pool:2"
    assert bundle.manifest["vlm"]["tokens_per_tile"] == 16
    facts = plan_facts(plan)
    assert facts == {"profile": "fp16", "precision": "fp16", "variant": "fp16", "onnx": "model.fp16.onnx",
                     "input": "pixel_values", "shapes": {"min": [1, 3, 128, 128], "opt": [1, 3, 128, 128],
                                                         "max": [1, 3, 128, 128]}}
    assert not plan.variant_ready  # build_engine makes the AutoCast fp16 variant first, as `tokcomp build` does
    assert plan.engine_path.parent == jobs[1].engines_dir / jobs[1].bundle.name
    assert plan.timing_cache_path.parent == jobs[1].engines_dir / "timing"
    # An fp32 profile builds the exported graph itself.
    from dataclasses import replace

    from tokcomp_edge.engines.build import plan_build

    plan32 = plan_build(replace(jobs[1], profile="fp32").build_config())[2]
    assert (plan32.variant, plan32.onnx_path.name, plan32.variant_ready) == ("fp32", "model.onnx", True)
    assert plan32.inputs[0].shape_max == (1, 3, 128, 128)


def test_scratch_folder_removed_when_a_build_fails(llava, tmp_path, monkeypatch):
    """TrtEngines.open runs the real export, then the real build_engine, which stops here without TensorRT
    (RuntimeMissing): the scratch folder beside the output goes, the progress saw the candidate start."""
    from tokcomp_edge.errors import RuntimeMissing
    from tokcomp_edge.sweep.trt_latency import TrtEngines

    started = []

    def starting(spec):
        started.append(spec)
        # Stands for the timing cache an earlier candidate's build would have left in the shared engines root.
        (scratch,) = tmp_path.glob(".sweep.engines-*")
        (scratch / "engines" / "timing").mkdir(parents=True)
        (scratch / "engines" / "timing" / "gpu-trt10.3.0.cache").write_bytes(b"tactics")

    engines = TrtEngines(model=f"hf:{llava[0]}", profile="fp32", beside=tmp_path / "sweep")
    with pytest.raises(RuntimeMissing), engines.open(["pool:2"], starting=starting):
        pass
    assert started == ["pool:2"] and list(tmp_path.iterdir()) == []
    # The timing cache outlives the scratch folder: the pick's build (--export) is seeded with it, in the
    # folder the profile's `timing_cache = "auto"` reads (engines/timing: test_plan_of_builds).
    assert engines.timing_caches == {"gpu-trt10.3.0.cache": b"tactics"}
    (seeded,) = engines.seed_timing_caches(tmp_path / "pick" / "engines")
    assert seeded == tmp_path / "pick" / "engines" / "timing" / "gpu-trt10.3.0.cache"
    assert seeded.read_bytes() == b"tactics"


def test_export_variants_and_the_report_links_back(capsys, llava, photos, prompts, tmp_path):
    out = tmp_path / "s"
    rc, _, err = _sweep(capsys, llava[0], photos, prompts, out, "--candidates", "pool:2", "--tokens", "16",
                        "--backend", "onnxruntime", "--export", "--variants", "nhwc")
    assert rc == 0, err
    d = json.loads((out / "sweep.json").read_text())
    assert d["config"]["latency"] == "onnxruntime" and d["config"]["variants"] == ["nhwc"]
    assert d["pick"] == "pool:2" and d["validation"]["passed"] and d["engine"] is None
    manifest = json.loads((out / "bundle" / "manifest.json").read_text())
    assert set(manifest["variants"]) == {"fp32", "nhwc"}
    assert (out / "bundle" / manifest["variants"]["nhwc"]["file"]).is_file()
    # The validation report (HTML, Markdown, JSON) links back to the sweep by a relative path that resolves.
    reports = {k: out / v for k, v in d["validation"]["reports"].items()}
    html = reports["html"].read_text()
    hrefs = re.findall(r"<a href='([^']+)'>", html)
    assert sorted(hrefs) == ["../../sweep.html", "../../sweep.json"]
    for href in hrefs:
        assert (reports["html"].parent / href).resolve() in ((out / "sweep.html").resolve(),
                                                              (out / "sweep.json").resolve())
    md_links = re.findall(r"\]\(<([^>]+)>\)", reports["md"].read_text())
    assert sorted(md_links) == sorted(hrefs)
    assert [x["href"] for x in json.loads(reports["json"].read_text())["links"]] == \
        ["../../sweep.html", "../../sweep.json"]
    # …and sweep.html links the report.
    assert d["validation"]["reports"]["html"] in (out / "sweep.html").read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["s"]


@pytest.mark.parametrize("where", ["export", "validation"])
def test_failed_export_or_validation_leaves_nothing(capsys, llava, photos, prompts, tmp_path, monkeypatch, where):
    """An export or validation that raises (here: injected) removes the whole staged folder — no sweep.json,
    no half bundle."""
    from tokcomp_edge.errors import BundleError, ParityError

    if where == "export":
        import tokcomp_edge.export as export_pkg

        def fail(cfg):
            Path(cfg.out).mkdir(parents=True)  # as a real export would have started writing
            raise ParityError("injected parity failure", "none")

        monkeypatch.setattr(export_pkg, "export_bundle", fail)
    else:
        import tokcomp_edge.validation as validation_pkg

        monkeypatch.setattr(validation_pkg, "validate", lambda cfg: (_ for _ in ()).throw(
            BundleError("injected: a bundle file changed", "none")))
    out = tmp_path / "s"
    rc, _, err = _sweep(capsys, llava[0], photos, prompts, out, "--candidates", "pool:2", "--tokens", "16",
                        "--backend", "none", "--export")
    assert rc == (1 if where == "export" else 2), err
    assert "injected" in err and list(tmp_path.iterdir()) == []


def test_validate_config_refuses_absolute_links(tmp_path):
    from tokcomp_edge.errors import InputError
    from tokcomp_edge.validation import ValidateConfig

    ValidateConfig(target=tmp_path, links=(("sweep", "../../sweep.html"),)).check()
    for bad in (("sweep", str(tmp_path / "sweep.html")), ("sweep", "https://example.com/x"), ("sweep", "")):
        with pytest.raises(InputError):
            ValidateConfig(target=tmp_path, links=(bad,)).check()


def test_timing_is_interleaved_across_candidates():
    """The loop every backend (tensorrt's engines included) is timed by: round r calls each candidate once, in
    order; warm-up rounds are not kept."""
    from tokcomp_edge.sweep.cost import _interleaved

    log = []
    calls = {s: (lambda x, s=s: log.append((s, x)), i) for i, s in enumerate(["none", "pool:2", "tome:4"])}
    samples = _interleaved(calls, runs=3, warmup=2)
    assert log == [("none", 0), ("pool:2", 1), ("tome:4", 2)] * 5
    assert {s: len(v) for s, v in samples.items()} == {"none": 3, "pool:2": 3, "tome:4": 3}
    assert all(t >= 0 for v in samples.values() for t in v)

"""End to end on tiny exported bundles: the library function and the `validate` command."""

import json

import numpy as np
import pytest

from tokcomp_edge.core.bundle import REFERENCE, Bundle, file_entry, save_reference
from tokcomp_edge.errors import BundleError, InputError
from tokcomp_edge.validation import ValidateConfig, load_report, validate

from .conftest import FAST, write_pngs


def fast(target, **kw):
    base = dict(iterations=2, warmup=0, extra_inputs=2, quiet=True)
    base.update(kw)
    return ValidateConfig(target=target, **base)


def test_good_bundle_passes_and_writes_reports(bundle_copy):
    b = bundle_copy("pool")
    res = validate(fast(b, batches=(1, 3)))
    assert res and res.passed and res.failures == []
    rep = res.report
    sources = {c["source"] for c in rep["accuracy"]["checks"]}
    assert sources == {"golden", "pytorch-rebuild", "pytorch-seeded"}
    assert rep["target"]["runtime"]["providers"] == ["CPUExecutionProvider"]
    assert {(r["runner"], r["batch"]) for r in rep["latency"]["runs"]} == {("target", 1), ("target", 3),
                                                                           ("pytorch", 1), ("pytorch", 3)}
    assert set(rep["latency"]["speedup_vs_pytorch"]) == {"1", "3"}
    assert rep["latency"]["order"] == "target and PyTorch interleaved (A B A B …)"
    assert all(v > 0 for v in rep["latency"]["speedup_vs_pytorch"].values())
    assert rep["memory"]["host_target"]["peak_bytes"] > 0
    grid = rep["accuracy"]["cosine_grid"]["tokens"]
    assert len(grid) == 7 and len(grid[0]) == 7  # tiny-clip 14×14 pooled by 2
    # files: <bundle>/reports/<UTC stamp>-onnx-fp32-cpu.{json,md,html}, JSON strict and schema-tagged
    paths = res.report_paths
    assert set(paths) == {"json", "md", "html"}
    for p in paths.values():
        assert p.parent == b / "reports" and p.name.endswith(f"-onnx-fp32-cpu{p.suffix}")
    data = json.loads(paths["json"].read_text())  # strict JSON (no NaN)
    assert data == load_report(paths["json"])
    assert data["schema"] == "tokcomp-edge/validation-report" and data["schema_version"] == 1
    assert data["environment"]["packages"]["numpy"] == np.__version__
    assert "PASSED" in paths["md"].read_text()
    Bundle.load(b, verify=True)  # reports/ is not part of the checksummed files


def test_cli_good_bundle_exit_0(bundles, cli, tmp_path):
    code, out, exc = cli("validate", bundles("pool"), *FAST, "--out", tmp_path, "--llm", "qwen2-0.5b")
    assert code == 0, (out, exc)
    assert "PASSED" in out and "report html:" in out
    (j,) = tmp_path.glob("*.json")
    e = json.loads(j.read_text())["economics"]
    assert [x["llm"]["name"] for x in e["llms"]] == ["qwen2-0.5b"] and e["tokens_in"] == 197 and e["tokens_out"] == 49


def test_changed_model_is_refused_naming_the_file(bundle_copy, cli):
    b = bundle_copy("pool")
    with open(b / "model.onnx", "ab") as fh:
        fh.write(b"\0")
    code, out, exc = cli("validate", b, *FAST)
    assert code == 2 and isinstance(exc, BundleError)
    assert "bundle file model.onnx changed since export" in exc.message
    assert not (b / "reports").exists()


def _perturb_reference(bundle_dir, key, scale):
    ref = dict(np.load(bundle_dir / REFERENCE))
    ref[key] = ref[key] * scale
    save_reference(bundle_dir / REFERENCE, ref)
    bundle = Bundle.load(bundle_dir, verify=False)
    bundle.manifest["files"][REFERENCE] = file_entry(bundle_dir / REFERENCE)  # checksums stay consistent
    bundle.save_manifest()


def test_perturbed_reference_fails_exit_1_and_report_names_output(bundle_copy, cli):
    b = bundle_copy("pool")
    _perturb_reference(b, "tokens.b1", 1.05)
    code, out, exc = cli("validate", b, *FAST, "--torch", "off")
    assert code == 1, out
    assert "validation FAILED: golden (batch 1) · tokens: max abs error" in exc.message
    html = exc.message.split("report: ")[1].split(";")[0]
    data = load_report(html.replace(".html", ".json"))
    assert data["passed"] is False
    assert any(f.startswith("golden (batch 1) · tokens: rel L2 error 0.0476 > 0.001") for f in data["failures"])
    bad = [c for c in data["accuracy"]["checks"] if not c["passed"]]
    assert [(c["source"], c["batch"], c["output"]) for c in bad] == [("golden", 1, "tokens")]
    assert bad[0]["metrics"]["rel_l2_err"] == pytest.approx(0.05 / 1.05, rel=1e-3)
    assert "golden (batch 1) · tokens" in (b / "reports" / html.split("/")[-1].replace(".html", ".md")).read_text()


def test_loosened_tolerance_passes_the_same_bundle(bundle_copy, cli):
    b = bundle_copy("pool")
    _perturb_reference(b, "tokens.b1", 1.005)  # rel L2 0.005: fails 1e-3, passes 1e-2
    code, out, exc = cli("validate", b, *FAST, "--torch", "off")
    assert code == 1
    code, out, exc = cli("validate", b, *FAST, "--torch", "off", "--atol", "tokens=0.05", "--rtol", "0.01",
                         "--max-rel-l2", "tokens=0.01")
    assert code == 0, out


def test_prune_bundle_passes_with_jaccard(bundles):
    res = validate(fast(bundles("prune"), out_dir=None, batches=(2,)))
    assert res, res.failures
    s = res.report["accuracy"]["summary"]
    assert s["indices"]["jaccard_min"] == 1.0 and s["tokens"]["cosine_min"] > 0.9999
    prune = res.report["accuracy"]["prune"]
    freq = prune["keep_frequency_golden"]
    assert len(freq) == 14 and abs(sum(map(sum, freq)) - 8) < 1e-9  # 8 kept cells per image on average
    assert prune["kept"] == 8


def test_images_are_run_and_compared(bundles, tmp_path):
    write_pngs(tmp_path / "imgs")
    res = validate(fast(bundles("prune"), images=tmp_path / "imgs", out_dir=tmp_path / "r"))
    assert res, res.failures
    imgs = res.report["images"]
    assert imgs["count"] == 3 and imgs["files"] == ["img0.png", "img1.png", "img2.png"]
    assert len(imgs["panels"]) == 3 and len(imgs["panels"][0]["kept_indices"]) == 8
    assert any(c["source"] == "pytorch-images" and c["batch"] == 3 for c in res.report["accuracy"]["checks"])


def test_images_without_torch_say_so(bundles, tmp_path):
    write_pngs(tmp_path / "imgs", sizes=((64, 48),))
    res = validate(fast(bundles("pool"), images=tmp_path / "imgs", torch="off", out_dir=tmp_path / "r"))
    assert res
    assert any("without PyTorch" in n for n in res.report["notes"])
    assert res.report["reference"]["pytorch"] == {"used": False, "reason": "disabled (--torch off)", "runtime": None}


@pytest.mark.parametrize("batch", ["0", "5", "1,x"])
def test_batch_outside_range_exit_2(bundles, cli, batch):
    code, out, exc = cli("validate", bundles("pool"), *FAST, "--batch", batch)
    assert code == 2 and isinstance(exc, InputError)
    assert "--batch" in exc.message


def test_device_fallback_fails_unless_allowed(bundles, tmp_path):
    """A run asked for CUDA that ran on CPU fails (exit 1 at the CLI); --allow-fallback makes it a warning."""
    strict = validate(fast(bundles("pool"), device="cuda", torch="off", out_dir=tmp_path / "strict"))
    rt = strict.report["target"]["runtime"]
    if rt["ran_on"] == "CUDAExecutionProvider":  # a machine with a working CUDA EP: nothing to show
        assert strict.passed and not strict.warnings
        return
    assert not strict.passed and rt["providers_missing"] == ["CUDAExecutionProvider"]
    assert any("--allow-fallback" in f and "ran CPUExecutionProvider" in f for f in strict.failures)
    res = validate(fast(bundles("pool"), device="cuda", torch="off", out_dir=tmp_path, allow_fallback=True))
    rt = res.report["target"]["runtime"]
    assert rt["device_requested"] == "cuda" and rt["providers_requested"][0] == "CUDAExecutionProvider"
    assert res.passed and rt["fell_back"] is True and rt["fallback_reason"]
    assert res.warnings and "asked for --device cuda but ONNX Runtime ran CPUExecutionProvider" in res.warnings[0]
    md = res.report_paths["md"].read_text()
    assert "> **Warning:** asked for --device cuda" in md
    assert "class='warn'" in res.report_paths["html"].read_text()
    assert res.report["target"]["label"] == "onnx-fp32-cuda"


def test_every_requested_provider_is_checked(bundles, tmp_path, monkeypatch):
    """trt-ep asks for TensorRT and CUDA: a session with CUDA but not TensorRT has fallen back too."""
    import onnxruntime as ort

    from tokcomp_edge.validation.runners import onnxrt as rt_mod

    real = ort.InferenceSession

    class FakeSession:  # the real session, reporting the providers a CUDA-only machine would give
        def __init__(self, *a, providers=None, **kw):
            self._s = real(a[0], sess_options=kw.get("sess_options"), providers=["CPUExecutionProvider"])

        def get_providers(self):
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]

        def __getattr__(self, name):
            return getattr(self._s, name)

    monkeypatch.setattr(ort, "get_available_providers",
                        lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "InferenceSession", FakeSession)
    r = rt_mod.OnnxRuntimeRunner(bundles("pool") / "model.onnx", device="trt-ep")
    r.activate()
    try:
        assert r.info["fell_back"] is True and r.info["providers_missing"] == ["TensorrtExecutionProvider"]
    finally:
        r.deactivate()


def test_unknown_target_and_variant(bundles, tmp_path, cli):
    code, _, exc = cli("validate", tmp_path / "missing", *FAST)
    assert code == 2 and "does not exist" in exc.message
    code, _, exc = cli("validate", bundles("pool"), *FAST, "--variant", "int4")
    assert code == 2 and "no 'int4' variant" in exc.message
    code, _, exc = cli("validate", bundles("pool"), *FAST, "--llm", "gpt-9")
    assert code == 2 and "unknown --llm preset" in exc.message
    code, _, exc = cli("validate", bundles("pool"), *FAST, "--llm-hidden", "64")
    assert code == 2 and "--llm-hidden and --llm-layers go together" in exc.message


def test_variant_onnx_file_as_target(bundles, tmp_path):
    res = validate(fast(bundles("pool") / "model.onnx", torch="off", out_dir=tmp_path))
    assert res and res.report["target"]["variant"] == "fp32"


def test_progress_on_stderr_results_on_stdout(bundles, tmp_path):
    import typer
    from typer.testing import CliRunner

    from tokcomp_edge.cli import validate_cmds

    app = typer.Typer()
    validate_cmds.register(app)
    res = CliRunner().invoke(app, ["validate", str(bundles("pool")), "--iterations", "2", "--warmup", "1",
                                   "--torch", "off", "--out", str(tmp_path)])
    assert res.exit_code == 0
    assert "accuracy vs golden reference" in res.stderr and "latency target batch 4" in res.stderr
    assert "PASSED" in res.stdout and "accuracy vs golden reference" not in res.stdout
    res = CliRunner().invoke(app, ["validate", str(bundles("pool")), "--iterations", "2", "--torch", "off",
                                   "--out", str(tmp_path), "--quiet"])
    assert res.exit_code == 0 and "latency target" not in res.stderr


def test_every_target_output_must_be_compared(bundles, tmp_path, monkeypatch):
    """A validation passes only when each output of the target was compared at least once against the
    golden reference or a fresh PyTorch run; an output the reference does not know is an error."""
    import tokcomp_edge.validation.pipeline as P

    real = P.compare_outputs

    def drop_tokens(out, expected, **kw):  # as if no comparison of `tokens` had happened
        return [c for c in real(out, expected, **kw) if c.output != "tokens" or c.source == "pytorch-rebuild"]

    monkeypatch.setattr(P, "compare_outputs", drop_tokens)
    res = validate(fast(bundles("prune"), out_dir=tmp_path))
    assert not res.passed
    assert any("output tokens of the target was never compared" in f for f in res.failures)
    monkeypatch.undo()

    from tokcomp_edge.validation import target as T

    monkeypatch.setattr(P, "resolve_target", lambda *a, **k: _renamed(T.resolve_target(*a, **k)))
    with pytest.raises(BundleError, match="outputs features, which the bundle's golden reference has no entry"):
        validate(fast(bundles("pool"), out_dir=tmp_path))


def _renamed(target):
    import dataclasses

    return dataclasses.replace(target, outputs=["features"])


def test_fp16_prune_is_judged_with_score_evidence_like_the_variant_check(bundle_copy):
    """One judgement in both stages: validate reads the prune scores of model.onnx and of the ONNX target
    (CPU), so a kept-set swap the score error explains counts as agreeing here too — the numbers the
    export's variant check used."""
    from tokcomp_edge.core.bundle import Bundle
    from tokcomp_edge.export.variants import VariantOptions, ensure_variant

    b = bundle_copy("prune")
    ensure_variant(Bundle.load(b), "fp16", options=VariantOptions(quiet=True))
    res = validate(fast(b, variant="fp16", out_dir=None, batches=(2,), extra_inputs=0))
    assert res, res.failures
    golden = [c for c in res.report["accuracy"]["checks"] if c["source"] == "golden" and c["output"] == "indices"]
    assert golden and all(c["metrics"]["score_error"] is not None for c in golden)
    assert all("explained_swaps" in c["metrics"] and "jaccard_mean_explained" in c["metrics"] for c in golden)
    # On another device (no scores to read) the kept sets are judged as returned: no evidence recorded.
    from tokcomp_edge.validation.evidence import golden_evidence
    from tokcomp_edge.validation.target import resolve_target

    target = resolve_target(b, variant="fp16")
    assert golden_evidence(Bundle.load(b), target, {}, None, device="cuda", emulate_fp16=True) == {}

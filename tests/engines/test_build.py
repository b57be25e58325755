"""`tokcomp build` / `tokcomp profiles` through the CLI: dry run, exit codes, and no files on exit 3."""

from __future__ import annotations

import shlex

import pytest
import typer
from typer.testing import CliRunner

from tokcomp_edge.cli import app as app_module
from tokcomp_edge.cli import build_cmds
from tokcomp_edge.engines import gpu, trt_import
from tokcomp_edge.engines.build import BuildConfig, build_engine
from tokcomp_edge.errors import LintError, OutputError, ProfileError, RuntimeMissing


@pytest.fixture
def cli():
    app = typer.Typer(rich_markup_mode="rich", pretty_exceptions_enable=False)
    build_cmds.register(app)
    return app


@pytest.fixture
def bare_machine(monkeypatch):
    """No TensorRT and no GPU, whatever this machine has."""
    monkeypatch.setattr(trt_import, "_MODULES", ("tensorrt_absent_in_this_test",))
    monkeypatch.setattr(gpu, "_DRIVER_LIBS", ("libcuda-not-here.so.1",))


def _run_main(monkeypatch, cli, argv):
    """Run through the real entry point's error handling; returns the exit code."""
    monkeypatch.setattr(app_module, "app", cli)
    with pytest.raises(SystemExit) as exc:
        app_module.main(argv)
        raise SystemExit(0)
    return exc.value.code


def test_help_shows_examples(cli):
    runner = CliRunner()
    for cmd, example in (("build", "tokcomp build export/siglip_pool2 --profile fp16 --dry-run"),
                         ("profiles", "tokcomp profiles")):
        res = runner.invoke(cli, [cmd, "--help"], env={"COLUMNS": "200"})
        assert res.exit_code == 0 and example in res.output


def test_profiles_lists_every_preset(cli):
    res = CliRunner().invoke(cli, ["profiles"], env={"COLUMNS": "250"})
    assert res.exit_code == 0
    for name in ("fp32", "fp16", "fp16-nhwc", "int8", "orin-fp16", "orin-dla"):
        assert f" {name} " in res.output
    assert "core 0 + GPU fallback" in res.output and "nhwc-uint8" in res.output


def test_dry_run_prints_plan_and_both_trtexec_commands(cli, bare_machine, make_bundle, tmp_path, snapshot):
    bundle = make_bundle(name="tiny_pool2")
    engines = tmp_path / "engines"
    before = snapshot(bundle)
    res = CliRunner().invoke(cli, ["build", str(bundle), "--profile", "fp16", "--dry-run", "--engines-dir",
                                   str(engines)], env={"COLUMNS": "120"})
    assert res.exit_code == 0, res.output
    out = res.output
    assert "trtexec equivalent (TensorRT 10.x)" in out and "trtexec equivalent (TensorRT 11.x)" in out
    assert "{gpu}-trt{trt}-fp16.plan" in out and "placeholders" in out
    assert "dry run: nothing was built or written" in out
    lines = [line for line in out.splitlines() if line.startswith("trtexec --")]
    assert len(lines) == 2  # one line each, not wrapped: copy-pasteable
    args10 = shlex.split(lines[0])
    assert f"--onnx={bundle / 'model.fp16.onnx'}" in args10 and "--stronglyTyped" in args10
    assert "--minShapes=pixel_values:1x3x8x8" in args10 and "--maxShapes=pixel_values:8x3x8x8" in args10
    assert f"--saveEngine={engines / 'tiny_pool2' / '{gpu}-trt{trt}-fp16.plan'}" in args10
    assert "--stronglyTyped" not in shlex.split(lines[1])
    assert not engines.exists() and snapshot(bundle) == before


def test_dry_run_with_a_user_profile_file(cli, bare_machine, make_bundle, tmp_path):
    prof = tmp_path / "my_orin.toml"
    prof.write_text('precision = "fp32"\nengine_input_format = "hwc"\n[batch]\nmin = 1\nopt = 2\nmax = 4\n')
    res = CliRunner().invoke(cli, ["build", str(make_bundle()), "-p", str(prof), "--dry-run", "--engines-dir",
                                   str(tmp_path / "e")], env={"COLUMNS": "120"})
    assert res.exit_code == 0, res.output
    assert "my_orin.plan" in res.output and "--inputIOFormats=fp32:hwc" in res.output
    assert "--optShapes=pixel_values:2x3x8x8" in res.output


def test_no_tensorrt_exits_3_and_writes_nothing(cli, bare_machine, make_bundle, tmp_path, snapshot, monkeypatch,
                                                capsys):
    bundle = make_bundle()
    engines = tmp_path / "engines"
    before = snapshot(bundle)
    code = _run_main(monkeypatch, cli, ["build", str(bundle), "--profile", "fp16", "--engines-dir", str(engines)])
    assert code == 3
    err = capsys.readouterr().err
    assert "TensorRT is not installed" in err and "pip install tensorrt-cu12" in err
    assert not engines.exists()                  # no engine folder, no timing cache
    assert snapshot(bundle) == before            # and no fp16 variant made in the bundle


def test_no_gpu_exits_3_and_writes_nothing(make_bundle, tmp_path, snapshot, monkeypatch):
    """TensorRT importable (a stand-in module), no GPU: still exit 3, still nothing written."""
    (tmp_path / "fake_trt_present.py").write_text("__version__ = '10.3.0.30'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(trt_import, "_MODULES", ("fake_trt_present",))
    monkeypatch.setattr(gpu, "_DRIVER_LIBS", ("libcuda-not-here.so.1",))
    bundle = make_bundle()
    engines = tmp_path / "engines"
    engines.mkdir()
    (engines / "keep.txt").write_text("older engines stay as they were")
    before_engines, before_bundle = snapshot(engines), snapshot(bundle)
    with pytest.raises(RuntimeMissing) as exc:
        build_engine(BuildConfig(bundle=bundle, profile="orin-fp16", engines_dir=engines, quiet=True))
    assert "no CUDA GPU" in exc.value.message and exc.value.exit_code == 3
    assert snapshot(engines) == before_engines and snapshot(bundle) == before_bundle


def test_lint_errors_stop_the_build_before_the_runtime_check(make_bundle, tmp_path, monkeypatch, bare_machine):
    import onnx
    from onnx import TensorProto, helper

    from tokcomp_edge.core.bundle import MANIFEST, Bundle, dump_manifest, file_entry

    folder = make_bundle()
    # Replace the graph by one with Unique (no TensorRT parser support), which the lint rejects; re-seal it.
    x = helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["batch", 3, 8, 8])
    y = helper.make_tensor_value_info("tokens", TensorProto.FLOAT, None)
    graph = helper.make_graph([helper.make_node("Unique", ["pixel_values"], ["tokens"], name="/dedup/Unique")],
                              "bad", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(folder / "model.onnx"))
    b = Bundle.load(folder, verify=False)
    b.manifest["files"]["model.onnx"] = file_entry(folder / "model.onnx")
    (folder / MANIFEST).write_text(dump_manifest(b.manifest))
    with pytest.raises(LintError) as exc:
        build_engine(BuildConfig(bundle=folder, profile="fp32", engines_dir=tmp_path / "e", quiet=True))
    assert exc.value.exit_code == 1 and "/dedup/Unique" in exc.value.message
    assert not (tmp_path / "e").exists()


def test_bad_profile_is_exit_2_before_anything_else(cli, bare_machine, make_bundle, tmp_path, monkeypatch, capsys):
    code = _run_main(monkeypatch, cli, ["build", str(make_bundle(batch=(1, 4))), "--profile", "nope",
                                        "--engines-dir", str(tmp_path / "e")])
    assert code == 2 and "unknown profile 'nope'" in capsys.readouterr().err
    prof = tmp_path / "big.toml"
    prof.write_text('precision = "fp16"\n[batch]\nmax = 32\n')
    with pytest.raises(ProfileError, match="batch.max = 32"):
        build_engine(BuildConfig(bundle=make_bundle(batch=(1, 4)), profile=prof, engines_dir=tmp_path / "e",
                                 dry_run=True))


def test_existing_engine_needs_force(make_bundle, tmp_path, monkeypatch):
    """With TensorRT and a GPU present (stand-ins), an existing engine of that name is not overwritten."""
    (tmp_path / "fake_trt_here.py").write_text("__version__ = '10.3.0.30'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(trt_import, "_MODULES", ("fake_trt_here",))
    monkeypatch.setattr(trt_import, "detect_gpus", lambda: ([gpu.GpuInfo("Orin", (8, 7))], ""))
    monkeypatch.setattr("tokcomp_edge.engines.build.probe_target",
                        lambda: trt_import.BuildTarget(gpu.GpuInfo("Orin", (8, 7)), "10.3.0.30"))
    bundle = make_bundle(name="tiny")
    engines = tmp_path / "engines"
    plan_file = engines / "tiny" / "orin-sm87-trt10.3.0-fp32.plan"
    plan_file.parent.mkdir(parents=True)
    plan_file.write_bytes(b"old engine")
    with pytest.raises(OutputError) as exc:
        build_engine(BuildConfig(bundle=bundle, profile="fp32", engines_dir=engines, quiet=True))
    assert "already exists" in exc.value.message and "--force" in exc.value.hint
    assert plan_file.read_bytes() == b"old engine"


def test_int8_without_calibration_is_exit_2_before_the_runtime_check(cli, bare_machine, make_bundle, tmp_path,
                                                                    monkeypatch, capsys, snapshot):
    bundle = make_bundle()
    before = snapshot(bundle)
    code = _run_main(monkeypatch, cli, ["build", str(bundle), "--profile", "int8", "--engines-dir",
                                        str(tmp_path / "e")])
    assert code == 2
    err = capsys.readouterr().err
    assert "no calibrated int8 variant" in err and "calibrate" in err
    assert snapshot(bundle) == before and not (tmp_path / "e").exists()
    # with the variant present the same profile passes that check (and stops at the missing TensorRT)
    calibrated = make_bundle(extra_variants={"int8": {"dtype": "float32"}})
    assert _run_main(monkeypatch, cli, ["build", str(calibrated), "--profile", "int8", "--engines-dir",
                                        str(tmp_path / "e")]) == 3

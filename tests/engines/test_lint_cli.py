"""Lint entry points: bundle folders, variants, bare .onnx paths, the `tokcomp lint` command, and the
real tiny bundles `tokcomp export` writes (every compressor must lint clean)."""

from __future__ import annotations

import json
import shutil

import onnx
import pytest
import typer
from onnx import TensorProto as T
from onnx import helper as h
from typer.testing import CliRunner

from tokcomp_edge.cli import lint_cmds
from tokcomp_edge.core.lint import lint_model, lint_path
from tokcomp_edge.errors import BundleError, InputError, LintError


@pytest.fixture
def cli():
    app = typer.Typer()
    lint_cmds.register(app)

    @app.callback()
    def _root():  # a group, so the command is invoked by name as in `tokcomp lint`
        pass

    return app


def bad_onnx(path):
    """A graph TensorRT would not build: Unique (unsupported) after a NonZero (warning)."""
    nodes = [h.make_node("NonZero", ["x"], ["nz"], name="find"), h.make_node("Unique", ["x"], ["u"], name="dedup")]
    g = h.make_graph(nodes, "bad", [h.make_tensor_value_info("x", T.FLOAT, ["batch", 4])],
                     [h.make_tensor_value_info("nz", T.INT64, None), h.make_tensor_value_info("u", T.FLOAT, None)])
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 20)])
    m.ir_version = 10
    onnx.save(m, str(path))
    return path


# --- lint_path ----------------------------------------------------------------------------------


def test_bundle_folder_lints_its_fp32_model_and_a_named_variant(make_bundle):
    folder = make_bundle(extra_variants={"fp16": {"dtype": "float16"}})
    report = lint_path(folder)
    assert report and report.source == str(folder / "model.onnx") and report.nodes == 2
    assert lint_path(folder / "manifest.json").source == report.source
    assert lint_path(folder, variant="fp16").source == str(folder / "model.fp16.onnx")
    with pytest.raises(BundleError, match="no 'nhwc' variant"):
        lint_path(folder, variant="nhwc")


def test_bare_onnx_path_and_its_errors(tmp_path):
    path = bad_onnx(tmp_path / "bad.onnx")
    report = lint_path(path)
    assert not report and [i.node for i in report.errors] == ["dedup"]
    with pytest.raises(BundleError, match="needs a bundle folder"):
        lint_path(path, variant="fp16")
    with pytest.raises(InputError, match="does not exist"):
        lint_path(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\xff\x00 not a protobuf")
    with pytest.raises(InputError, match="not a readable ONNX model"):
        lint_model(junk)
    with pytest.raises(BundleError, match="not a tokcomp bundle"):
        lint_path(tmp_path)


# --- CLI ------------------------------------------------------------------------------------------


def test_cli_clean_bundle_exits_0(cli, make_bundle):
    result = CliRunner().invoke(cli, ["lint", str(make_bundle())])
    assert result.exit_code == 0, result.output
    assert "0 error(s)" in result.output and "should take it" in result.output


def test_cli_bad_graph_prints_every_issue_and_raises_lint_error(cli, tmp_path):
    result = CliRunner().invoke(cli, ["lint", str(bad_onnx(tmp_path / "bad.onnx"))])
    assert isinstance(result.exception, LintError) and result.exception.exit_code == 1
    assert "dedup" in result.output and "find" in result.output and "would not build" in result.output


def test_cli_json_and_opset_options(cli, make_bundle, tmp_path):
    folder = make_bundle()  # opset 17
    result = CliRunner().invoke(cli, ["lint", str(folder), "--json", "--opset-min", "18"])
    assert isinstance(result.exception, LintError)
    data = json.loads(result.output)
    assert data["passed"] is False and data["opset_range"] == [18, 24]
    assert data["issues"][0]["op_type"] == "opset"
    ok = CliRunner().invoke(cli, ["lint", str(folder), "--json"])
    assert ok.exit_code == 0 and json.loads(ok.output)["passed"] is True


def test_cli_help_shows_an_example(cli):
    result = CliRunner().invoke(cli, ["lint", "--help"])
    assert result.exit_code == 0 and "tokcomp lint export/" in result.output


def test_exit_codes_through_the_tokcomp_entry_point(monkeypatch, cli, make_bundle, tmp_path):
    """app.main formats TokcompError once: 1 for a lint failure, 2 for a bad path, 0 when clean."""
    from tokcomp_edge.cli import app as app_module

    monkeypatch.setattr(app_module, "app", cli)

    def code(*args):
        with pytest.raises(SystemExit) as exc:
            app_module.main(["lint", *args])
            raise SystemExit(0)  # main returns normally on success
        return exc.value.code

    assert code(str(make_bundle())) == 0
    assert code(str(bad_onnx(tmp_path / "bad.onnx"))) == 1
    assert code(str(tmp_path / "nothing.onnx")) == 2


# --- real bundles from `tokcomp export` -------------------------------------------------------------


@pytest.fixture(scope="module")
def export_tiny(tmp_path_factory):
    from tokcomp_edge.export import ExportConfig, export_bundle

    root = tmp_path_factory.mktemp("lint_bundles")

    def make(model: str, spec: str):
        out = root / f"{model}_{spec.replace(':', '-')}"
        if not out.exists():
            export_bundle(ExportConfig(model=model, compress=spec, out=out, batch_max=2, quiet=True, lint=False))
        return out

    yield make
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("spec", ["pool:2", "prune:8:cls-attn"])
def test_exported_tiny_bundles_lint_clean(export_tiny, spec):
    report = lint_path(export_tiny("tiny-clip", spec))
    assert report.issues == [], report.format()


@pytest.mark.slow
@pytest.mark.parametrize("spec", ["none", "pool:3", "pool:2:max", "bilinear:5x5", "unshuffle:2", "unshuffle:3:pad",
                                  "prune:8", "prune:8:cls-sim"])
def test_every_compressor_lints_clean(export_tiny, spec):
    report = lint_path(export_tiny("tiny-clip", spec))
    assert report.issues == [], report.format()

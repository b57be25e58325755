"""`tokcomp variant BUNDLE KEY…` (issue 16 §3): adds a checked variant to an existing bundle in one atomic
step; unknown keys and changed bundles are refused before any work; a failing check registers nothing."""

import json
import shutil

import pytest

from tokcomp_edge.core.bundle import Bundle
from tokcomp_edge.errors import BundleError

from .test_export_cli import run_main


@pytest.fixture(scope="module")
def small_bundle(tmp_path_factory):
    from tokcomp_edge.export import ExportConfig, export_bundle

    out = tmp_path_factory.mktemp("variant-cli") / "b"
    return export_bundle(ExportConfig(model="tiny-clip", compress="pool:2", out=out, batch_max=2, quiet=True)).path


@pytest.fixture
def copy(small_bundle, tmp_path):
    dst = tmp_path / "b"
    shutil.copytree(small_bundle, dst)
    return dst


def test_adds_nhwc_and_fp16_nhwc(capsys, copy):
    code, out, err = run_main(capsys, "variant", copy, "nhwc", "fp16-nhwc")
    assert code == 0, err
    b = Bundle.load(copy)  # verifies
    assert set(b.variants()) == {"fp32", "nhwc", "fp16", "fp16-nhwc"}
    assert all(b.variants()[k]["check"]["passed"] for k in ("nhwc", "fp16", "fp16-nhwc"))
    assert "fp16-nhwc (new)" in " ".join(out.split())
    assert not [p for p in copy.iterdir() if p.name.startswith(".")]


def test_missing_variant_hint_names_the_command(copy):
    with pytest.raises(BundleError) as exc:
        Bundle.load(copy).variant("fp16")
    assert f"tokcomp variant {copy} fp16" in exc.value.hint


@pytest.mark.parametrize("argv,needle", [(["fp8"], "unknown variant 'fp8'"), (["int8"], "calibrate")])
def test_bad_keys_are_one_line_exit_2(capsys, copy, argv, needle):
    before = (copy / "manifest.json").read_bytes()
    code, _, err = run_main(capsys, "variant", copy, *argv)
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert code == 2 and len(lines) == 1 and needle in lines[0], err
    assert (copy / "manifest.json").read_bytes() == before


def test_changed_bundle_is_refused(capsys, copy):
    with open(copy / "model.onnx", "ab") as fh:
        fh.write(b"\0")
    code, _, err = run_main(capsys, "variant", copy, "nhwc")
    assert code == 2 and "model.onnx changed since export" in err
    assert "nhwc" not in json.loads((copy / "manifest.json").read_text())["variants"]

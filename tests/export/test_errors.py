"""Bad input fails before any export with exit 2 and one line; failures leave no partial bundle."""

import pickle
from pathlib import Path

import pytest

from tokcomp_edge.core.bundle import Bundle
from tokcomp_edge.errors import (
    ExportFailed,
    InputError,
    OutputError,
    ParityError,
    SpecError,
    UnknownModelError,
    WeightsError,
)
from tokcomp_edge.export import ExportConfig, export_bundle


def cfg(tmp_path, **kw):
    kw.setdefault("model", "tiny-clip")
    kw.setdefault("out", tmp_path / "b")
    return ExportConfig(batch_max=4, quiet=True, **kw)


def test_unknown_model(tmp_path):
    with pytest.raises(UnknownModelError) as exc:
        export_bundle(cfg(tmp_path, model="clip-xxl-9000"))
    assert exc.value.exit_code == 2 and "clip-xxl-9000" in exc.value.message
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("spec,needle", [("pool:2:median", "median"), ("prune:500", "K=500"),
                                         ("unshuffle:3", "does not divide the 14x14"),
                                         ("prune:8:cls-attn", "CLS")])
def test_malformed_or_impossible_spec(tmp_path, spec, needle):
    model = "tiny-siglip" if "cls-attn" in spec else "tiny-clip"
    with pytest.raises(SpecError, match=needle):
        export_bundle(cfg(tmp_path, model=model, compress=spec))
    assert not (tmp_path / "b").exists()


def test_missing_weights(tmp_path):
    with pytest.raises(WeightsError, match="nope.safetensors"):
        export_bundle(cfg(tmp_path, weights=tmp_path / "nope.safetensors"))


def test_corrupt_weights(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00not a safetensors file at all")
    with pytest.raises(WeightsError):
        export_bundle(cfg(tmp_path, weights=bad))
    assert not (tmp_path / "b").exists()


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_pickle_with_code_is_refused_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "evil.pt"
    ckpt.write_bytes(pickle.dumps({"state_dict": _Evil(str(marker))}))
    with pytest.raises(WeightsError):
        export_bundle(cfg(tmp_path, weights=ckpt))
    assert not marker.exists(), "the checkpoint's code ran"


def test_bad_numbers(tmp_path):
    with pytest.raises(InputError, match="opset 12"):
        export_bundle(cfg(tmp_path, opset=12))
    with pytest.raises(InputError, match="batch range 4..2"):
        export_bundle(ExportConfig(model="tiny-clip", out=tmp_path / "b", batch_min=4, batch_max=2))
    with pytest.raises(InputError, match="multiple"):
        export_bundle(cfg(tmp_path, image_size=230))
    with pytest.raises(InputError, match="layer"):
        export_bundle(cfg(tmp_path, layer=9))


def test_unwritable_output_folder(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        import os
        if os.access(ro, os.W_OK):  # root ignores permissions: use a path under a regular file instead
            blocker = tmp_path / "file"
            blocker.write_text("x")
            target = blocker / "bundle"
        else:
            target = ro / "bundle"
        with pytest.raises(OutputError) as exc:
            export_bundle(cfg(tmp_path, out=target))
        assert exc.value.exit_code == 2
    finally:
        ro.chmod(0o700)


def test_existing_bundle_needs_force(make_bundle, tmp_path):
    first = export_bundle(cfg(tmp_path, compress="pool:2"))
    with pytest.raises(OutputError, match="already exists"):
        export_bundle(cfg(tmp_path, compress="pool:2"))
    again = export_bundle(cfg(tmp_path, compress="pool:3", force=True))
    assert Bundle.load(again.path).compression["spec"] == "pool:3"
    assert first.path == again.path
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".b.")], "temp folders left behind"


def _failing_parity(monkeypatch, exc):
    import tokcomp_edge.export.pipeline as pipeline

    def boom(*a, **k):
        raise exc

    monkeypatch.setattr(pipeline, "check_parity", boom)


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), ParityError("outputs differ")])
def test_interrupted_export_leaves_old_bundle_intact(tmp_path, monkeypatch, exc):
    old = export_bundle(cfg(tmp_path, compress="pool:2"))
    before = {p.name: p.read_bytes() for p in old.path.iterdir()}
    _failing_parity(monkeypatch, exc)
    with pytest.raises(type(exc)):
        export_bundle(cfg(tmp_path, compress="bilinear:3x3", force=True))
    assert {p.name: p.read_bytes() for p in old.path.iterdir()} == before
    Bundle.load(old.path)  # still verifies
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"], "partial output left behind"


def test_interrupted_first_export_leaves_nothing(tmp_path, monkeypatch):
    _failing_parity(monkeypatch, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        export_bundle(cfg(tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_parity_failure_is_exit_1_and_writes_nothing(tmp_path, monkeypatch):
    from tokcomp_edge.export.config import Tolerance

    # A tolerance no real export can meet turns the parity check into a failure.
    with pytest.raises(ParityError) as exc:
        export_bundle(cfg(tmp_path, compress="pool:2", tolerance=Tolerance(atol=0.0, rtol=0.0)))
    assert exc.value.exit_code == 1 and "tokens" in exc.value.message
    assert not (tmp_path / "b").exists()


def test_export_failure_class_is_check_failed():
    assert ExportFailed("x").exit_code == 1


@pytest.mark.parametrize("variants,needle", [(("fp17",), "unknown variant 'fp17'"), (("int8",), "calibration")])
def test_bad_variants_fail_before_export(tmp_path, monkeypatch, variants, needle):
    import tokcomp_edge.export.pipeline as pipeline

    monkeypatch.setattr(pipeline, "export_to_proto", lambda *a, **k: pytest.fail("exported before checking"))
    with pytest.raises(InputError, match=needle):
        export_bundle(cfg(tmp_path, variants=variants))

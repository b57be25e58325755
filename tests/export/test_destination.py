"""Where the bundle goes (issue 16 §3): an unwritable --out is refused before the model is built, a full
disk is one line with nothing left behind, and every file and folder gets the umask's mode (not mkstemp's
0600 / mkdtemp's 0700, which rsync -a and container copies carry to the device)."""

import errno
import os
import stat

import pytest

from tests.cli.test_export_cli import run_main  # the in-process CLI runner the CLI tests use


def one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]  # progress lines go to stderr too
    assert len(lines) == 1 and "Traceback" not in err and err.rstrip().endswith(lines[0]), err
    return lines[0]


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux /proc")
def test_out_in_proc_is_refused_before_the_model_is_built(capsys, monkeypatch):
    import tokcomp_edge.encoders as enc

    def never(*a, **k):
        raise AssertionError("the model was built before the destination was checked")

    monkeypatch.setattr(enc, "build_encoder", never)
    code, out, err = run_main(capsys, "export", "tiny-clip", "--out", "/proc/x/b")
    assert code == 2 and "cannot write in output folder /proc/x" in one_line(err)


def test_full_disk_is_one_line_and_leaves_nothing(capsys, tmp_path, monkeypatch):
    import tokcomp_edge.export.pipeline as pipeline

    def full(path, arrays):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pipeline, "save_reference", full)
    code, out, err = run_main(capsys, "export", "tiny-clip", "--out", tmp_path / "b")
    line = one_line(err)
    assert code == 2 and "No space left on device" in line and "nothing was left behind" in line
    assert list(tmp_path.iterdir()) == []


def test_bundle_files_take_the_umask_mode(make_bundle, tmp_path):
    from tokcomp_edge.export.variants import VariantOptions, ensure_variant
    import shutil

    from tokcomp_edge.core.bundle import Bundle

    old = os.umask(0o022)
    try:
        src = make_bundle("tiny-clip", "pool:2").path
        mask = 0o022
        assert stat.S_IMODE(src.stat().st_mode) == 0o777 & ~mask
        dst = tmp_path / "copy"
        shutil.copytree(src, dst)
        ensure_variant(Bundle.load(dst), "fp16", options=VariantOptions(quiet=True))
        for bundle in (src, dst):
            for p in bundle.rglob("*"):
                want = (0o777 if p.is_dir() else 0o666) & ~mask
                assert stat.S_IMODE(p.stat().st_mode) == want, (p, oct(p.stat().st_mode))
    finally:
        os.umask(old)

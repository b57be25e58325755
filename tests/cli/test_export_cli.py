"""The CLI surface of export / inspect / methods / models: one-line errors, exit codes, `python cli.py`."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tokcomp_edge.cli.app import main

ROOT = Path(__file__).resolve().parents[2]


def run_main(capsys, *argv):
    with pytest.raises(SystemExit) as ex:
        main([str(a) for a in argv])
        raise SystemExit(0)
    cap = capsys.readouterr()
    return ex.value.code, cap.out, cap.err


@pytest.mark.parametrize("argv,code,needle", [
    (["export", "nope-model"], 2, "unknown model"),
    (["export", "tiny-clip", "--compress", "pool:2:median"], 2, "unknown option 'median'"),
    (["export", "tiny-clip", "--compress", "prune:196"], 2, "K=196"),
    (["export", "tiny-siglip", "--compress", "prune:8:cls-attn"], 2, "CLS"),
    (["export", "tiny-clip", "--compress", "unshuffle:3"], 2, "does not divide the 14x14"),
    (["export", "tiny-clip", "--weights", "/nonexistent/w.safetensors"], 2, "w.safetensors"),
    (["inspect", "/nonexistent/bundle"], 2, "does not exist"),
    (["export", "tiny-clip", "--bogus-flag"], 2, ""),
])
def test_errors_are_one_line_with_exit_code(capsys, tmp_path, argv, code, needle):
    got, out, err = run_main(capsys, *argv, *(["--out", tmp_path / "b"] if argv[0] == "export" and
                                              "--bogus-flag" not in argv else []))
    assert got == code
    if needle:
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:") and needle.lower() in lines[0].lower(), err
        assert "Traceback" not in err
    assert not (tmp_path / "b").exists()


def test_debug_env_gives_traceback(monkeypatch):
    from tokcomp_edge.errors import UnknownModelError

    monkeypatch.setenv("TOKCOMP_DEBUG", "1")
    with pytest.raises(UnknownModelError):
        main(["export", "nope-model"])


def test_export_inspect_from_checkout(tmp_path):
    """`python cli.py …` from a checkout runs the same app as the console script."""
    out = tmp_path / "t"
    res = subprocess.run([sys.executable, str(ROOT / "cli.py"), "export", "tiny-clip", "--compress",
                          "prune:32:cls-attn", "--out", str(out), "--batch-max", "4"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert res.returncode == 0, res.stderr
    text = " ".join(res.stdout.split())  # rich wraps at 80 columns when not on a terminal
    assert "197 → 32" in text  # 1 CLS + 196 patches in, CLS dropped and "random(seed=0)" in text
    res = subprocess.run([sys.executable, str(ROOT / "cli.py"), "inspect", str(out)], capture_output=True,
                         text=True, timeout=300)
    text = " ".join(res.stdout.split())
    assert res.returncode == 0 and "all files match their sha256" in text
    assert "indices" in text
    res = subprocess.run([sys.executable, str(ROOT / "cli.py"), "inspect", str(out), "--json"],
                         capture_output=True, text=True, timeout=300)
    assert json.loads(res.stdout)["compression"]["spec"] == "prune:32:cls-attn"
    # a changed file: inspect still shows the bundle, then exits 2 with one error line, as validate/build do
    with open(out / "model.onnx", "ab") as fh:
        fh.write(b"\0")
    res = subprocess.run([sys.executable, str(ROOT / "cli.py"), "inspect", str(out)], capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 2 and "model.onnx changed since export" in " ".join(res.stdout.split())
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "model.onnx changed since export" in lines[0]


def test_methods_and_models(capsys):
    code, out, _ = run_main(capsys, "methods")
    assert code == 0
    for syntax in ("pool:S", "bilinear:HxW", "unshuffle:R", "prune:K", "visionzip:D:C", "tome:R"):
        assert syntax in out
    code, out, _ = run_main(capsys, "models")
    assert code == 0
    for name in ("clip-l14-336", "siglip-so400m-14-384", "dinov2-s14-reg-224", "tiny-vit", "27x27"):
        assert name in out
    # Qwen3-VL's DeepStack outputs beside its tokens (qwen3-vl-2b: 3 deepstack_visual_indexes), no other family.
    rows = {ln.split("│")[1].strip(): ln for ln in out.splitlines() if ln.count("│") > 3}
    assert "+3 DeepStack" in rows["qwen3-vl-2b"] and "DeepStack" not in rows["qwen2.5-vl-3b"]


def test_default_out_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, out, _ = run_main(capsys, "export", "tiny-vit", "--compress", "bilinear:4x4", "--batch-max", "2")
    assert code == 0
    assert (tmp_path / "export" / "tiny-vit_bilinear4x4" / "manifest.json").is_file()

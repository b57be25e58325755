"""`--images` with more files than `--max-images` says how many it used (issue 16 §3: 16 of 26 was silent)."""

from tokcomp_edge.calibration.images import Preprocess, load_images

from .conftest import FAST, write_pngs


def test_load_images_counts_what_the_limit_left_out(bundles, tmp_path):
    import json

    manifest = json.loads((bundles("pool") / "manifest.json").read_text())
    write_pngs(tmp_path / "imgs", sizes=((40, 30),) * 5)
    batch = load_images(tmp_path / "imgs", Preprocess.from_manifest(manifest), limit=3)
    assert len(batch) == 3 and batch.unread == 2
    assert batch.warnings()[0].startswith("used the first 3 usable of 5 image files (--max-images 3); 2 not read")
    assert load_images(tmp_path / "imgs", Preprocess.from_manifest(manifest), limit=5).warnings() == []


def test_validate_says_it_used_fewer_images(bundles, cli, tmp_path):
    write_pngs(tmp_path / "imgs", sizes=((40, 30),) * 4)
    code, out, exc = cli("validate", bundles("pool"), *FAST, "--images", tmp_path / "imgs", "--max-images", "2",
                         "--torch", "off", "--out", tmp_path / "r")
    assert code == 0, out
    assert "used the first 2 usable of 4 image files (--max-images 2); 2 not read" in " ".join(out.split())

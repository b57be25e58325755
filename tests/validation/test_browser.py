"""The HTML report in a real browser: headless Chromium screenshot, plots visible (not blank)."""

import shutil
import subprocess

import numpy as np
import pytest

from tokcomp_edge.validation import ValidateConfig, validate
from tokcomp_edge.validation.plots import _VIRIDIS, KEPT_COLOUR, RUNNER_COLOURS

from .conftest import write_pngs

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not on PATH (apt-get install chromium)")]


def _rgb(hex_colour: str) -> np.ndarray:
    return np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)], float)


def _near(img: np.ndarray, colour, tol: float = 18.0) -> int:
    return int((np.linalg.norm(img - np.asarray(colour, float), axis=-1) < tol).sum())


def screenshot(html_path, out_png, tmp_path, height=3200):
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'chromium-profile'}", f"--screenshot={out_png}",
           f"--window-size=1200,{height}", f"file://{html_path}"]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    from PIL import Image

    return np.asarray(Image.open(out_png).convert("RGB"), float)


def test_report_plots_visible_in_chromium(bundles, tmp_path):
    write_pngs(tmp_path / "imgs")
    res = validate(ValidateConfig(target=bundles("prune"), images=tmp_path / "imgs", batches=(1, 2), iterations=6,
                                  warmup=0, extra_inputs=2, quiet=True, out_dir=tmp_path / "reports"))
    img = screenshot(res.report_paths["html"], tmp_path / "shot.png", tmp_path)
    assert img.shape[1] == 1200
    non_white = (img.min(axis=-1) < 245).mean()
    assert non_white > 0.05  # a page with content, not a blank or error page
    # each plot draws in its own colours; count the pixels that only a drawn plot can produce
    blue = _rgb(RUNNER_COLOURS["target"])
    box_fill = 255 - 0.25 * (255 - blue)  # the p25–p75 box: target colour at 25 % opacity on white
    assert _near(img, blue) > 100 and _near(img, box_fill, 6.0) > 100, "latency strip plot not visible"
    viridis = sum(_near(img, c, 10.0) for c in _VIRIDIS[:3])  # dark end: exact-match cells of the heat-map
    assert viridis > 2000, "cosine heat-map not visible"
    assert _near(img, _rgb(KEPT_COLOUR)) > 1000, "kept-token mask outlines not visible"
    assert _near(img, (255, 0, 255), 30.0) > 300, "embedded input image (magenta square) not visible"


def test_blank_page_detector_is_not_fooled(tmp_path):
    """The same pixel tests on a page without plots find nothing (so the test above can fail)."""
    page = tmp_path / "empty.html"
    page.write_text("<!DOCTYPE html><html><body><h1>no plots</h1><table><tr><td>1</td></tr></table></body></html>")
    img = screenshot(page, tmp_path / "empty.png", tmp_path, height=1200)
    blue = _rgb(RUNNER_COLOURS["target"])
    assert _near(img, blue) == 0 and _near(img, 255 - 0.25 * (255 - blue), 6.0) == 0
    assert sum(_near(img, c, 10.0) for c in _VIRIDIS[:3]) == 0
    assert _near(img, _rgb(KEPT_COLOUR)) == 0

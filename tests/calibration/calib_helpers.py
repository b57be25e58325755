"""Helpers for the calibration tests: calibration PNGs and folder snapshots (imported by conftest and tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_pngs(folder: Path, count: int, seed: int = 0) -> Path:
    """`count` RGB PNGs: a random linear colour gradient + a soft blob + pixel noise, various sizes."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sizes = [(160, 200), (224, 224), (180, 120), (256, 192)]
    for i in range(count):
        h, w = sizes[i % len(sizes)]
        y, x = np.mgrid[0:h, 0:w].astype(np.float32)
        start, end = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        angle = rng.uniform(0, np.pi)
        t = (np.cos(angle) * x / w + np.sin(angle) * y / h)
        t = (t - t.min()) / max(float(np.ptp(t)), 1e-6)
        img = start + (end - start) * t[..., None]
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0.1, 0.4) * min(h, w)
        blob = np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * r * r))[..., None]
        img = img * (1 - blob) + rng.uniform(0, 255, 3) * blob + rng.normal(0, 10, (h, w, 3))
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / f"img_{i:03d}.png")
    return folder


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (hidden ones included) with its content, to prove nothing changed."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}

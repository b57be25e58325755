"""What `tokcomp debug` feeds both graphs: the bundle's golden inputs, or real photos preprocessed as the
manifest says (calibration/images.py applies the family's framing, rescale and normalisation)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.bundle import Bundle


def golden_batches(bundle: Bundle) -> tuple[list[np.ndarray], str]:
    """Every golden batch of reference.npz (the export's seeded 8-bit noise images)."""
    ref = bundle.reference()
    batches = bundle.reference_batches()
    seed = bundle.manifest.get("reference", {}).get("seed")
    what = (f"golden inputs of reference.npz (batches {', '.join(map(str, batches))}; {sum(batches)} seeded "
            f"noise images{f', seed {seed}' if seed is not None else ''})")
    return [ref[f"pixel_values.b{b}"] for b in batches], what


def photo_batches(bundle: Bundle, images: Path, max_images: int, batch: int) -> tuple[list[np.ndarray], str]:
    """Photos from `images`, framed and normalised per the manifest, in batches the bundle accepts.

    Raises:
        InputError: no usable image (calibration.images.load_images).
    """
    from ..calibration.images import Preprocess, load_images

    pre = Preprocess.from_manifest(bundle.manifest)
    loaded = load_images(images, pre, max_images)
    lo, hi = bundle.batch_range
    step = max(lo, min(batch, hi))
    x = loaded.pixel_values
    out = [x[i:i + step] for i in range(0, len(x), step)]
    if len(out) > 1 and len(out[-1]) < lo:  # a short tail below the profile minimum joins the batch before
        out[-2] = np.concatenate([out[-2], out.pop()])[:hi]
    skipped = f", {len(loaded.skipped)} skipped" if loaded.skipped else ""
    return out, f"{len(x)} images from {images} ({pre.describe()}){skipped}"

"""`tokcomp preprocess`: the exact encoder input a bundle expects for given images, written as .npy.

    from tokcomp_edge.calibration.preprocess import PreprocessConfig, preprocess
    result = preprocess(PreprocessConfig(bundle=Path("export/siglip_pool2"), images=(Path("cam.jpg"),),
                                         out=Path("pixels.npy")))

The same code frames images for `validate --images` and `calibrate`, so what this writes is what those
measured. It lets a user compare the bundle's expectation with their own camera pipeline: `pixel_values`
[N,3,H,W] float32 (normalised) for the float variants, or with `nhwc` the uint8 [N,H,W,3] RGB frames the
nhwc variants take (their graph does the rescale and normalisation). Core install only: numpy and Pillow.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import OutputError
from ..image_policy import PreprocessPolicy


@dataclass(frozen=True)
class PreprocessConfig:
    """What to preprocess and where to write it.

    Attributes:
        bundle: the bundle whose manifest says how (its preprocessing policy, image size, mean/std).
        images: image files and/or folders (a folder contributes its images, sorted by name).
        out: the .npy file to write (atomically).
        nhwc: write the uint8 [N,H,W,3] frames instead of normalised float32 [N,3,H,W].
        force: replace an existing `out`.
    """

    bundle: Path
    images: tuple[Path, ...]
    out: Path
    nhwc: bool = False
    force: bool = False


@dataclass
class PreprocessResult:
    """The written array and how it was made.

    Attributes:
        path: the .npy file.
        shape, dtype: of the array in it.
        files: the images it holds, in order (row i is files[i]).
        skipped: (file, reason) of inputs that could not be read.
        policy: the preprocessing policy applied.
        warnings: lines the user should see (skipped files, caveats, a legacy bundle).
    """

    path: Path
    shape: tuple[int, ...]
    dtype: str
    files: list[Path]
    skipped: list[tuple[Path, str]]
    policy: PreprocessPolicy
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "shape": list(self.shape), "dtype": self.dtype,
                "files": [str(p) for p in self.files], "skipped": [[str(p), why] for p, why in self.skipped],
                "preprocess": self.policy.to_dict(), "warnings": self.warnings}


def preprocess(cfg: PreprocessConfig) -> PreprocessResult:
    """Preprocess `cfg.images` as the bundle's manifest says and write them to `cfg.out`.

    Raises:
        BundleError (exit 2): the bundle is missing or changed since export.
        InputError (exit 2): no images given, a missing path, or no usable image among them.
        OutputError (exit 2): `out` exists and `force` is not set, or cannot be written.
    """
    from ..atomic import ensure_writable_parent, write_bytes_atomic
    from ..core.bundle import Bundle
    from ..errors import InputError
    from .images import load_images

    if not cfg.images:
        raise InputError("no images given", "name image files or folders, e.g. `tokcomp preprocess BUNDLE cam.jpg`")
    out = Path(cfg.out)
    if out.suffix != ".npy":
        raise OutputError(f"--out {out} does not end in .npy", "numpy.save writes .npy files, e.g. --out pixels.npy")
    if out.exists() and not cfg.force:
        raise OutputError(f"{out} already exists", "pass --force to replace it, or choose another --out")
    ensure_writable_parent(out)
    bundle = Bundle.load(cfg.bundle)
    policy = PreprocessPolicy.from_manifest(bundle.manifest)
    batch = load_images(list(cfg.images), policy)
    array = batch.uint8_nhwc if cfg.nhwc else batch.pixel_values
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    write_bytes_atomic(out, buf.getvalue())
    warnings = batch.warnings() + ([f"{policy.source}; re-export the bundle to record its family's own framing"]
                                   if policy.legacy else [])
    return PreprocessResult(path=out, shape=tuple(array.shape), dtype=str(array.dtype), files=list(batch.paths),
                            skipped=list(batch.skipped), policy=policy, warnings=warnings)

"""Real images → encoder inputs, preprocessed from the bundle manifest (no model code needed).

The pipeline is the one CLIP/SigLIP-style image processors use: decode to RGB, resize the shorter side
with bicubic resampling so the target fits, centre-crop to the manifest's image_size, scale to 0–1 and
normalise with the manifest's mean/std. Both input forms are derived from the *same* cropped uint8
pixels, so a float NCHW variant and a uint8 NHWC variant (normalisation inside the graph) see identical
images and can be compared with each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@dataclass(frozen=True)
class Preprocess:
    """How to turn a decoded image into encoder input.

    Attributes:
        image_size: (H, W) of the encoder input.
        mean, std: per-channel RGB normalisation on the 0–1 scale.
    """

    image_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> "Preprocess":
        """Read image_size, mean and std from a bundle manifest's `encoder` section."""
        enc = manifest["encoder"]
        h, w = enc["image_size"]
        return cls(image_size=(int(h), int(w)), mean=tuple(float(v) for v in enc["mean"]),
                   std=tuple(float(v) for v in enc["std"]))


@dataclass
class ImageBatch:
    """Images in both input forms, plus where they came from.

    Attributes:
        uint8_nhwc: [B, H, W, 3] uint8 — the cropped pixels.
        pixel_values: [B, 3, H, W] float32 — scaled to 0–1 and normalised.
        paths: source files (empty for synthetic images).
    """

    uint8_nhwc: np.ndarray
    pixel_values: np.ndarray
    paths: list[Path]

    def __len__(self) -> int:
        return int(self.uint8_nhwc.shape[0])

    def slice(self, start: int, stop: int) -> "ImageBatch":
        return ImageBatch(self.uint8_nhwc[start:stop], self.pixel_values[start:stop], self.paths[start:stop])


def list_images(folder: str | Path, limit: int | None = None) -> list[Path]:
    """The image files directly inside `folder`, sorted by name.

    Args:
        folder: a directory holding JPEG/PNG/BMP/WebP files.
        limit: keep at most this many (the first by name); None keeps all.
    Returns:
        Sorted paths.
    Raises:
        InputError: the folder is missing or holds no image file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"image folder {folder} does not exist or is not a folder",
                         "pass --images DIR with a folder of .jpg/.png files")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputError(f"image folder {folder} holds no {'/'.join(IMAGE_SUFFIXES)} file",
                         "put a few JPEG or PNG images in it")
    return files[:limit] if limit else files


def load_rgb(path: Path):
    """Decode one image file to an RGB PIL image (InputError naming the file if it cannot be read)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InputError(f"cannot read image {path}: {exc}",
                         "remove or replace the file; JPEG and PNG are supported") from exc


def resize_center_crop(image, size: tuple[int, int]):
    """Resize (bicubic) so the image covers `size` = (H, W), keeping aspect ratio, then centre-crop.

    Args:
        image: a PIL RGB image.
        size: target (H, W).
    Returns:
        A PIL image of exactly W×H pixels.
    """
    from PIL import Image

    th, tw = size
    w0, h0 = image.size
    scale = max(th / h0, tw / w0)
    # Round up so that rounding never leaves the resized image one pixel short of the crop.
    nw, nh = max(tw, int(np.ceil(w0 * scale - 1e-6))), max(th, int(np.ceil(h0 * scale - 1e-6)))
    if (nw, nh) != (w0, h0):
        image = image.resize((nw, nh), Image.Resampling.BICUBIC)
    left, top = (nw - tw) // 2, (nh - th) // 2
    return image.crop((left, top, left + tw, top + th))


def normalize(uint8_nhwc: np.ndarray, mean, std) -> np.ndarray:
    """uint8 [B,H,W,3] → float32 [B,3,H,W]: x/255, then (x − mean) / std per channel.

    Args:
        uint8_nhwc: pixels, channel-last.
        mean, std: three floats each (0–1 scale).
    Returns:
        Normalised float32 NCHW array (contiguous).
    """
    x = uint8_nhwc.astype(np.float32) / np.float32(255.0)
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def batch_from_uint8(uint8_nhwc: np.ndarray, pre: Preprocess, paths: list[Path] | None = None) -> ImageBatch:
    """Wrap already-cropped uint8 pixels as an ImageBatch (normalised form computed here)."""
    return ImageBatch(uint8_nhwc=np.ascontiguousarray(uint8_nhwc),
                      pixel_values=normalize(uint8_nhwc, pre.mean, pre.std), paths=list(paths or []))


def load_images(folder: str | Path, pre: Preprocess, limit: int | None = None) -> ImageBatch:
    """Load and preprocess every image in `folder` (see module docstring for the exact steps).

    Args:
        folder: directory of images.
        pre: preprocessing from the manifest (`Preprocess.from_manifest`).
        limit: at most this many images (sorted by name).
    Returns:
        ImageBatch with both input forms.
    Raises:
        InputError: empty/missing folder or an unreadable image.
    """
    paths = list_images(folder, limit)
    crops = [np.asarray(resize_center_crop(load_rgb(p), pre.image_size), dtype=np.uint8) for p in paths]
    return batch_from_uint8(np.stack(crops), pre, paths)


def synthetic_images(count: int, pre: Preprocess, seed: int) -> ImageBatch:
    """Seeded stand-in images: smooth random colour fields with fine noise, as uint8.

    Smooth fields give token statistics closer to photos than white noise does (neighbouring patches
    correlate), while staying reproducible from the seed alone.

    Args:
        count: number of images.
        pre: preprocessing (image size, mean/std).
        seed: numpy seed.
    Returns:
        ImageBatch without paths.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    h, w = pre.image_size
    out = np.empty((count, h, w, 3), np.uint8)
    for i in range(count):
        coarse = rng.integers(0, 256, size=(max(2, h // 16), max(2, w // 16), 3), dtype=np.uint8)
        smooth = np.asarray(Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC), np.int16)
        noise = rng.integers(-12, 13, size=(h, w, 3), dtype=np.int16)
        out[i] = np.clip(smooth + noise, 0, 255).astype(np.uint8)
    return batch_from_uint8(out, pre)

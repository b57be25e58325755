"""Real images → encoder inputs, preprocessed by the policy the bundle's manifest records.

Each family's processor frames a photo its own way (image_policy.py: CLIP shortest edge + centre
crop, SigLIP a square resize, …); this module decodes the file, converts it to RGB as transformers'
processors do (alpha composited over white; grayscale, palette and 16-bit through PIL's `convert`),
applies the policy's resize and crop with PIL (what transformers' PIL-backend processors call), and
rescales and normalises. Both input forms come from the *same* framed uint8 pixels, so a float NCHW variant
and a uint8 NHWC variant (rescale and normalisation inside the graph) see identical images.

A file that is not an image, is empty or truncated is skipped and reported (ImageBatch.skipped); only when
no usable image remains is that an error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..image_policy import RESCALE, PreprocessPolicy

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")

# The policy type under its historical name: `Preprocess(image_size, mean, std)` is the legacy policy.
Preprocess = PreprocessPolicy


@dataclass
class ImageBatch:
    """Images in both input forms, plus where they came from.

    Attributes:
        uint8_nhwc: [B, H, W, 3] uint8 — the framed pixels.
        pixel_values: [B, 3, H, W] float32 — rescaled and normalised.
        paths: source files (empty for synthetic images).
        skipped: (file, reason) of files that could not be used.
        notes: (file, note) of files used with a caveat (a 16-bit image converted as transformers does).
        unread: image files not opened because `limit` usable ones were already loaded.
        limit: the limit load_images was given (None: all files).
    """

    uint8_nhwc: np.ndarray
    pixel_values: np.ndarray
    paths: list[Path]
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    notes: list[tuple[Path, str]] = field(default_factory=list)
    unread: int = 0
    limit: int | None = None

    def __len__(self) -> int:
        return int(self.uint8_nhwc.shape[0])

    def slice(self, start: int, stop: int) -> ImageBatch:
        return ImageBatch(self.uint8_nhwc[start:stop], self.pixel_values[start:stop], self.paths[start:stop])

    def warnings(self) -> list[str]:
        """One line per skipped file or caveat, for the CLI and the report."""
        # Never silently fewer images than the folder holds: a limit that left files out says so.
        unread = ([f"used the first {len(self)} usable of {len(self) + len(self.skipped) + self.unread} image "
                   f"files (--max-images {self.limit}); {self.unread} not read — raise --max-images to use them"]
                  if self.unread else [])
        return (unread + [f"skipped {p}: {why}" for p, why in self.skipped]
                + [f"{p}: {note}" for p, note in self.notes])


def list_images(folder: str | Path, limit: int | None = None) -> list[Path]:
    """The image files directly inside `folder` (by suffix), sorted by name.

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


class UnusableImage(InputError):
    """One file that cannot be decoded as an image (skipped by load_images, named in its warning)."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"cannot read image {path}: {reason}",
                         "remove or replace the file; JPEG and PNG are supported")
        self.path, self.reason = path, reason


# Modes whose pixels exceed 8 bits; PIL's convert (and so transformers) clips them to 0–255.
WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def to_rgb(image):
    """RGB as transformers' `convert_to_rgb` makes it: transparency composited over white, else PIL convert.

    PIL's convert clips 16-bit ("I;16") and 32-bit ("I", "F") pixels to 0–255 rather than scaling them;
    transformers does the same, so the deployed model sees those clipped values too.
    """
    from PIL import Image

    if image.mode == "RGB":
        return image
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def decode(path: Path):
    """Decode one image file: (RGB PIL image, the file's own PIL mode).

    Raises:
        UnusableImage (an InputError): empty, not an image, truncated or otherwise undecodable — naming the file.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise UnusableImage(path, "the file is empty (0 bytes)")
        with Image.open(path) as im:
            im.load()  # decodes now: a truncated file raises here, not later
            return to_rgb(im), im.mode
    except UnidentifiedImageError as exc:
        raise UnusableImage(path, "not an image PIL can decode") from exc
    except (OSError, ValueError, SyntaxError) as exc:  # truncated / corrupt data; PIL raises all three
        raise UnusableImage(path, str(exc) or type(exc).__name__) from exc


def load_rgb(path: Path):
    """Decode one image file to an RGB PIL image (UnusableImage naming the file if it cannot be read)."""
    return decode(path)[0]


def resize_center_crop(image, size: tuple[int, int], resample: int | None = None):
    """The legacy framing: resize so the image covers `size` = (H, W), keeping aspect ratio, then centre-crop.

    Args:
        image: a PIL RGB image.
        size: target (H, W).
        resample: PIL filter (default bicubic).
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
        image = image.resize((nw, nh), Image.Resampling.BICUBIC if resample is None else resample)
    left, top = (nw - tw) // 2, (nh - th) // 2
    return image.crop((left, top, left + tw, top + th))


def shortest_edge_size(width: int, height: int, shortest: int) -> tuple[int, int]:
    """(W, H) with the shorter side = `shortest` and the longer truncated, as transformers computes it."""
    if width <= height:
        return shortest, int(shortest * height / width)
    return int(shortest * width / height), shortest


def center_crop(image, size: tuple[int, int], offset: str = "floor"):
    """transformers' centre crop: top/left = ⌊(side − crop) / 2⌋, zero padding where the image is smaller.

    `offset="round"` rounds the top/left instead, as torchvision's CenterCrop (and so timm) does.
    """
    from PIL import Image

    th, tw = size
    w, h = image.size
    if tw > w or th > h:
        canvas = Image.new("RGB", (max(w, tw), max(h, th)), (0, 0, 0))
        canvas.paste(image, ((tw - w) // 2 if tw > w else 0, (th - h) // 2 if th > h else 0))
        image, (w, h) = canvas, canvas.size
    if offset == "round":
        top, left = int(round((h - th) / 2.0)), int(round((w - tw) / 2.0))
    else:
        top, left = int((h - th) / 2.0), int((w - tw) / 2.0)
    return image.crop((left, top, left + tw, top + th))


def frame(image, pre: PreprocessPolicy) -> np.ndarray:
    """Resize and crop an RGB PIL image by the policy; returns uint8 [H, W, 3] at pre.image_size.

    A new resize rule (VLM tiles, pan-and-scan) is implemented here, next to the policy entry that names it.
    """
    from ..image_policy import INTERPOLATIONS

    resample = INTERPOLATIONS[pre.interpolation]
    if pre.resize == "cover":
        out = resize_center_crop(image, pre.crop or pre.image_size, resample)
    else:
        if pre.resize == "shortest_edge":
            size = shortest_edge_size(*image.size, int(pre.resize_size))
        else:
            size = (int(pre.resize_size[1]), int(pre.resize_size[0]))
        out = image.resize(size, resample) if size != image.size else image
        if pre.crop:
            out = center_crop(out, pre.crop, pre.crop_offset)
    arr = np.asarray(out, dtype=np.uint8)
    if arr.shape != (*pre.image_size, 3):
        raise InputError(f"the preprocessing policy ({pre.describe()}) gives {arr.shape[1]}x{arr.shape[0]} "
                         f"pixels, not the bundle's {pre.image_size[1]}x{pre.image_size[0]}",
                         "re-export the bundle; its manifest's preprocess entry is inconsistent")
    return arr


def normalize(uint8_nhwc: np.ndarray, mean, std, rescale_factor: float = RESCALE) -> np.ndarray:
    """uint8 [B,H,W,3] → float32 [B,3,H,W]: x · rescale (x / 255), then (x − mean) / std per channel.

    Args:
        uint8_nhwc: pixels, channel-last.
        mean, std: three floats each (on the rescaled scale).
        rescale_factor: the policy's; 1/255 divides by 255, exactly as the nhwc variant's graph does.
    Returns:
        Normalised float32 NCHW array (contiguous).
    """
    x = uint8_nhwc.astype(np.float32)
    # Division, not multiplication by float32(1/255): bit-identical to the in-graph nhwc preprocessing.
    x = x / np.float32(255.0) if math.isclose(rescale_factor, RESCALE) else x * np.float32(rescale_factor)
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def batch_from_uint8(uint8_nhwc: np.ndarray, pre: Preprocess, paths: list[Path] | None = None) -> ImageBatch:
    """Wrap already-framed uint8 pixels as an ImageBatch (normalised form computed here)."""
    return ImageBatch(uint8_nhwc=np.ascontiguousarray(uint8_nhwc),
                      pixel_values=normalize(uint8_nhwc, pre.mean, pre.std, pre.rescale_factor),
                      paths=list(paths or []))


def expand_sources(sources) -> list[Path]:
    """Files as given and the image files of folders (sorted by name), in argument order."""
    if isinstance(sources, (str, Path)):
        sources = [sources]
    files: list[Path] = []
    for src in map(Path, sources):
        if src.is_dir():
            files += list_images(src)
        elif src.is_file():
            files.append(src)
        else:
            raise InputError(f"image {src} does not exist", "pass image files or folders of images")
    return files


def load_images(sources, pre: Preprocess, limit: int | None = None) -> ImageBatch:
    """Load and preprocess images by the policy (see module docstring for the exact steps).

    Args:
        sources: a folder (its JPEG/PNG/BMP/WebP files, sorted by name), or a list of files and folders.
        pre: the policy (`Preprocess.from_manifest(manifest)`).
        limit: at most this many usable images, in order; unusable files are skipped, not counted.
    Returns:
        ImageBatch with both input forms; `skipped` names the files left out and why.
    Raises:
        InputError: a missing folder or file, a folder without images, or no usable image at all.
    """
    frames, used, skipped, notes = [], [], [], []
    files = expand_sources(sources)
    unread = 0
    for k, path in enumerate(files):
        if limit and len(used) >= limit:
            unread = len(files) - k
            break
        try:
            rgb, mode = decode(path)
        except UnusableImage as exc:
            skipped.append((path, exc.reason))
            continue
        frames.append(frame(rgb, pre))
        used.append(path)
        if mode in WIDE_MODES:
            notes.append((path, f"{mode} image converted to RGB as transformers' processors do: values above "
                                "255 clip to white; convert it to 8-bit first if the camera delivers more"))
    if not frames:
        what = "; ".join(f"cannot read image {p}: {why}" for p, why in skipped[:3])
        more = f" (+{len(skipped) - 3} more)" if len(skipped) > 3 else ""
        raise InputError(f"no usable image: {what}{more}", "give JPEG or PNG files that open in an image viewer")
    batch = batch_from_uint8(np.stack(frames), pre, used)
    batch.skipped, batch.notes, batch.unread, batch.limit = skipped, notes, unread, limit
    return batch


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

"""The sweep's inputs: the prompts file and the images folder, checked before any model is loaded."""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from .result import DEFAULT_PROMPTS


def read_prompts(path: Path | None) -> list[str]:
    """One prompt a line (blank lines skipped, whitespace stripped); None → the default set.

    Raises:
        InputError (exit 2): a missing or unreadable file, one that is not UTF-8 text, or holds no prompt.
    """
    if path is None:
        return list(DEFAULT_PROMPTS)
    path = Path(path)
    if not path.is_file():
        raise InputError(f"prompts file {path} does not exist", "pass --prompts FILE with one question a line")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"prompts file {path} cannot be read ({exc.strerror})", "check its permissions") from exc
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = None
    if text is None or "\x00" in text:
        raise InputError(f"prompts file {path} is not UTF-8 text", "give a plain text file, one question a line")
    prompts = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not prompts:
        raise InputError(f"prompts file {path} holds no prompt", "write one question a line")
    return prompts


def check_images(folder: Path) -> list[Path]:
    """The image files of `folder` (calibration/images.py list_images: InputError when missing or empty)."""
    from ..calibration.images import list_images

    try:
        return list_images(folder)
    except OSError as exc:  # a folder we may not list (permissions, a broken mount)
        raise InputError(f"image folder {folder} cannot be read ({exc.strerror or exc})",
                         "check its permissions, or pass another --images DIR") from exc


def read_pairs(path: Path, images: Path) -> list[tuple[Path, str]]:
    """`--pairs FILE`: one `IMAGE<TAB>PROMPT` a line (IMAGE relative to the --images folder; blank lines and
    lines starting with # skipped): questions that belong to one photo each, instead of images × prompts.

    Raises:
        InputError (exit 2): a file that is missing, not UTF-8 text, without a pair, a line without a tab or
        with an empty prompt, or an image that is not in the folder.
    """
    lines = read_prompts(path)  # the same checks: exists, UTF-8 text, not empty
    out = []
    for k, line in enumerate(lines, 1):
        if line.startswith("#"):
            continue
        name, sep, prompt = line.partition("\t")
        if not sep or not name.strip() or not prompt.strip():
            raise InputError(f"--pairs {path}: pair {k} ({line[:60]!r}) is not IMAGE<tab>PROMPT",
                             "write one image file name, a tab and the question a line")
        file = Path(images) / name.strip()
        if not file.is_file():
            raise InputError(f"--pairs {path}: pair {k} names {name.strip()!r}, which is not in {images}",
                             "give image file names relative to the --images folder")
        out.append((file, prompt.strip()))
    if not out:
        raise InputError(f"--pairs {path} holds no pair", "write IMAGE<tab>PROMPT lines")
    return out

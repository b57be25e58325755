"""The sweep's inputs: the prompts file and the images folder, checked before any model is loaded."""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from .result import DEFAULT_PROMPTS


def read_prompts(path: Path | None) -> list[str]:
    """One prompt a line (blank lines skipped); None → the default set.

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

"""Atomic artifact writing: build under a temporary name in the destination folder, rename when done.

An interrupted or failed run leaves nothing half-written and never damages an older artifact.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import OutputError


def ensure_writable_parent(dest: Path) -> None:
    """Create dest's parent folder and check we can write there, before any expensive work."""
    parent = dest.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output folder {parent}: {exc.strerror}",
                          "choose a writable --out") from exc
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"output folder {parent} is not writable", "choose a writable --out")


@contextlib.contextmanager
def staged_dir(dest: Path, *, replace: bool) -> Iterator[Path]:
    """Yield an empty temp folder beside `dest`; on success swap it into place.

    With `replace=False` an existing `dest` is an error (checked before and after the work, since
    the work can be long). With `replace=True` the old folder is moved aside only after the new one is
    complete, then removed; if the swap itself fails, the old folder is put back.
    """
    dest = Path(dest)
    if dest.exists() and not replace:
        raise OutputError(f"{dest} already exists", "pass --force to replace it, or choose another --out")
    ensure_writable_parent(dest)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        yield tmp
        if dest.exists():
            if not replace:
                raise OutputError(f"{dest} appeared while exporting", "pass --force to replace it")
            old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
            os.rmdir(old)
            os.rename(dest, old)
            try:
                os.rename(tmp, dest)
            except OSError:
                os.rename(old, dest)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write a single file atomically (temp file in the same folder, fsync, rename)."""
    path = Path(path)
    ensure_writable_parent(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))

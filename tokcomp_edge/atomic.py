"""Atomic artifact writing: build under a temporary name in the destination folder, rename when done.

An interrupted or failed run leaves nothing half-written and never damages an older artifact.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import OutputError


# A write that fails for one of these is the destination's fault (full, read-only, over quota), never the
# input's: it becomes one OutputError line (exit 2) instead of a traceback.
_DEST_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG, errno.EACCES, errno.EPERM}


def ensure_writable_parent(dest: Path, *, probe_only: bool = False) -> None:
    """Create dest's parent folder and check we can write there, before any expensive work.

    The check creates (and removes) a temporary folder there, as the real write will: os.access alone says
    yes for root on /proc or a read-only mount. With `probe_only` (an early check, long before the write)
    the folders it had to create are removed again, so a command that fails in between leaves nothing.
    """
    parent = Path(dest).parent
    created = [p for p in (parent, *parent.parents) if not p.exists()]  # deepest first
    try:
        parent.mkdir(parents=True, exist_ok=True)
        os.rmdir(tempfile.mkdtemp(prefix=f".{Path(dest).name}.probe-", dir=parent))
    except OSError as exc:
        raise OutputError(f"cannot write in output folder {parent}: {exc.strerror or exc}",
                          "choose a writable --out") from exc
    finally:
        if probe_only:
            for folder in created:
                with contextlib.suppress(OSError):
                    folder.rmdir()


def user_mode(path: Path) -> None:
    """Give a temp file or folder the mode the user's umask gives a new one (mkstemp/mkdtemp make them
    0600/0700, which `rsync -a` or a container copy would carry to the device)."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, (0o777 if Path(path).is_dir() else 0o666) & ~mask)


@contextlib.contextmanager
def destination_errors(dest: Path) -> Iterator[None]:
    """OSErrors of the destination (disk full, read-only, no permission) as one OutputError line."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in _DEST_ERRNOS:
            raise
        raise OutputError(f"writing {dest} failed: {exc.strerror} (nothing was left behind)",
                          "free space or choose another --out, then run the command again") from exc


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
        user_mode(tmp)
        with destination_errors(dest):
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
        with destination_errors(path), os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        user_mode(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))

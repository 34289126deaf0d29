"""Atomic file writes: a killed job never leaves half a file behind."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from filelock import FileLock


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` then move the temp file onto ``path`` in one ``os.replace``.

    The temp file sits in the target's folder so the replace never crosses file systems.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    # mkstemp creates 0600 whatever the umask: give the file the mode open() would, so a
    # group-shared cache or results folder stays readable (and writable) by the group
    os.chmod(tmp, 0o666 & ~current_umask())
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def current_umask() -> int:
    """The process's umask (read by setting it and restoring it at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def lock_unless_read_only(path: str | Path) -> Iterator[bool]:
    """Hold the file lock ``<path>.lock`` (yields True); in a folder where the lock cannot be
    created (read-only cache, no write permission) yield False without a lock: readers of
    complete entries need none, and a writer will fail with its own clear error."""
    lock = FileLock(str(path) + ".lock")
    try:
        lock.acquire()
    except OSError as e:
        if e.errno not in (errno.EACCES, errno.EROFS, errno.EPERM):
            raise
        yield False
        return
    try:
        yield True
    finally:
        lock.release()


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write text atomically."""
    return atomic_write(path, lambda p: p.write_text(text))


def atomic_torch_save(obj: object, path: str | Path) -> Path:
    """``torch.save`` atomically and reproducibly: serialised in memory first, because torch
    names the archive's inner folder after the file, so saving to a random temp name would give
    the same weights a different sha256 on every save."""
    import io

    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write(path, lambda p: p.write_bytes(buf.getvalue()))

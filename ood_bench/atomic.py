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
    except OSError as e:  # no room / no rights: the same errno, with the target path and the fix
        Path(tmp).unlink(missing_ok=True)
        fix = _write_fix(e.errno, path.parent)
        if fix is None:
            raise
        raise OSError(e.errno, f"cannot write {path}: {e.strerror}. Fix: {fix}") from e
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


def _write_fix(code: int | None, folder: Path) -> str | None:
    """How to fix a write into ``folder`` that failed with errno ``code`` for lack of room or
    rights (None for other errors, which are re-raised unchanged)."""
    import errno

    elsewhere = "point cache_dir / results_dir / hydra.run.dir (hydra.sweep.dir) elsewhere"
    rights = f"make {folder} writable for you (ls -ld {folder}), or {elsewhere}"
    return {
        errno.ENOSPC: f"free space on the disk holding {folder} (df -h {folder}; e.g. delete "
        f"old cached features under cache_dir/features), or {elsewhere}",
        errno.EDQUOT: f"free space within your disk quota for {folder} (quota -s), or {elsewhere}",
        errno.EFBIG: f"the file exceeds the size limit of this process (ulimit -f) or of the "
        f"file system holding {folder}: raise the limit, or {elsewhere}",
        errno.EROFS: f"{folder} is on a read-only file system: {elsewhere}",
        errno.EACCES: rights,
        errno.EPERM: rights,
    }.get(code or 0)

"""The site's output folder: what a build may replace, and a swap that a kill cannot tear.

- **Only what the site wrote is replaced or removed.** Every build leaves :data:`MANIFEST` in
  the folder, the list of the files it wrote; the next build replaces and removes those files
  and nothing else. Any other file in the folder (notes, a README, the user's images) is carried
  over unchanged. A non-empty folder without a manifest is refused, unless it is a site built
  before manifests existed (then its own pages, the images they show and the two assets are
  taken as the site's). A new file that would overwrite a file the site did not write is
  refused too.
- **A kill leaves the old site or the new one.** The new site is written into a staging folder
  beside the output folder (``.<name>.new-*``), the user's files are hard-linked into it (copied
  across file systems), and then two renames swap it in: the output folder becomes
  ``.<name>.old-*`` and the staging folder takes its name. A kill while writing leaves the old
  site untouched; the next build removes the staging folder. Between the two renames (a few
  microseconds) the folder is missing and the old site is whole under ``.<name>.old-*``: the
  next build renames it back first.
- **Nothing is written outside the folder.** Names are checked where the CSVs are read
  (:func:`ood_bench.site.data.check_names_of`); on top of that, every path of a build must be a
  plain relative path that resolves inside the folder.
"""

from __future__ import annotations

import errno
import filecmp
import json
import logging
import os
import re
import shutil
import tempfile
from hashlib import sha256
from pathlib import Path

from ood_bench.atomic import current_umask
from ood_bench.errors import DataError

log = logging.getLogger(__name__)

MANIFEST = "site-manifest.json"
WRITER = "ood_bench.site (ood-bench report)"
BRAND = '<span class="brand">ood-bench results</span>'  # every page's header (base.html.j2)
LEGACY_ASSETS = ("assets/site.css", "assets/site.js")


def manifest(files: dict[str, bytes]) -> bytes:
    """The manifest of a build writing ``files``: each path with its sha256, sorted (the same
    files give the same bytes)."""
    listed = {rel: sha256(blob).hexdigest() for rel, blob in sorted(files.items())}
    body = {"written_by": WRITER, "files": listed}
    return (json.dumps(body, indent=1, sort_keys=True) + "\n").encode()


def inside(folder: Path, rel: str) -> Path:
    """``folder / rel`` when ``rel`` is a plain relative path (no ``..``, no ``/`` at the start,
    no backslash) that resolves inside ``folder``; else a :class:`DataError`."""
    plain = "\\" not in rel and all(part not in ("", ".", "..") for part in rel.split("/"))
    path = folder / rel
    if not plain or not path.resolve().is_relative_to(folder.resolve()):
        raise DataError(
            f"refusing to write {rel!r}: it is not a path inside the output folder {folder}. "
            "Fix: a file name of the site comes from a benchmark or figure name; rename the "
            "one that makes this path (names: docs/site.md)"
        )
    return path


def site_files(out: Path) -> set[str] | None:
    """The files of an earlier build in ``out`` (paths relative to it), from its manifest or,
    for a site built before manifests, from its pages; ``set()`` for a missing or empty folder;
    None when ``out`` holds files and no site."""
    if not out.exists():
        return set()
    if not out.is_dir():
        raise DataError(f"--out {out} is a file: give a folder for the site")
    listing = out / MANIFEST
    if listing.is_file():
        try:
            listed = json.loads(listing.read_text())["files"]
        except (ValueError, KeyError, TypeError) as e:
            raise DataError(
                f"{listing} is not a site manifest ({e}): the build cannot tell the site's files "
                f"from yours. Fix: delete {out} if it only holds the site, or build elsewhere"
            ) from e
        owned = {MANIFEST}
        for rel in listed:
            try:
                inside(out, rel)
                owned.add(rel)
            except DataError:
                log.warning("%s lists %r, outside the folder: ignored", listing, rel)
        return owned
    index = out / "index.html"
    is_site = index.is_file() and BRAND in index.read_text(errors="replace")
    if is_site and all((out / a).is_file() for a in LEGACY_ASSETS):
        return legacy_site_files(out)
    if not any(out.iterdir()):
        return set()
    return None


def legacy_site_files(out: Path) -> set[str]:
    """A site built before manifests: its pages (top-level HTML with the site's header), the
    images they show and the two assets."""
    owned = set(LEGACY_ASSETS)
    for page in out.glob("*.html"):
        html = page.read_text(errors="replace")
        if BRAND not in html:
            continue
        owned.add(page.name)
        for src in re.findall(r'<img src="(img/[^"/]+)"', html):
            if (out / src).is_file():
                owned.add(src)
    return owned


def refuse_foreign_folder(out: Path) -> set[str]:
    """:func:`site_files` of ``out``, or a :class:`DataError` with the fix when ``out`` holds
    files but no site (checked before the site is rendered)."""
    owned = site_files(out)
    if owned is None:
        raise DataError(
            f"--out {out} is not empty and holds no site ({MANIFEST} is missing): a build "
            "replaces the files of an earlier build only, and cannot tell which files here are "
            f"yours. Fix: give a new or empty folder (e.g. --out {out / 'site'}), or move the "
            "files out of it"
        )
    return owned


def prepare(out: Path) -> set[str]:
    """Before a build into ``out``: tidy what a killed build left (:func:`recover`), then the
    files of the earlier build there (:func:`refuse_foreign_folder`)."""
    recover(out)
    return refuse_foreign_folder(out)


def recover(out: Path) -> None:
    """Tidy what a killed build left beside ``out``: a staging folder is removed (it holds the
    new site's files and links to the user's), an old site swapped out is renamed back when
    ``out`` is missing, or cleaned up when the swap had finished."""
    for staging in sorted(out.parent.glob(f".{out.name}.new-*")):
        log.warning("removing %s, left by an interrupted build", staging)
        shutil.rmtree(staging)
    for old in sorted(out.parent.glob(f".{out.name}.old-*")):
        if not out.exists():
            log.warning("restoring %s from %s, swapped out by an interrupted build", out, old)
            os.rename(old, out)
        else:
            discard(old, out)


def folder(out: str | Path) -> Path:
    """The output folder as an absolute path (a symbolic link to a folder: the folder, so
    the swap replaces the site, not the link)."""
    out = Path(os.path.abspath(out))
    return out.resolve() if out.is_symlink() else out


def write_bytes(path: Path, blob: bytes) -> None:
    """Write one file of the staged site (the swap makes the whole site atomic)."""
    path.write_bytes(blob)


def write_site(files: dict[str, bytes], out: Path, owned: set[str]) -> list[Path]:
    """Write ``files`` (path in the site → bytes) as the new content of ``out``: staged beside
    it, the user's files (those not in ``owned``, the earlier build's, see :func:`prepare`)
    carried over, swapped in with two renames. Returns the paths written."""
    out = folder(out)
    clash = [rel for rel in files if rel not in owned and (out / rel).exists()]
    if clash:
        raise DataError(
            f"the site would overwrite {out / clash[0]}, which no earlier build wrote "
            f"({len(clash)} such file(s)). Fix: move it out of {out}, or build elsewhere"
        )
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.new-", dir=out.parent))
    except OSError as e:
        raise DataError(
            f"cannot stage the site beside {out} ({e.strerror}): a build writes it into "
            f"{out.parent} and swaps it in. Fix: make {out.parent} writable for you, or give "
            "another --out"
        ) from e
    old = out.parent / staging.name.replace(".new-", ".old-", 1)
    try:
        # mkdtemp gives 0700: the mode of the folder it replaces, else a new folder's
        mode = out.stat().st_mode & 0o7777 if out.is_dir() else 0o777 & ~current_umask()
        os.chmod(staging, mode)
        for rel, blob in files.items():
            path = inside(staging, rel)
            path.parent.mkdir(parents=True, exist_ok=True)
            write_bytes(path, blob)
        if out.is_dir():
            carry_over(out, staging, owned)
            os.rename(out, old)
        os.rename(staging, out)
    except BaseException:  # an error (a kill runs no handler: see recover)
        shutil.rmtree(staging, ignore_errors=True)
        if old.is_dir() and not out.exists():
            os.rename(old, out)
        raise
    if old.is_dir():
        discard(old, out)
    return [out / rel for rel in files]


def carry_over(out: Path, staging: Path, owned: set[str]) -> None:
    """Hard-link (or copy, across file systems) every entry of ``out`` that the earlier build
    did not write into ``staging``, at the same place; symbolic links stay links."""
    for where, dirs, names in os.walk(out):
        here = Path(where)
        rel_dir = here.relative_to(out)
        (staging / rel_dir).mkdir(parents=True, exist_ok=True)
        for name in [*names, *(d for d in dirs if (here / d).is_symlink())]:
            rel = (rel_dir / name).as_posix()
            if rel in owned:
                continue
            src, dst = here / name, staging / rel_dir / name
            if src.is_symlink():
                os.symlink(os.readlink(src), dst)
                continue
            try:
                os.link(src, dst)
            except OSError as e:  # another file system, or no hard links there: a copy
                if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.EOPNOTSUPP):
                    raise
                shutil.copy2(src, dst)


def discard(old: Path, out: Path) -> None:
    """Remove the swapped-out site ``old``: the earlier build's files, and the user's files
    whose twin (the same file, or the same bytes) is in ``out``; anything else stays, with a
    warning naming the folder."""
    owned = site_files(old) or set()
    kept = []
    for where, dirs, names in os.walk(old, topdown=False):
        here = Path(where)
        for name in [*names, *(d for d in dirs if (here / d).is_symlink())]:
            src = here / name
            twin = out / src.relative_to(old)
            if src.is_symlink():
                same = twin.is_symlink() and os.readlink(twin) == os.readlink(src)
            else:
                same = twin.is_file() and (
                    os.path.samefile(src, twin) or filecmp.cmp(src, twin, shallow=False)
                )
            if same or src.relative_to(old).as_posix() in owned:
                src.unlink()
            else:
                kept.append(src)
        if here != old and not any(here.iterdir()):
            here.rmdir()
    if kept:
        log.warning("kept %s: %d file(s) there are not in the new site folder", old, len(kept))
    else:
        old.rmdir()

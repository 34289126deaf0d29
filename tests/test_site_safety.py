"""The results site against careless and hostile input: a name that is a path or a URL scheme
is refused where the CSVs are read, nothing is written outside --out, failed-only results are a
clear error; a build replaces only its own earlier files, in one swap a kill cannot tear."""

from __future__ import annotations

import html
import os
import re
import signal
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from ood_bench.errors import DataError
from ood_bench.site import build_site, output
from ood_bench.site.build import write
from tests.conftest import ROOT, run_module

RESULTS = ROOT / "results"
SMALL = "openood_seeds.csv"  # the smallest committed raw CSV that makes a whole site

HOSTILE = [
    ("raw", "benchmark", "../../../x"),
    ("raw", "benchmark", "javascript:alert(3)//"),
    ("raw", "detector", "^^5cinput{/etc/hostname}"),
    ("raw", "ood_dataset", "../../evil"),
    ("raw", "backbone", "a b"),
    ("raw", "library", "javascript:alert(1)"),
    ("novelty", "ood_dataset", "javascript:alert(2)//"),
    ("calib_leak", "detector", "${oc.env:HOME}"),
]


def results_folder(tmp_path: Path, folder: str = "raw", **change: str) -> Path:
    """A results folder holding one small committed raw CSV, with ``change`` (column → value)
    applied to the 4th row of the CSV under ``folder`` (raw, novelty or calib_leak)."""
    root = tmp_path / "results"
    (root / "raw").mkdir(parents=True)
    raw = pd.read_csv(RESULTS / "raw" / SMALL, dtype=str, keep_default_na=False)
    if folder == "raw":
        for col, value in change.items():
            raw.loc[3, col] = value
    raw.to_csv(root / "raw" / SMALL, index=False)
    if folder != "raw":
        (root / folder).mkdir()
        src = next((RESULTS / folder).glob("*.csv"))
        d = pd.read_csv(src, dtype=str, keep_default_na=False)
        for col, value in change.items():
            d.loc[3, col] = value
        d.to_csv(root / folder / "x.csv", index=False)
    return root


def files_under(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")}


@pytest.mark.parametrize(("folder", "column", "value"), HOSTILE)
def test_a_hostile_name_in_a_csv_is_refused_before_anything_is_written(
    tmp_path: Path, folder: str, column: str, value: str
):
    root = results_folder(tmp_path / "a" / "b", folder, **{column: value})
    before = files_under(tmp_path)
    with pytest.raises(DataError) as e:
        build_site(root, tmp_path / "a" / "b" / "site")
    msg = str(e.value)
    csv = root / folder / (SMALL if folder == "raw" else "x.csv")
    assert f"{csv}, column {column}, line 5" in msg, msg
    assert repr(value) in msg and "Fix:" in msg
    assert files_under(tmp_path) == before  # no page, no image, no folder: nothing written


def test_make_report_refuses_a_traversal_name_with_exit_code_2(tmp_path: Path):
    root = results_folder(tmp_path / "a" / "b", benchmark="../../../x")
    proc = run_module(
        "-m",
        "ood_bench.cli",
        "report",
        str(root),
        "--out",
        str(tmp_path / "a" / "b" / "site"),
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert "column benchmark" in proc.stderr and "Traceback" not in proc.stderr
    assert not list(tmp_path.rglob("x*")) and not (tmp_path / "a" / "b" / "site").exists()


def test_failed_only_results_are_a_clear_error(tmp_path: Path):
    root = results_folder(tmp_path)
    raw = pd.read_csv(root / "raw" / SMALL, dtype=str, keep_default_na=False)
    raw = raw.assign(status="failed", error="DataError: no data at /nowhere", value="")
    raw.to_csv(root / "raw" / SMALL, index=False)
    with pytest.raises(DataError, match=r"all \d+ jobs failed \(the first error: DataError: no"):
        build_site(root, tmp_path / "site")


def test_results_under_corruption_only_are_a_clear_error(tmp_path: Path):
    root = tmp_path / "results"
    (root / "raw").mkdir(parents=True)
    raw = pd.read_csv(RESULTS / "raw" / "robustness_openood.csv", dtype=str, keep_default_na=False)
    raw[raw["corruption"] != "none"].to_csv(root / "raw" / "r.csv", index=False)
    with pytest.raises(DataError, match="no result without corruption.*Fix: collect the clean"):
        build_site(root, tmp_path / "site")


# --- the output folder: only the site's files replaced, one swap, nothing outside -------------

PAGE = b'<html><span class="brand">ood-bench results</span><img src="img/a.svg"></html>'


def site(*names: str) -> dict[str, bytes]:
    """A small fake build: its pages, images and assets (and the manifest, as render gives)."""
    files = {n: f"{n} of this build".encode() for n in names}
    files |= {"assets/site.css": b"css", "assets/site.js": b"js"}
    files[output.MANIFEST] = output.manifest(files)
    return files


def snapshot(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def leftovers(out: Path) -> list[str]:
    """Staging or swapped-out folders left beside ``out``."""
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


def add_user_files(out: Path) -> dict[str, bytes]:
    mine = {"notes.txt": b"mine", "img/photo.png": b"png", "docs/deep/a.html": b"<p>a</p>"}
    for rel, blob in mine.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(blob)
    (out / "link").symlink_to("notes.txt")
    return mine


def test_a_rebuild_keeps_the_users_files_and_removes_only_stale_site_files(tmp_path: Path):
    out = tmp_path / "site"
    write(site("index.html", "a.html", "img/a.svg"), out)
    mine = add_user_files(out)
    inode = (out / "notes.txt").stat().st_ino
    new = site("index.html", "b.html", "img/b.svg")
    write(new, out)
    got = snapshot(out)
    assert got == new | mine  # a.html and img/a.svg (the earlier build's) gone, the rest kept
    assert (out / "notes.txt").stat().st_ino == inode  # the same file, not a copy
    assert os.readlink(out / "link") == "notes.txt"
    assert leftovers(out) == []


def test_a_rebuild_keeps_the_folders_mode(tmp_path: Path):
    out = tmp_path / "site"
    write(site("index.html"), out)
    out.chmod(0o2750)
    write(site("index.html", "b.html"), out)
    assert out.stat().st_mode & 0o7777 == 0o2750


def test_a_folder_with_files_and_no_site_is_refused_before_any_work(tmp_path: Path):
    out = tmp_path / "mydocs"
    mine = add_user_files(out)
    (out / "assets").mkdir()
    (out / "assets" / "theme.css").write_bytes(b"mine too")
    mine["assets/theme.css"] = b"mine too"
    with pytest.raises(DataError, match=r"not empty and holds no site .*Fix: give a new or empty"):
        build_site(tmp_path / "no-results-needed", out)  # refused before the results are read
    assert snapshot(out) == mine and leftovers(out) == []


def test_a_new_site_file_never_overwrites_a_users_file(tmp_path: Path):
    out = tmp_path / "site"
    write(site("index.html"), out)
    (out / "notes.html").write_bytes(b"mine")
    with pytest.raises(DataError, match="would overwrite .*notes.html, which no earlier build"):
        write(site("index.html", "notes.html"), out)
    assert (out / "notes.html").read_bytes() == b"mine" and leftovers(out) == []


def test_a_site_built_before_manifests_is_recognised(tmp_path: Path):
    out = tmp_path / "site"
    old = {"index.html": PAGE, "img/a.svg": b"svg", "assets/site.css": b"c", "assets/site.js": b"j"}
    for rel, blob in old.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(blob)
    mine = add_user_files(out)
    new = site("index.html", "b.html")
    write(new, out)
    assert snapshot(out) == new | mine  # img/a.svg, shown by the old page, removed


def test_a_failure_half_way_leaves_the_old_site_whole(tmp_path: Path, monkeypatch):
    out = tmp_path / "site"
    write(site("index.html", "a.html", "img/a.svg", "img/b.svg"), out)
    add_user_files(out)
    before = snapshot(out)
    calls = []

    def fail_on_the_third(path: Path, blob: bytes) -> None:
        calls.append(path)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        path.write_bytes(blob)

    monkeypatch.setattr(output, "write_bytes", fail_on_the_third)
    new = site("index.html", "b.html", "img/c.svg", "img/d.svg")
    with pytest.raises(OSError, match="No space"):
        write(new, out)
    assert len(calls) == 3
    assert snapshot(out) == before and leftovers(out) == []
    monkeypatch.undo()
    write(new, out)
    assert set(snapshot(out)) >= set(new)


def test_a_failure_between_the_renames_puts_the_old_site_back(tmp_path: Path, monkeypatch):
    out = tmp_path / "site"
    write(site("index.html", "a.html"), out)
    before = snapshot(out)
    real = os.rename
    calls = []

    def second_fails(a, b):
        calls.append((a, b))
        if len(calls) == 2:
            raise OSError(5, "Input/output error")
        real(a, b)

    monkeypatch.setattr(output.os, "rename", second_fails)
    with pytest.raises(OSError, match="Input/output"):
        write(site("index.html", "b.html"), out)
    monkeypatch.undo()
    assert snapshot(out) == before and leftovers(out) == []


@pytest.mark.parametrize("swapped", [False, True])
def test_what_a_kill_leaves_is_tidied_by_the_next_build(tmp_path: Path, swapped: bool):
    """A kill runs no handler: before the swap it leaves a staging folder; between the renames
    the old site under .site.old-*; after them the old site not yet removed."""
    out = tmp_path / "site"
    first = site("index.html", "a.html")
    write(first, out)
    mine = add_user_files(out)
    before = snapshot(out)
    staging = tmp_path / ".site.new-killed"
    old = tmp_path / ".site.old-killed"
    os.rename(out, old)  # the first rename
    if swapped:  # the swap happens once the new site is written and the user's files carried
        for rel, blob in site("index.html", "mid.html").items():
            (staging / rel).parent.mkdir(parents=True, exist_ok=True)
            (staging / rel).write_bytes(blob)
        output.carry_over(old, staging, set(first))
        os.rename(staging, out)
    else:  # killed while carrying the user's files over (the new site written)
        (staging / "img").mkdir(parents=True)
        (staging / "img" / "half.svg").write_bytes(b"half")
        os.link(old / "notes.txt", staging / "notes.txt")
        assert output.prepare(out) == set(first)  # the old site back, staging removed
        assert snapshot(out) == before and leftovers(out) == []
    new = site("index.html", "b.html")
    write(new, out)
    assert snapshot(out) == new | mine and leftovers(out) == []


@pytest.mark.parametrize(
    "rel", ["../x.html", "/tmp/x.html", "img/../../x.svg", "a\\..\\b", "", ".", "img//a.svg"]
)
def test_every_path_written_must_be_inside_the_folder(tmp_path: Path, rel: str):
    out = tmp_path / "deep" / "site"
    with pytest.raises(DataError, match="not a path inside the output folder"):
        write({"index.html": b"i", rel: b"evil"}, out)
    assert {p.name for p in tmp_path.rglob("*")} <= {"deep"}  # nothing written anywhere


@pytest.mark.slow  # a subprocess importing the site (~10 s on a shared machine)
def test_a_kill_during_the_write_phase_leaves_the_old_site(tmp_path: Path):
    """A real SIGKILL while the new site is being written: the old site stays whole."""
    out = tmp_path / "site"
    write(site("index.html", "a.html"), out)
    add_user_files(out)
    before = snapshot(out)
    started = tmp_path / "started"
    code = f"""
import time
from html.parser import HTMLParser
from pathlib import Path
from ood_bench.site import build, output
from tests.test_site_safety import site

def slow(path, blob):
    path.write_bytes(blob)
    Path({str(started)!r}).touch()
    time.sleep(0.5)

output.write_bytes = slow
build.write(site(*[f"p{{i}}.html" for i in range(20)]), Path({str(out)!r}))
"""
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}
    )
    try:
        deadline = time.monotonic() + 60
        while not started.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert started.exists(), "the build did not start writing"
        time.sleep(0.6)  # a couple of files into the staging folder
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert snapshot(out) == before  # the old site, untouched
    assert [p for p in leftovers(out) if ".new-" in p]  # the half-written staging folder
    new = site("index.html")
    write(new, out)
    assert set(snapshot(out)) >= set(new) and leftovers(out) == []


# --- links: relative, inside the site (or the results folder for the sources), no scheme -------

# free text the site accepts (the library comparison's descriptions are table cells, not names)
HOSTILE_TEXT = [
    "javascript:alert(1)//",
    "<script>alert(2)</script>",
    '"><img src=x onerror=alert(3)>',
    '<a href="javascript:alert(4)">x</a>',
    "../../../x",
    "^^5cinput{/etc/hostname}",
]
SCHEME = re.compile(r"^\s*[A-Za-z][A-Za-z0-9+.\-]*:")


def build_hostile_site(tmp: Path) -> tuple[Path, Path]:
    """A small site whose library comparison holds :data:`HOSTILE_TEXT` in every free-text
    column it shows (the name columns of the result CSVs are refused, see above): (results, out)."""
    root = results_folder(tmp)
    (root / "libraries").mkdir()
    cols = ["library", "aspect", "name", "value", "method", "unit", "why", "detail"]
    rows = [dict.fromkeys(cols, text) for text in HOSTILE_TEXT]
    pd.DataFrame(rows, columns=cols).to_csv(root / "libraries" / "measurements.csv", index=False)
    (root / "libraries" / "comparison.md").write_text("# the comparison\n")  # a source
    (root / "crosscheck").mkdir()
    cc = pd.read_csv(RESULTS / "crosscheck" / "openood_crosscheck_digits.csv")
    cc.loc[: len(HOSTILE_TEXT) - 1, "method"] = HOSTILE_TEXT
    cc.to_csv(root / "crosscheck" / "openood_crosscheck_digits.csv", index=False)
    out = root / "site"
    build_site(root, out)
    return root, out


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return build_hostile_site(tmp_path_factory.mktemp("hostile"))


class Tags(HTMLParser):
    """Every tag of a page with its attributes, as a browser parses them."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))


def link_problems(out: Path, results: Path) -> list[str]:
    """Every href and src of every page of ``out`` that is not a relative path to an existing
    file inside ``out`` (pages, images, assets) or ``results`` (the source files), or that has
    a scheme (``javascript:``, ``http:``, ``file:``); and any script or event handler that is
    not the site's own."""
    bad = []
    for page in sorted(out.glob("*.html")):
        parser = Tags()
        parser.feed(page.read_text())
        scripts = [dict(a).get("src") for t, a in parser.tags if t == "script"]
        if scripts != ["assets/site.js"]:
            bad.append(f"{page.name}: scripts {scripts}")
        for tag, attrs in parser.tags:
            for attr, value in attrs:
                if attr.startswith("on"):
                    bad.append(f"{page.name}: <{tag} {attr}=...>")
                if attr not in ("href", "src"):
                    continue
                value = value or ""
                if SCHEME.match(value) or value.startswith(("/", "\\")) or "javascript" in value:
                    bad.append(f"{page.name}: {attr}={value!r} is not a relative path")
                    continue
                target = value.split("#", 1)[0]
                if not target:  # an anchor of the page itself
                    continue
                path = (out / target).resolve()
                inside = any(path.is_relative_to(f.resolve()) for f in (out, results))
                if not inside or not path.is_file():
                    bad.append(f"{page.name}: {attr}={value!r} is not a file of the site")
    return bad


def test_the_committed_site_links_only_inside_itself_and_the_results():
    assert (RESULTS / "site" / "index.html").is_file()
    assert link_problems(RESULTS / "site", RESULTS) == []


def test_hostile_text_stays_text_and_no_link_leaves_the_site(hostile: tuple[Path, Path]):
    root, out = hostile
    assert link_problems(out, root) == []
    libraries = (out / "libraries.html").read_text()
    cells = {html.unescape(c) for c in re.findall(r"<td[^>]*>([^<]*)</td>", libraries)}
    assert set(HOSTILE_TEXT) <= cells  # each shown as text, in a cell of its own
    assert "<script>alert" not in libraries and "<img src=x" not in libraries
    written = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    outside = {w for w in written if not w.startswith(("site/", "raw/", "libraries/", "crossc"))}
    assert outside == set()


def test_a_hostile_crosscheck_file_name_is_refused(tmp_path: Path):
    """The cross-check's benchmark comes from its file name: checked like the CSVs' names."""
    root = results_folder(tmp_path)
    (root / "crosscheck").mkdir()
    src = RESULTS / "crosscheck" / "openood_crosscheck_digits.csv"
    (root / "crosscheck" / "openood_crosscheck_javascript:alert(5).csv").write_bytes(
        src.read_bytes()
    )
    with pytest.raises(DataError, match=r"invalid benchmark name 'javascript:alert\(5\)'"):
        build_site(root, tmp_path / "site")
    assert not (tmp_path / "site").exists()

"""Code-quality figures of a package directory, each measured the same way for every library.

Lines (radon raw SLOC), ruff findings with one fixed rule set, docstring coverage (interrogate),
cyclomatic complexity (radon), type-hint coverage, hard-coded ``.cuda(`` calls, and the tests:
how many are shipped and, when asked, whether they pass here. Type-hint coverage is counted by
hand from the AST: no maintained tool reports it without type-checking the code.
"""

from __future__ import annotations

import ast
import collections
import json
import re
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

from libcompare.libraries import REPO, Library, shown
from libcompare.measure import Measure, na

A = "code quality"
RUFF_RULES = "E,W,F,B,SIM"  # pycodestyle, pyflakes, bugbear, simplify
RUFF_IGNORE = "E501"  # line length is a style choice, not a defect


def python_files(root: Path) -> list[Path]:
    """Every .py file under ``root`` (no __pycache__), sorted."""
    return sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)


def parsed(files: list[Path]) -> Iterator[tuple[Path, ast.Module]]:
    """Each file with its AST; files that do not parse (another Python's syntax) are skipped."""
    for f in files:
        try:
            yield f, ast.parse(f.read_text(errors="replace"))
        except SyntaxError:
            continue


def sloc(files: list[Path]) -> int:
    """Source lines of code (radon: no blank, comment or docstring-only lines)."""
    from radon.raw import analyze

    total = 0
    for f in files:
        try:
            total += analyze(f.read_text(errors="replace")).sloc
        except SyntaxError:
            continue
    return total


def ruff_findings(root: Path) -> tuple[int, collections.Counter]:
    """Number of ruff findings under ``root`` with the fixed rule set, and their codes."""
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "ruff",
            "check",
            "--isolated",
            "--select",
            RUFF_RULES,
            "--ignore",
            RUFF_IGNORE,
            "--output-format",
            "json",
            "--exit-zero",
            str(root),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if r.returncode != 0:
        raise RuntimeError(f"ruff failed: {r.stderr.strip()[:300]}")
    found = json.loads(r.stdout or "[]")
    return len(found), collections.Counter(f.get("code") or "syntax" for f in found)


def docstring_coverage(root: Path) -> float:
    """interrogate's coverage (%) with its defaults: modules, classes, functions, methods."""
    from interrogate.config import InterrogateConfig
    from interrogate.coverage import InterrogateCoverage

    results = InterrogateCoverage(paths=[str(root)], conf=InterrogateConfig()).get_coverage()
    return float(results.perc_covered)


def hint_coverage(files: list[Path]) -> tuple[float, int]:
    """Share (%) of annotatable slots that carry a type hint: every parameter of every function
    (``self``/``cls`` of methods excluded) and every return; and the number of slots."""
    slots = hinted = 0
    for _, tree in parsed(files):
        methods = {
            id(n)
            for c in ast.walk(tree)
            if isinstance(c, ast.ClassDef)
            for n in c.body
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
        }
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            a = node.args
            params = [*a.posonlyargs, *a.args, *a.kwonlyargs]
            if id(node) in methods and params and params[0].arg in ("self", "cls"):
                params = params[1:]
            params += [p for p in (a.vararg, a.kwarg) if p is not None]
            slots += len(params) + 1
            hinted += sum(p.annotation is not None for p in params) + (node.returns is not None)
    return (100.0 * hinted / slots if slots else float("nan")), slots


def complexity(files: list[Path]) -> tuple[float, float, int, str]:
    """radon cyclomatic complexity over functions and methods: mean, share (%) above 10 (rank C
    or worse), the maximum and where it is."""
    from radon.complexity import cc_visit
    from radon.visitors import Class

    values: list[tuple[int, str]] = []
    for f in files:
        try:
            blocks = cc_visit(f.read_text(errors="replace"))
        except SyntaxError:
            continue
        for b in blocks:
            items = b.methods if isinstance(b, Class) else [b]
            values += [(m.complexity, f"{f.name}:{m.fullname}") for m in items]
    if not values:
        return float("nan"), float("nan"), 0, ""
    cc = [v for v, _ in values]
    worst = max(values)
    return sum(cc) / len(cc), 100.0 * sum(v > 10 for v in cc) / len(cc), worst[0], worst[1]


def cuda_calls(files: list[Path]) -> tuple[int, int]:
    """Calls ``<anything>.cuda(...)`` in the code (AST: docstrings and comments do not count)
    and the number of files holding them."""
    calls = nfiles = 0
    for _, tree in parsed(files):
        n = sum(
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "cuda"
            for node in ast.walk(tree)
        )
        calls += n
        nfiles += n > 0
    return calls, nfiles


def measure_package(lib: Library) -> list[Measure]:
    """Every static code figure of the installed package."""
    names = [
        ("lines of code", "SLOC"),
        ("detector code", "SLOC"),
        ("ruff findings", "per 1k SLOC"),
        ("docstring coverage", "%"),
        ("type-hint coverage", "%"),
        ("mean cyclomatic complexity", ""),
        ("functions with complexity > 10", "%"),
        ("hard-coded .cuda( calls", ""),
    ]
    root = lib.package_dir()
    if root is None:
        why = f"{lib.package} is not installed here"
        return [na(lib.key, A, n, "static analysis of the package", why, u) for n, u in names]
    files = python_files(root)
    total = sloc(files)
    det = sloc(python_files(root / lib.detector_subpackage))
    n_ruff, codes = ruff_findings(root)
    hints, slots = hint_coverage(files)
    mean_cc, share_c, worst, where = complexity(files)
    cuda, cuda_files = cuda_calls(files)
    top = ", ".join(f"{c} ×{n}" for c, n in codes.most_common(4))
    return [
        Measure(
            lib.key, A, "lines of code", total, f"radon raw SLOC of {len(files)} .py files", "SLOC"
        ),
        Measure(
            lib.key,
            A,
            "detector code",
            det,
            f"radon raw SLOC of {lib.package}/{lib.detector_subpackage}",
            "SLOC",
        ),
        Measure(
            lib.key,
            A,
            "ruff findings",
            1000.0 * n_ruff / max(total, 1),
            f"ruff --isolated --select {RUFF_RULES} --ignore {RUFF_IGNORE}",
            "per 1k SLOC",
            detail=f"{n_ruff} findings; most frequent: {top}",
        ),
        Measure(
            lib.key,
            A,
            "docstring coverage",
            docstring_coverage(root),
            "interrogate, default settings",
            "%",
        ),
        Measure(
            lib.key,
            A,
            "type-hint coverage",
            hints,
            "annotated parameters and returns of every function (AST)",
            "%",
            detail=f"{slots} annotatable slots",
        ),
        Measure(
            lib.key,
            A,
            "mean cyclomatic complexity",
            mean_cc,
            "radon cc, mean over functions and methods",
        ),
        Measure(
            lib.key,
            A,
            "functions with complexity > 10",
            share_c,
            "radon cc rank C or worse",
            "%",
            detail=f"max {worst} in {where}",
        ),
        Measure(
            lib.key,
            A,
            "hard-coded .cuda( calls",
            cuda,
            "calls x.cuda(...) in the AST",
            detail=f"in {cuda_files} files",
        ),
    ]


# --- tests -------------------------------------------------------------------------------------


def pytorch_ood_sdist_tests(version: str, cache: Path, download: bool = True) -> Path | None:
    """pytorch-ood's tests, from its source distribution on the index (its wheel has none),
    downloaded once into ``cache``."""
    target = cache / f"pytorch_ood-{version}"
    if (target / "tests").is_dir():
        return target / "tests"
    if not download:
        return None
    cache.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-binary",
            ":all:",
            f"pytorch-ood=={version}",
            "-d",
            str(cache),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    archives = sorted(cache.glob(f"pytorch_ood-{version}.tar.gz"))
    if r.returncode != 0 or not archives:
        return None
    with tarfile.open(archives[0]) as tar:
        tar.extractall(cache, filter="data")  # whole: its tests import ``src.pytorch_ood``
    return target / "tests" if (target / "tests").is_dir() else None


def tests_dir(lib: Library, cache: Path, download: bool = True) -> Path | None:
    """Where the library's test source is on this machine (None when it is not)."""
    if lib.key == "ood_bench":
        return REPO / "tests"
    if lib.key == "pytorch-ood":
        version = lib.version()
        return pytorch_ood_sdist_tests(version, cache, download) if version else None
    src = lib.source_dir()
    return src / "tests" if src is not None and (src / "tests").is_dir() else None


def count_tests(root: Path) -> tuple[int, int]:
    """Test files (``test_*.py``/``*_test.py``) and test functions (``test*``) under ``root``."""
    files = [
        p for p in python_files(root) if p.name.startswith("test_") or p.stem.endswith("_test")
    ]
    funcs = 0
    for _, tree in parsed(files):
        funcs += sum(
            isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name.startswith("test")
            for n in ast.walk(tree)
        )
    return len(files), funcs


SUMMARY = re.compile(r"(\d+) (passed|failed|errors?|skipped|deselected|xfailed|xpassed)")


def run_tests(root: Path, timeout: float) -> tuple[dict[str, int], str]:
    """pytest on ``root`` from its parent folder (its own conftest and config, ``addopts``
    cleared: OpenOOD's asks for coverage plugins that are not installed here, and one fixed
    command line for all), collection errors not fatal; counts by outcome."""
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-o",
        "addopts=",
        "--continue-on-collection-errors",
        str(root.resolve()),
    ]
    try:
        r = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, cwd=root.resolve().parent
        )
    except subprocess.TimeoutExpired:
        return {}, f"timed out after {timeout:.0f} s"
    tail = [ln for ln in r.stdout.splitlines() if ln.strip()][-1:] or [r.stderr.strip()[-200:]]
    counts: dict[str, int] = {}
    for n, what in SUMMARY.findall(tail[0]):
        counts[what.rstrip("s") if what.startswith("error") else what] = int(n)
    return counts, tail[0].strip("= ")[:200]


def measure_tests(
    lib: Library, cache: Path, run: bool, timeout: float, download: bool = True
) -> list[Measure]:
    """Tests in the installed package, tests in the source, and their outcome here."""
    out = []
    root = lib.package_dir()
    if root is not None:
        _, shipped = count_tests(root)
        out.append(
            Measure(
                lib.key,
                A,
                "test functions in the installed package",
                shipped,
                "test* functions in test_*.py under the package directory",
            )
        )
    else:
        out.append(
            na(
                lib.key,
                A,
                "test functions in the installed package",
                "",
                f"{lib.package} is not installed here",
            )
        )
    tdir = tests_dir(lib, cache, download)
    method = f"test functions in {lib.tests_hint}"
    if tdir is None:
        why = f"no test source found ({lib.tests_hint})"
        if not download and lib.key == "pytorch-ood":
            why = "its sdist was not downloaded (--offline)"
        out.append(na(lib.key, A, "test functions in the source", method, why))
        out.append(na(lib.key, A, "tests passing here", "pytest", why, "%"))
        return out
    files, funcs = count_tests(tdir)
    out.append(
        Measure(
            lib.key,
            A,
            "test functions in the source",
            funcs,
            method,
            detail=f"{files} test files in {shown(tdir)}",
        )
    )
    if not run:
        out.append(na(lib.key, A, "tests passing here", "pytest", "not run (no --run-tests)", "%"))
        return out
    counts, tail = run_tests(tdir, timeout)
    ran = sum(counts.get(k, 0) for k in ("passed", "failed", "error"))
    if ran == 0:
        why = f"pytest ran no test: {tail}"
        out.append(na(lib.key, A, "tests passing here", "pytest", why, "%"))
    else:
        out.append(
            Measure(
                lib.key,
                A,
                "tests passing here",
                100.0 * counts.get("passed", 0) / ran,
                "pytest -q -o addopts= --continue-on-collection-errors: passed / "
                "(passed + failed + errors)",
                "%",
                detail=tail,
            )
        )
    return out

"""Installation figures: package index, resolver, declared dependencies, size, imports.

pip is asked (``pip index versions``, ``pip install --dry-run --report``) rather than reimplementing
resolution; import failures and times are measured in fresh interpreters so that nothing this
process has imported counts.
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from libcompare.code import parsed, python_files
from libcompare.libraries import REPO, Library, shown
from libcompare.measure import Measure, na
from ood_bench.environment import installed_version

A = "installation"
TORCH_SPECS = ("torch", "torchvision")


def _pip(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run this interpreter's pip with ``args``, output captured."""
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    return subprocess.run(
        [sys.executable, "-m", "pip", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def _last_error(text: str) -> str:
    """The last error line of a tool's output (or its last line), shortened."""
    lines = [ln for ln in text.splitlines() if ln.startswith("ERROR") or "Error" in ln]
    return (lines[-1] if lines else text.strip().splitlines()[-1] if text.strip() else "")[:200]


def on_index(lib: Library) -> Measure:
    """Whether the configured package index (PyPI or its mirror) serves the distribution."""
    method = f"pip index versions {lib.dist}"
    try:
        r = _pip("index", "versions", lib.dist, timeout=120)
    except subprocess.TimeoutExpired:
        return na(lib.key, A, "on the package index", method, "pip index timed out")
    found = r.returncode == 0 and f"{lib.dist} (" in r.stdout
    detail = r.stdout.splitlines()[0] if found else _last_error(r.stderr)
    return Measure(lib.key, A, "on the package index", found, method, detail=detail)


def install_spec(lib: Library) -> str | None:
    """What ``pip install`` takes for this library here: the index release, or its checkout."""
    if lib.key == "ood_bench":
        return str(REPO)
    if lib.source_dir() is not None:
        return str(lib.source_dir())
    version = lib.version()
    return f"{lib.dist}=={version}" if version else None


def resolve(*specs: str) -> tuple[set[str] | None, str]:
    """The distributions ``pip install *specs`` would install into an empty environment (names
    canonicalised, the specs' own included), or None and pip's error."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        args = ["install", "--dry-run", "--ignore-installed", "--quiet", "--report", str(report)]
        try:
            r = _pip(*args, *specs)
        except subprocess.TimeoutExpired:
            return None, "pip's resolver timed out (300 s)"
        if r.returncode != 0 or not report.is_file():
            return None, _last_error(r.stderr)
        items = json.loads(report.read_text())["install"]
    return {canonicalize_name(i["metadata"]["name"]) for i in items}, ""


def resolved_measures(lib: Library, torch_closure: set[str] | None) -> list[Measure]:
    """Packages pulled in: all of them, and those beyond torch + torchvision."""
    spec = install_spec(lib)
    method = "pip install --dry-run --ignore-installed --report (into an empty environment)"
    if spec is None:
        why = f"{lib.dist} is not installed here, so there is no release or checkout to resolve"
        return [na(lib.key, A, "packages pulled in", method, why)]
    names, error = resolve(spec)
    shown_spec = shown(spec) if Path(spec).exists() else spec
    if names is None:
        return [
            Measure(lib.key, A, "resolves with pip", False, method, detail=error),
            na(lib.key, A, "packages pulled in", method, f"pip cannot resolve it: {error}"),
        ]
    own = canonicalize_name(lib.dist)
    deps = names - {own}
    out = [
        Measure(lib.key, A, "resolves with pip", True, method, detail=shown_spec),
        Measure(
            lib.key, A, "packages pulled in", len(deps), method, detail=", ".join(sorted(deps))
        ),
    ]
    if torch_closure is None:
        out.append(na(lib.key, A, "packages beyond torch", method, "torch did not resolve"))
    else:
        extra = deps - torch_closure
        out.append(
            Measure(
                lib.key,
                A,
                "packages beyond torch",
                len(extra),
                method + ", minus what torch + torchvision pull in",
                detail=", ".join(sorted(extra)),
            )
        )
    return out


def torch_closure() -> set[str] | None:
    """What the installed torch and torchvision pull into an empty environment."""
    names, _ = resolve(*(f"{n}=={installed_version(n)}" for n in TORCH_SPECS))
    return names


def _requirements(dist: str, extras: bool = False) -> list[Requirement] | None:
    """A distribution's requirements, unconditional ones only unless ``extras``; None when it
    is not installed."""
    try:
        reqs = md.requires(dist) or []
    except md.PackageNotFoundError:
        return None
    out = []
    for text in reqs:
        try:
            req = Requirement(text)
        except InvalidRequirement:
            continue
        if extras or req.marker is None or req.marker.evaluate({"extra": ""}):
            out.append(req)
    return out


def declared_requirements(lib: Library) -> list[Requirement] | None:
    """The library's unconditional requirements (no extras), None when not installed."""
    return _requirements(lib.dist)


def dependency_measures(lib: Library) -> list[Measure]:
    """Declared direct dependencies, and those not installed or at a version outside the spec."""
    reqs = declared_requirements(lib)
    method = "importlib.metadata.requires (extras excluded)"
    if reqs is None:
        why = f"{lib.dist} is not installed here"
        return [
            na(lib.key, A, "direct dependencies", method, why),
            na(lib.key, A, "declared dependencies unmet here", method, why),
        ]
    unmet = []
    for req in reqs:
        if not _installed_ok(req):
            have = installed_version(req.name)
            unmet.append(f"{req} ({'have ' + have if have else 'not installed'})")
    names = ", ".join(sorted(str(r) for r in reqs))
    return [
        Measure(lib.key, A, "direct dependencies", len(reqs), method, detail=names),
        Measure(
            lib.key,
            A,
            "declared dependencies unmet here",
            len(unmet),
            method + " vs the installed versions",
            detail="; ".join(unmet),
        ),
    ]


def _top_modules(target: Path) -> list[str]:
    """Top-level import names of what ``pip install --target`` put in ``target``."""
    names: set[str] = set()
    for info in target.glob("*.dist-info"):
        top = info / "top_level.txt"
        if top.is_file():
            names.update(n.strip() for n in top.read_text().split() if n.strip())
            continue
        for line in (
            (info / "RECORD").read_text().splitlines() if (info / "RECORD").is_file() else []
        ):
            first = line.split(",")[0].split("/")[0]
            if first.endswith((".dist-info", ".data")) or first in ("bin", "..", "__pycache__"):
                continue
            names.add(first.removesuffix(".py"))
    return sorted(n for n in names if n.isidentifier() and not n.startswith("_"))


def _import_failure(module: str, target: str) -> str | None:
    """Import ``module`` in a fresh interpreter with ``target`` after this environment on the
    path (the environment's versions win, as they would in an install): None or the error."""
    code = f"import site; site.addsitedir({target!r}); import {module}"
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=target
    )
    return None if r.returncode == 0 else _last_error(r.stderr)


def try_requirement(req: Requirement) -> str:
    """Install one requirement into a scratch folder and import its modules in a fresh
    interpreter on top of this environment: ``"ok"`` or what failed, and why. Installed without
    its dependencies first; again with them when an import misses one."""
    with tempfile.TemporaryDirectory() as tmp:
        for extra in (["--no-deps"], []):
            try:
                r = _pip("install", "--quiet", *extra, "--target", tmp, str(req))
            except subprocess.TimeoutExpired:
                return "install fails: pip timed out"
            if r.returncode != 0:
                return f"install fails: {_last_error(r.stderr)}"
            failures = {m: _import_failure(m, tmp) for m in _top_modules(Path(tmp))}
            failures = {m: e for m, e in failures.items() if e}
            if not failures:
                return "ok"
            module, error = next(iter(failures.items()))
            if "ModuleNotFoundError" not in error:
                break  # a real failure, not a dependency left out by --no-deps
        return f"import {module} fails: {error}"


def unmet_probe(lib: Library) -> Measure:
    """Of the declared dependencies missing here, those that fail to install or to import."""
    name = "unmet dependencies failing here"
    method = (
        "pip install --target <scratch> <requirement> (without its dependencies, then with them "
        "if an import misses one), then import its modules in a fresh interpreter"
    )
    reqs = declared_requirements(lib)
    if reqs is None:
        return na(lib.key, A, name, method, f"{lib.dist} is not installed here")
    unmet = [r for r in reqs if not _installed_ok(r)]
    outcomes = {r.name: try_requirement(r) for r in unmet}
    failing = {n: o for n, o in outcomes.items() if o != "ok"}
    detail = "; ".join(f"{n}: {o}" for n, o in outcomes.items())
    return Measure(lib.key, A, name, len(failing), method, detail=detail)


def _installed_ok(req: Requirement) -> bool:
    """Whether ``req`` is installed at a version its specifier accepts."""
    version = installed_version(req.name)
    return bool(version) and (
        not req.specifier or req.specifier.contains(version, prereleases=True)
    )


def imported_modules(root: Path) -> set[str]:
    """Top-level names of every absolute import in a package's code (AST), except imports
    guarded by ``try: … except ImportError`` (optional dependencies, handled)."""
    guard = {"ImportError", "ModuleNotFoundError", "Exception", "BaseException"}
    names: set[str] = set()
    for _, tree in parsed(python_files(root)):
        guarded = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Try) and any(
                h.type is None
                or any(n.id in guard for n in ast.walk(h.type) if isinstance(n, ast.Name))
                for h in node.handlers
            ):
                guarded.update(id(n) for stmt in node.body for n in ast.walk(stmt))
        for node in ast.walk(tree):
            if id(node) in guarded:
                continue
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


def _installed_closure(names: set[str]) -> set[str]:
    """``names`` and, through the installed metadata, everything they require (no extras)."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo += [canonicalize_name(r.name) for r in _requirements(name) or []]
    return seen


def undeclared_imports(lib: Library) -> Measure:
    """Third-party modules the code imports that no declared requirement (extras included)
    provides: what a user learns about only when a code path fails."""
    name = "imports of undeclared packages"
    method = (
        "unguarded absolute imports in the package (AST) minus the standard library, itself "
        "and what its declared requirements (extras included) and their dependencies provide"
    )
    root = lib.package_dir()
    reqs = _requirements(lib.dist, extras=True)
    if root is None or reqs is None:
        return na(lib.key, A, name, method, f"{lib.dist} is not installed here")
    declared = {canonicalize_name(r.name) for r in reqs}
    provided = _installed_closure(declared)
    providers = md.packages_distributions()
    missing = []
    for module in sorted(imported_modules(root)):
        if module in sys.stdlib_module_names or module in (lib.package, "__future__"):
            continue
        dists = {canonicalize_name(d) for d in providers.get(module, [])}
        if dists & provided or (not dists and canonicalize_name(module) in declared):
            continue  # provided, or declared under its own name but not installed here
        missing.append(module if dists else f"{module} (not installed)")
    return Measure(lib.key, A, name, len(missing), method, detail=", ".join(missing))


def package_size(lib: Library) -> Measure:
    """Size on disk of the package directory (code and data, no __pycache__)."""
    method = "bytes of the installed package directory, __pycache__ excluded"
    d = lib.package_dir()
    if d is None:
        return na(lib.key, A, "package size", method, f"{lib.package} is not importable", "MiB")
    size = sum(
        p.stat().st_size for p in d.rglob("*") if p.is_file() and "__pycache__" not in p.parts
    )
    return Measure(lib.key, A, "package size", size / 2**20, method, "MiB")


# Runs in a fresh interpreter: import argv[1]; while it fails, find the third-party module the
# error comes from, serve an empty stub for it and retry. Prints the failures as JSON.
_PROBE = r"""
import importlib, importlib.abc, importlib.util, json, sys, time, traceback, types
target, pkg = sys.argv[1], sys.argv[1].split(".")[0]
pre = [m for m in sys.argv[2].split(",") if m]

class Stubs(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    tops = set()
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in self.tops:
            return importlib.util.spec_from_loader(name, self, is_package=True)
    def create_module(self, spec):
        m = types.ModuleType(spec.name); m.__path__ = []
        m.__getattr__ = lambda a: (_ for _ in ()).throw(AttributeError(a)) if a.startswith("__") \
            else type(a, (), {})
        return m
    def exec_module(self, m):
        pass

stubs = Stubs(); sys.meta_path.insert(0, stubs); stubs.tops.update(pre)

def culprit(e):
    if isinstance(e, ModuleNotFoundError) and e.name:
        return e.name.split(".")[0]
    for fr in reversed(traceback.extract_tb(e.__traceback__)):
        parts = fr.filename.replace("\\", "/").split("/site-packages/")
        if len(parts) == 2:
            top = parts[1].split("/")[0].removesuffix(".py")
            if top != pkg:
                return top
    return None

failures, ok, seconds = [], False, None
for _ in range(20):
    t0 = time.perf_counter()
    try:
        importlib.import_module(target)
        ok, seconds = True, time.perf_counter() - t0
        break
    except Exception as e:
        top = culprit(e)
        failures.append({"module": top, "error": f"{type(e).__name__}: {e}"[:300]})
        if top is None or top in stubs.tops:
            break
        stubs.tops.add(top)
        for m in [m for m in sys.modules if m.split(".")[0] in (pkg, top)]:
            del sys.modules[m]
print(json.dumps({"ok": ok, "failures": failures, "seconds": seconds}))
"""


def probe_import(module: str, stubs: tuple[str, ...] = ()) -> dict:
    """Import ``module`` in a fresh interpreter (with ``stubs`` served empty from the start)."""
    r = subprocess.run(
        [sys.executable, "-c", _PROBE, module, ",".join(stubs)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tempfile.gettempdir(),  # not the repo: import what is installed
    )
    if r.returncode != 0 or not r.stdout.strip():
        return {"ok": False, "failures": [{"module": None, "error": _last_error(r.stderr)}]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def import_failures(lib: Library) -> tuple[Measure, tuple[str, ...]]:
    """Modules that fail when the library's API module is imported (and why), and the
    third-party modules that had to be stubbed for the import to succeed."""
    mod = lib.api_module
    method = f"import {mod} in a fresh interpreter; each failing third-party module is stubbed"
    if lib.package_dir() is None:
        return na(lib.key, A, "import failures", method, f"{lib.package} is not installed"), ()
    failures = probe_import(mod)["failures"]
    stubbed = tuple(f["module"] for f in failures if f["module"])
    detail = "; ".join(f"{f['module']}: {f['error']}" for f in failures)
    return Measure(lib.key, A, "import failures", len(failures), method, detail=detail), stubbed


def import_times(
    libs: list[Library], stubs: dict[str, tuple[str, ...]], runs: int = 5
) -> tuple[list[Measure], float | None]:
    """Median import time of each library's API module and of torch alone, in fresh
    interpreters taken round-robin (so the machine's load hits all alike)."""
    targets = [("torch", "torch", ())] + [
        (lib.key, lib.api_module, stubs.get(lib.key, ()))
        for lib in libs
        if lib.package_dir() is not None
    ]
    times: dict[str, list[float]] = {key: [] for key, _, _ in targets}
    for _ in range(runs):
        for key, module, stubbed in targets:
            t = probe_import(module, stubbed).get("seconds")
            if t is not None:
                times[key].append(t)
    torch_s = statistics.median(times["torch"]) if times["torch"] else None
    out = []
    for lib in libs:
        stubbed = stubs.get(lib.key, ())
        method = (
            f"median of {runs} fresh interpreters, `import {lib.api_module}`"
            + (f" with {', '.join(stubbed)} stubbed" if stubbed else "")
            + ", torch included; round-robin with the other libraries and torch alone"
        )
        if lib.package_dir() is None:
            out.append(
                na(lib.key, A, "import time", method, f"{lib.package} is not installed", "s")
            )
        elif not times[lib.key]:
            out.append(
                na(lib.key, A, "import time", method, "the import fails even with stubs", "s")
            )
        else:
            out.append(
                Measure(lib.key, A, "import time", statistics.median(times[lib.key]), method, "s")
            )
    return out, torch_s


def measure(lib: Library, closure: set[str] | None, resolve_deps: bool) -> list[Measure]:
    """Every installation figure of one library but its import time (:func:`import_times`
    takes them all together)."""
    out = (
        [on_index(lib)]
        if resolve_deps
        else [
            na(lib.key, A, "on the package index", "pip index versions", "not queried (--offline)")
        ]
    )
    if resolve_deps:
        out += resolved_measures(lib, closure)
    else:
        out.append(na(lib.key, A, "packages pulled in", "pip --dry-run", "not run (--offline)"))
    out += dependency_measures(lib)
    out.append(undeclared_imports(lib))
    if resolve_deps:
        out.append(unmet_probe(lib))
    else:
        out.append(
            na(lib.key, A, "unmet dependencies failing here", "pip install", "not run (--offline)")
        )
    out.append(package_size(lib))
    return out

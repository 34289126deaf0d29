"""The three code bases compared, and where each one's files are found on this machine."""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

from ood_bench.environment import installed_version

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts"  # what puts this study (``libcompare``) on the import path


def module_files(rel: str) -> list[Path]:
    """The .py files of a repo-relative module path: every ``*.py`` under the package folder
    ``rel``, or the module file ``rel.py``; empty when neither exists. A file and a package
    of the same module are measured alike."""
    path = REPO / rel
    if path.is_dir():
        return sorted(p for p in path.rglob("*.py") if "__pycache__" not in p.parts)
    file = path.with_name(path.name + ".py")
    return [file] if file.is_file() else []


def shown(path: str | Path) -> str:
    """A path for the report: relative to the repository, else ``…/<name>`` (no machine paths
    in committed results)."""
    p = Path(path).resolve()
    return str(p.relative_to(REPO)) if p.is_relative_to(REPO) else f"…/{p.name}"


@dataclass(frozen=True)
class Library:
    """One compared code base."""

    key: str  # as in the results' ``library`` column
    label: str  # column title
    dist: str  # distribution name (importlib.metadata, pip)
    package: str  # top-level import package
    api_module: str  # what a user imports to score a detector
    detector_subpackage: str  # where its detectors live, relative to the package
    adapter: tuple[str, ...]  # ood-bench's adapter modules for it (repo-relative, no .py)
    example: str  # module of its minimal example (libcompare.examples.<example>)
    tests_hint: str  # where its tests come from

    def package_dir(self) -> Path | None:
        """The installed package's directory, or None when it is not importable."""
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            return None
        return Path(next(iter(spec.submodule_search_locations))).resolve()

    def adapter_paths(self) -> list[str]:
        """The adapter modules that exist here, each as its file or its package folder
        (repo-relative): a module missing here (merged into a package) is left out."""
        out = []
        for rel in self.adapter:
            if (REPO / rel).is_dir():
                out.append(f"{rel}/")
            elif module_files(rel):
                out.append(f"{rel}.py")
        return out

    def adapter_files(self) -> list[Path]:
        """Every .py file of ood-bench's adapter for this library (none for ood-bench)."""
        files = [f for rel in self.adapter for f in module_files(rel)]
        if self.adapter and not files:
            raise FileNotFoundError(
                f"none of {self.label}'s adapter modules {list(self.adapter)} is in {REPO}: "
                "fix Library.adapter in scripts/libcompare/libraries.py"
            )
        return files

    def version(self) -> str | None:
        """The installed version, None when not installed."""
        return installed_version(self.dist) or None

    def source_dir(self) -> Path | None:
        """The source checkout an editable install points at (its tests live there)."""
        try:
            text = md.distribution(self.dist).read_text("direct_url.json")
        except md.PackageNotFoundError:
            return None
        if not text:
            return None
        url = json.loads(text).get("url", "")
        if url.startswith("file://"):
            path = Path(url.removeprefix("file://"))
            return path if path.is_dir() else None
        return None


LIBRARIES: dict[str, Library] = {
    "pytorch-ood": Library(
        key="pytorch-ood",
        label="pytorch-ood",
        dist="pytorch-ood",
        package="pytorch_ood",
        api_module="pytorch_ood.detector",
        detector_subpackage="detector",
        adapter=("ood_bench/detectors/pytorch_ood", "ood_bench/detectors/nets"),
        example="pytorch_ood_mahalanobis",
        tests_hint="the PyPI sdist (the wheel ships none), downloaded with pip download",
    ),
    "openood": Library(
        key="openood",
        label="OpenOOD",
        dist="openood",
        package="openood",
        api_module="openood.postprocessors",
        detector_subpackage="postprocessors",
        adapter=("ood_bench/detectors/openood",),
        example="openood_mds",
        tests_hint="the git checkout it is installed from (pip install -e)",
    ),
    "ood_bench": Library(
        key="ood_bench",
        label="ood-bench",
        dist="ood-bench",
        package="ood_bench",
        api_module="ood_bench.api",
        detector_subpackage="detectors",
        adapter=(),
        example="ood_bench_mahalanobis",
        tests_hint="this repository's tests/",
    ),
}

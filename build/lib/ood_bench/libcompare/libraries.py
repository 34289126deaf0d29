"""The three code bases compared, and where each one's files are found on this machine."""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

from ood_bench.environment import installed_version

REPO = Path(__file__).resolve().parents[2]


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
    adapter: tuple[str, ...]  # ood-bench's adapter files for it (repo-relative)
    example: str  # module of its minimal example (ood_bench.libcompare.examples.<example>)
    tests_hint: str  # where its tests come from

    def package_dir(self) -> Path | None:
        """The installed package's directory, or None when it is not importable."""
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            return None
        return Path(next(iter(spec.submodule_search_locations))).resolve()

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
        adapter=(
            *(
                f"ood_bench/detectors/pytorch_ood/{m}.py"
                for m in ("__init__", "adapter", "bound", "catalogue", "feeds")
            ),
            "ood_bench/detectors/nets.py",  # model helpers, written for this adapter first
        ),
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
        adapter=tuple(
            f"ood_bench/detectors/openood/{m}.py"
            for m in ("__init__", "adapter", "catalogue", "configs", "device", "loader", "net")
        ),
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

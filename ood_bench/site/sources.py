"""Where every number of the site comes from: the file under results/ and the command that
wrote it, and the commit and date the site is generated from (taken from the data, never from
the clock, so the same results give the same bytes)."""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatch

import pandas as pd

# (pattern of a path under results/, command that writes it); first match wins.
# {name}: the file's stem; the Makefile's `paper` target has every command in full.
PRODUCERS: list[tuple[str, str]] = [
    (
        "raw/*.csv",
        "make paper: the sweep writing outputs/{name}, then "
        "python scripts/collect.py outputs/{name} --out results/raw/{name}.csv",
    ),
    (
        "calib_leak/*.csv",
        "make paper: python -m ood_bench.run -m experiment=cifar10_offline seed=1,2 "
        "calib_source=train … hydra.sweep.dir=outputs/cifar10_leak, then scripts/collect.py",
    ),
    (
        "runtime/scoring_cost.csv",
        "python scripts/bench_scoring.py --backbones lenet_mnist cifar_cnn "
        "--csv results/runtime/scoring_cost.csv",
    ),
    ("libraries/defaults.csv", "python scripts/library_defaults.py --csv {path}"),
    (
        "libraries/*",
        "make paper: python scripts/compare_libraries.py results/raw --out results/libraries "
        "--run-tests",
    ),
    (
        "crosscheck/openood_crosscheck_*.csv",
        "make paper: python scripts/openood_crosscheck.py benchmark=… --csv {path}",
    ),
    (
        "novelty/certification/*",
        "make novelty: python scripts/novelty_certification.py --out {path}",
    ),
    (
        "novelty/*.csv",
        "make novelty: python -m ood_bench.run_novelty -m …, then scripts/collect.py --out {path}",
    ),
    ("novelty/*", "make novelty: python scripts/novelty_report.py results/novelty/*.csv …"),
    ("analysis/stat_maha_energy/*", "make paper: python scripts/ablate_detector.py"),
    (
        "analysis/*_stat_masf/*",
        "make paper: python scripts/analyze_detector.py --detector stat_masf",
    ),
    ("analysis/*", "python scripts/analyze_detector.py or scripts/ablate_detector.py"),
    ("figures/*", "make paper: python scripts/make_figures.py results/raw --out results/figures"),
]


@dataclass(frozen=True, order=True)
class Source:
    """A file under the results folder (``path`` relative to it, with ``/``)."""

    path: str

    @property
    def name(self) -> str:
        """The repository path a reader can open: ``results/<path>``."""
        return f"results/{self.path}"

    @property
    def command(self) -> str:
        """The command that writes this file."""
        stem = self.path.rsplit("/", 1)[-1].split(".", 1)[0]
        for pattern, command in PRODUCERS:
            if fnmatch(self.path, pattern):
                return command.format(name=stem, path=self.name)
        return "(no known command)"


def stamp(df: pd.DataFrame) -> tuple[str, str]:
    """(commit, date) of the newest row of the results: what the site is generated from."""
    d = df[df["timestamp"].astype(str) != ""]
    if d.empty:
        return "unknown", "unknown"
    newest = d.sort_values(["timestamp", "git_sha"], kind="stable").iloc[-1]
    return str(newest["git_sha"]) or "unknown", str(newest["timestamp"])

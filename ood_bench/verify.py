"""Re-derive every metric of a results folder from its stored per-sample scores.

    ood-bench verify results/raw/digits_all.csv  # scores: results/scores/digits_all/
    ood-bench verify outputs/my_sweep             # each job's scores.npz

RobustBench re-evaluates its entries; this is ood-bench's equivalent without re-running a
network: for each job with a scores file (:mod:`ood_bench.scores`), the OOD metrics
(``ood_bench.metrics.ood_metrics``) and the decision metrics (``fpr_at_<a>``, ``tpr_at_<a>``,
``bh_fdr_<a>``, ``bh_power_<a>``) are computed again from the scores and p-values and compared
with the rows; any row that differs beyond the CSV's float precision (``%.6g``: relative 1e-5)
is reported, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import logging
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ood_bench.metrics import fpr_at_alpha, ood_metrics, pvalue_metrics
from ood_bench.results import read_results
from ood_bench.scores import SCORES_FILE, JobScores, load

log = logging.getLogger("ood_bench.verify")

RTOL = 1e-5  # results CSVs keep 6 significant digits
ATOL = 1e-9


@dataclass
class Difference:
    """One row whose stored value is not what its scores give."""

    run_id: str
    detector: str
    ood_dataset: str
    metric: str
    stored: float
    recomputed: float


@dataclass
class Report:
    """What :func:`verify_frame` checked and found."""

    rows_checked: int = 0
    jobs_checked: int = 0
    jobs_without_scores: list[str] = field(default_factory=list)
    differences: list[Difference] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No difference, and at least one row checked."""
        return not self.differences and self.rows_checked > 0


def recompute(scores: JobScores) -> dict[tuple[str, str], float]:
    """(ood_dataset, metric) → value for every metric the scores determine ("" = job-level)."""
    id_set = scores.id_set
    out: dict[tuple[str, str], float] = {}
    if id_set.pvalue is not None:
        out.update({("", m): v for m, v in fpr_at_alpha(id_set.pvalue).items()})
    for name, s in scores.ood_sets.items():
        out.update({(name, m): v for m, v in ood_metrics(id_set.score, s.score).items()})
        if id_set.pvalue is not None and s.pvalue is not None:
            pm = pvalue_metrics(id_set.pvalue, s.pvalue)
            out.update({(name, m): v for m, v in pm.items()})
    return out


def verify_frame(df: pd.DataFrame, find: Callable[[str], Path | None]) -> Report:
    """Check the ok rows of ``df`` against the scores ``find(run_id)`` points to."""
    report = Report()
    ok = df[df["status"] == "ok"]
    for run_id, rows in ok.groupby("run_id", sort=True):
        path = find(str(run_id))
        if path is None or not path.is_file():
            report.jobs_without_scores.append(str(run_id))
            continue
        expected = recompute(load(path))
        report.jobs_checked += 1
        for r in rows.itertuples(index=False):
            key = ("" if pd.isna(r.ood_dataset) else str(r.ood_dataset), str(r.metric))
            if key not in expected:
                continue
            report.rows_checked += 1
            new = expected[key]
            if not np.isclose(float(r.value), new, rtol=RTOL, atol=ATOL):
                report.differences.append(
                    Difference(str(run_id), str(r.detector), key[0], key[1], float(r.value), new)
                )
    return report


def scores_dir_for(csv: Path) -> Path:
    """Where the scores behind a collected CSV live: ``<results>/scores/<csv stem>/`` for a CSV
    in ``<results>/raw/``, else ``<csv stem>.scores/`` beside it."""
    csv = Path(csv)
    if csv.parent.name == "raw":
        return csv.parent.parent / "scores" / csv.stem
    return csv.with_suffix("").with_name(csv.stem + ".scores")


def job_dirs(sweep_dir: Path) -> dict[str, Path]:
    """run_id → the folder of each job under a sweep or run folder (its metrics.csv's)."""
    out: dict[str, Path] = {}
    for csv in sorted(Path(sweep_dir).rglob("metrics.csv")):
        try:
            run_ids = pd.read_csv(csv, usecols=["run_id"])["run_id"].unique()
        except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError):
            continue
        for rid in run_ids:
            out.setdefault(str(rid), csv.parent)
    return out


def collect_scores(sweep_dirs: Iterable[Path], df: pd.DataFrame, out_dir: Path) -> int:
    """Copy the scores of every ok run of ``df`` from its job folder to ``out_dir/<run_id>.npz``;
    returns how many were copied (runs without scores are left out, the log says how many)."""
    found: dict[str, Path] = {}
    for d in sweep_dirs:
        for rid, folder in job_dirs(d).items():
            if (folder / SCORES_FILE).is_file():
                found.setdefault(rid, folder / SCORES_FILE)
    wanted = sorted(set(df.loc[df["status"] == "ok", "run_id"].astype(str)))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    keep = {f"{rid}.npz" for rid in wanted if rid in found}
    for stale in out_dir.glob("*.npz"):
        if stale.name not in keep:
            stale.unlink()
    for rid in wanted:
        if rid in found:
            shutil.copyfile(found[rid], out_dir / f"{rid}.npz")
    missing = len(wanted) - len(keep)
    if missing:
        log.info(
            "%d of %d ok jobs have no scores file (stored before scores were kept, or "
            "store_scores=false)",
            missing,
            len(wanted),
        )
    return len(keep)


def verify_path(path: Path, scores: Path | None = None) -> Report:
    """Verify a collected CSV (scores in ``scores`` or :func:`scores_dir_for`) or a sweep /
    run folder (each job's ``scores.npz``)."""
    path = Path(path)
    if path.is_dir():
        dirs = job_dirs(path)
        frames = [read_results(d / "metrics.csv") for d in sorted(set(dirs.values()))]
        df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        if df.empty:
            return Report()
        return verify_frame(df, lambda rid: dirs[rid] / SCORES_FILE if rid in dirs else None)
    folder = Path(scores) if scores else scores_dir_for(path)
    return verify_frame(read_results(path), lambda rid: folder / f"{rid}.npz")


def main(argv: list[str] | None = None) -> int:
    """``python -m ood_bench.verify PATH ...``: exit 1 on any difference, or when no path has a
    job with stored scores (a path without any is reported, not an error: results kept before
    scores were)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("paths", nargs="+", type=Path, help="collected CSVs or sweep folders")
    p.add_argument(
        "--scores",
        type=Path,
        help="scores folder of a single CSV (default: "
        "results/scores/<stem>/ for results/raw/<stem>.csv)",
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    status, checked = 0, 0
    for path in args.paths:
        r = verify_path(path, args.scores)
        checked += r.rows_checked
        print(
            f"{path}: {r.rows_checked} rows of {r.jobs_checked} jobs recomputed from their "
            f"scores, {len(r.differences)} differ"
            + (
                f"; {len(r.jobs_without_scores)} jobs have no scores"
                if r.jobs_without_scores
                else ""
            )
        )
        for d in r.differences[:20]:
            print(
                f"  DIFFERS {d.run_id} {d.detector} {d.ood_dataset or '(job)'} {d.metric}: "
                f"stored {d.stored:.6g}, scores give {d.recomputed:.6g}"
            )
        if len(r.differences) > 20:
            print(f"  ... and {len(r.differences) - 20} more")
        if r.differences:
            status = 1
    if not checked:
        print("nothing to check: no job of these paths has a scores file")
        status = 1
    return status


if __name__ == "__main__":
    raise SystemExit(main())

"""Merge every job's metrics.csv under a sweep (or run) directory into one tidy CSV.

    ood-bench collect outputs/multirun/2026-11-28_12-00-00 --out results/raw/digits.csv

Works on any sweep directory, whether or not a Hydra callback ran. Each run is counted once
however many folders hold a copy of it, and each job (config hash × backbone checkpoint) keeps
its newest run.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ood_bench.environment import require_clean_tree
from ood_bench.results import backbone_conflicts, collect, write_csv
from ood_bench.verify import collect_scores, scores_dir_for

log = logging.getLogger("collect")


def main(argv: list[str] | None = None) -> int:
    """Merge the jobs' metrics.csv files into ``--out``; returns the exit code."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("sweep_dirs", nargs="+", type=Path, help="sweep or run directories")
    p.add_argument("--out", type=Path, required=True, help="merged CSV to write")
    p.add_argument(
        "--scores",
        type=Path,
        help="where the jobs' per-sample scores go as <run_id>.npz (default: results/scores/"
        "<stem>/ for results/raw/<stem>.csv, else <stem>.scores/ beside the CSV)",
    )
    p.add_argument("--no-scores", action="store_true", help="do not gather the scores")
    args = p.parse_args(argv)
    require_clean_tree(args.out, "ood-bench collect")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    df = collect(*args.sweep_dirs)
    write_csv(df, args.out)
    if not args.no_scores:
        scores_dir = args.scores or scores_dir_for(args.out)
        n = collect_scores(args.sweep_dirs, df, scores_dir)
        log.info("gathered the per-sample scores of %d jobs → %s", n, scores_dir)
    jobs = df.groupby("run_id")["status"].first()
    log.info(
        "collected %d rows from %d jobs (%d ok, %d failed) → %s",
        len(df),
        len(jobs),
        (jobs == "ok").sum(),
        (jobs == "failed").sum(),
        args.out,
    )
    for _, c in backbone_conflicts(df).iterrows():
        log.warning(
            "%s / %s seed %d: results from %d backbone checkpoints (%s): make_tables refuses "
            "to mix them (see its --newest-backbone)",
            c["benchmark"],
            c["backbone"],
            c["seed"],
            c["n_checkpoints"],
            ", ".join(s[:12] for s in c["sha256"]),
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

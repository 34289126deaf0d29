#!/usr/bin/env python
"""Merge every job's metrics.csv under a sweep (or run) directory into one tidy CSV.

    python scripts/collect.py outputs/multirun/2026-11-28_12-00-00 --out results/raw/digits.csv

Works on any sweep directory, whether or not a Hydra callback ran.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ood_bench.results import collect, write_csv

log = logging.getLogger("collect")


def main(argv: list[str] | None = None) -> int:
    """Merge the jobs' metrics.csv files into ``--out``; returns the exit code."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("sweep_dirs", nargs="+", type=Path, help="sweep or run directories")
    p.add_argument("--out", type=Path, required=True, help="merged CSV to write")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import pandas as pd

    df = pd.concat([collect(d) for d in args.sweep_dirs], ignore_index=True)
    write_csv(df, args.out)
    jobs = df.groupby("run_id")["status"].first()
    log.info(
        "collected %d rows from %d jobs (%d ok, %d failed) → %s",
        len(df),
        len(jobs),
        (jobs == "ok").sum(),
        (jobs == "failed").sum(),
        args.out,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python
"""Table of every pytorch-ood detector from a collected sweep: status, what it is fed, AUROC and
both FPR95 readings on the far sets of ``digits`` and the near set of ``digits_open``, fit time,
score time per sample and the detector's own forward passes.

    python scripts/pood_table.py results/raw/pood_all.csv --sweep outputs/pood_sweep \\
        --out results/tables/pood_all.md

The images each detector pushed through the network itself are the results' own
``detector_forward_samples`` rows; ``--sweep`` (the Hydra sweep directory) adds the sweep's wall
time, read from the job logs' time stamps.
"""

from __future__ import annotations

import argparse
import logging
import re
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from ood_bench.atomic import atomic_write_text
from ood_bench.detectors.pytorch_ood import (
    NOT_DETECTORS,
    STATUS,
    base_of,
    describe_feed,
    option_name,
    pood_classes,
)
from ood_bench.environment import require_clean_tree
from ood_bench.results import read_results

log = logging.getLogger("pood_table")
CONF = Path(__file__).resolve().parent.parent / "conf" / "detector"
STAMP = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]")


def wall_time(sweep: Path) -> float:
    """The sweep's wall time in seconds: first to last time stamp of its job logs."""
    stamps = []
    for log_path in sweep.glob("*/*.log"):
        found = (STAMP.match(x) for x in log_path.read_text().splitlines())
        stamps += [datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f") for m in found if m]
    return (max(stamps) - min(stamps)).total_seconds() if stamps else float("nan")


def metric(df: pd.DataFrame, bench: str, det: str, name: str, group: str | None) -> float:
    """Mean of ``name`` over the rows of (``bench``, ``det``), in OOD group ``group`` if given;
    NaN without rows."""
    d = df[(df.benchmark == bench) & (df.detector == det) & (df.metric == name)]
    if group is not None:
        d = d[d.ood_group == group]
    return float(d.value.mean()) if len(d) else np.nan


def status(df: pd.DataFrame, cls: str, det: str) -> str:
    """``supported`` when every job succeeded, else the known reason or the first error."""
    jobs = df[df.detector == det].groupby("benchmark")["status"].first()
    if jobs.empty:
        return "not run"
    if (jobs == "ok").all():
        return "supported"
    if cls in STATUS:
        return STATUS[cls]
    err = df[(df.detector == det) & (df.status == "failed")]["error"].iloc[0]
    return f"failed: {err[:120]}"


def build(df: pd.DataFrame, sweep: Path | None) -> tuple[str, pd.DataFrame]:
    """The summary text and one table row per pytorch-ood detector class."""
    classes = pood_classes()
    rows = []
    for cls in sorted(classes, key=str.lower):
        det = option_name(cls)
        cfg = yaml.safe_load((CONF / f"{det}.yaml").read_text())
        pct = lambda v: "–" if np.isnan(v) else f"{100 * v:.1f}"  # noqa: E731
        row = {
            "option": det,
            "class": cls,
            "base": base_of(classes[cls]).replace("Detector", "") or "Detector",
            "fed": describe_feed(cls, cfg.get("features"), cfg.get("fit_on") or "fit"),
            "status": status(df, cls, det),
            "far AUROC": pct(metric(df, "digits", det, "auroc", "far")),
            "far FPR95 (ID)": pct(metric(df, "digits", det, "fpr95_id", "far")),
            "far FPR95 (OOD)": pct(metric(df, "digits", det, "fpr95_ood", "far")),
            "near AUROC": pct(metric(df, "digits_open", det, "auroc", "near")),
            "near FPR95 (ID)": pct(metric(df, "digits_open", det, "fpr95_id", "near")),
            "near FPR95 (OOD)": pct(metric(df, "digits_open", det, "fpr95_ood", "near")),
        }
        fit_s = metric(df, "digits", det, "fit_s", None)
        score = metric(df, "digits", det, "score_ms_per_sample", None)
        row["fit (s)"] = "–" if np.isnan(fit_s) else f"{fit_s:.3f}"
        row["score (ms/sample)"] = "–" if np.isnan(score) else f"{score:.4f}"
        own = metric(df, "digits", det, "detector_forward_samples", None)
        row["detector fwd (digits)"] = "–" if np.isnan(own) else int(own)
        rows.append(row)
    table = pd.DataFrame(rows)
    for name in NOT_DETECTORS:
        log.info("pytorch_ood.detector.__all__ also exports %s: %s", name, NOT_DETECTORS[name])
    jobs = df.groupby("run_id").agg(status=("status", "first"))
    extract = df[df.metric == "forward_samples"]["value"].sum()
    own = df[df.metric == "detector_forward_samples"]["value"].sum()
    summary = [
        f"{len(jobs)} jobs ({(jobs.status == 'ok').sum()} ok, "
        f"{(jobs.status == 'failed').sum()} failed); extraction forward passes (rows "
        f"forward_samples): {int(extract)} images; detector forward passes (rows "
        f"detector_forward_samples): {int(own)} images",
    ]
    if sweep:
        summary.append(f"sweep wall time {wall_time(sweep):.0f} s")
    return "\n".join(summary), table


def main(argv: list[str] | None = None) -> int:
    """Print (and with ``--out`` write) the pytorch-ood table; returns the exit code."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("results", type=Path, help="collected CSV (scripts/collect.py)")
    p.add_argument("--sweep", type=Path, help="the sweep directory, for its wall time")
    p.add_argument("--out", type=Path, help="Markdown file to write")
    args = p.parse_args(argv)
    if args.out:
        require_clean_tree(args.out, "pood_table.py")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    df = read_results(args.results)
    df = df[df.detector.str.startswith("pood_")]
    summary, table = build(df, args.sweep)
    text = (
        "AUROC and FPR95 in %: far = mean over the four far sets of `digits`, near = "
        "`digits_6_7_8_9` of `digits_open`; FPR95 (ID) = OOD accepted at 95 % ID accepted, "
        "FPR95 (OOD) = ID rejected at 95 % OOD rejected. Fit and score times on `digits`.\n\n"
        + table.to_markdown(index=False)
        + "\n\n"
        + summary
    )
    print(text)
    if args.out:
        log.info("wrote %s", atomic_write_text(args.out, text + "\n"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

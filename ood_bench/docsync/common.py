"""Helpers of the documentation's generators: percentages, committed CSVs, per-detector means."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ood_bench import report
from ood_bench.results import read_results


def pct(v: float, digits: int = 1) -> str:
    """A fraction as a percentage without the sign: ``0.9822`` → ``98.2``; ``–`` for NaN."""
    return "–" if v is None or np.isnan(v) else f"{100 * v:.{digits}f}"


def _raw(results: Path, name: str) -> pd.DataFrame:
    return read_results(results / "raw" / f"{name}.csv")


def _means(df: pd.DataFrame) -> pd.DataFrame:
    """Per (benchmark, detector): mean AUROC over all / near OOD sets, its per-seed range,
    seeds, library, and the realised FPR at α = 0.05 (p-value detectors)."""
    agg = report.aggregate(df, "auroc")
    agg = agg[agg["ood_dataset"].isin(["mean all", "mean near", "mean far"])]
    wide = agg.pivot_table(
        index=["benchmark", "detector"], columns="ood_dataset", values=["mean", "n_seeds"]
    )
    out = pd.DataFrame(index=wide.index)
    for col in ("mean all", "mean near", "mean far"):
        out[col.split()[1]] = wide["mean"].get(col, np.nan)
    out["seeds"] = wide["n_seeds"].max(axis=1).astype(int)
    # per-seed range of the near mean (how much a seed moves it)
    d = report.ok_rows(df)
    near = d[(d["metric"] == "auroc") & (d["ood_group"] == "near")]
    per_seed = near.groupby(["benchmark", "detector", "seed"])["value"].mean()
    rng = per_seed.groupby(level=[0, 1]).agg(["min", "max"])
    out["near_min"], out["near_max"] = rng["min"], rng["max"]
    fpr = d[(d["metric"] == "fpr_at_0.05") & (d["ood_dataset"] == "")]
    out["fpr05"] = fpr.groupby(["benchmark", "detector"])["value"].mean()
    out["fpr05_min"] = fpr.groupby(["benchmark", "detector"])["value"].min()
    out["fpr05_max"] = fpr.groupby(["benchmark", "detector"])["value"].max()
    out["library"] = d.groupby(["benchmark", "detector"])["library"].first()
    return out.reset_index()


def _best(m: pd.DataFrame, library: str, col: str) -> pd.Series:
    sub = m[m["library"] == library].dropna(subset=[col])
    return sub.loc[sub[col].idxmax()]


def _md(table: pd.DataFrame) -> str:
    return table.to_markdown(index=False, disable_numparse=True)

"""The novelty summary table: one row per (benchmark / backbone / detector, scenario), means ±
std over seeds of the per-job rates, the controls' false alarms with their exact bound.

Shared by ``ood-bench novelty-report`` (novelty.md, :mod:`ood_bench.novelty.figures`), the
documentation's generated block and the results site.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from ood_bench.report import fmt_mean_std, ok_rows

GROUP = "novelty"
KEYS = ["benchmark", "backbone", "detector"]


def clopper_pearson_upper(k: int, n: int, conf: float = 0.95) -> float:
    """Exact one-sided upper confidence bound of a binomial proportion k/n."""
    if n == 0:
        return float("nan")
    return 1.0 if k >= n else float(stats.beta.ppf(conf, k + 1, n - k))


def _cell(vals: pd.Series, scale: float = 1.0, digits: int = 2) -> str:
    """``mean ± std`` of the values (scaled), ``–`` when there are none."""
    if vals.empty:
        return "–"
    std = vals.std(ddof=1) if len(vals) > 1 else np.nan
    return fmt_mean_std(vals.mean(), std, scale, digits)


def novelty_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (benchmark / backbone / detector, scenario): means ± std over seeds."""
    d = ok_rows(df)
    d = d[d["ood_group"] == GROUP]
    if d.empty:
        return pd.DataFrame()
    wide = d.pivot_table(
        index=KEYS + ["ood_dataset", "seed"], columns="metric", values="value", aggfunc="first"
    )
    rows = []
    for (bench, bb, det, scen), g in wide.groupby(level=[0, 1, 2, 3]):

        def col(m: str, g: pd.DataFrame = g) -> pd.Series:
            """The non-missing values of metric ``m`` in ``g`` (empty when absent)."""
            return g[m].dropna() if m in g else pd.Series(dtype=float)

        n_trials = col("n_trials")
        row = {
            "benchmark / backbone / detector": f"{bench} / {bb} / {det}",
            "scenario": scen,
            "seeds": len(g),
            "trials": int(n_trials.sum()) if not n_trials.empty else 0,
            "decision acc (%)": _cell(col("novelty_decision_acc"), 100, 1),
        }
        fa = col("novelty_false_alarm")
        if fa.empty:
            fa = col("stream_false_alarm")
        if not fa.empty:
            k = int(round(float((fa * n_trials.loc[fa.index]).sum())))
            n = int(n_trials.loc[fa.index].sum())
            row["false alarms"] = f"{k}/{n} (≤ {100 * clopper_pearson_upper(k, n):.1f} %)"
        else:
            row["false alarms"] = "–"
        row["miss (%)"] = _cell(col("novelty_miss"), 100, 1)
        est, true = col("n_new_est"), col("n_new_true")
        row["new classes: est / true"] = (
            f"{_cell(est)} / {true.mean():g}" if not est.empty and not true.empty else "–"
        )
        row["exact count (%)"] = _cell(col("n_new_exact"), 100, 0)
        for m, label in (("cluster_acc", "ACC (%)"), ("nmi", "NMI (%)"), ("ari", "ARI (%)")):
            row[label] = _cell(col(m), 100, 1)
        row["bound coverage (%)"] = _cell(col("outlier_bound_coverage"), 100, 1)
        row["stream detected (%)"] = _cell(col("stream_detect_rate"), 100, 1)
        row["stream delay (new samples)"] = _cell(col("stream_delay"), 1, 1)
        rows.append(row)
    table = pd.DataFrame(rows).set_index(["benchmark / backbone / detector", "scenario"])
    return table.loc[:, (table != "–").any(axis=0)]

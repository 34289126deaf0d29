"""From tidy results to paper tables: pivots, mean ± std over seeds, Markdown (and LaTeX later).

All formatting lives here; the raw CSVs hold numbers only.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

# metric → (label, higher is better)
TABLE_METRICS: dict[str, tuple[str, bool]] = {
    "auroc": ("AUROC", True),
    "fpr95_id": ("FPR95 (ID 95% accepted)", False),
    "fpr95_ood": ("FPR95 (OOD 95% rejected)", False),
}


def ok_rows(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["status"] == "ok"]


def aggregate(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Mean, std and number of seeds per (benchmark, backbone, detector, OOD set) for one metric.

    Per seed, the group means (``near``/``far``/``all``) are taken over OOD sets first, so the
    std of a mean column is the spread of that mean across seeds.
    """
    d = ok_rows(df)
    d = d[(d["metric"] == metric) & (d["ood_dataset"] != "")]
    keys = ["benchmark", "backbone", "detector", "seed"]
    per_set = d[keys + ["ood_group", "ood_dataset", "value"]]
    means = []
    groups = list(per_set.groupby("ood_group"))
    if len(groups) > 1:
        groups.append(("all", per_set))
    for group, sub in groups:
        m = sub.groupby(keys, as_index=False)["value"].mean()
        m["ood_dataset"] = f"mean {group}"
        m["ood_group"] = "mean"
        means.append(m)
    full = pd.concat([per_set, *means], ignore_index=True)
    out = full.groupby(keys[:-1] + ["ood_group", "ood_dataset"], as_index=False)["value"].agg(
        mean="mean", std=lambda v: v.std(ddof=1) if len(v) > 1 else np.nan, n_seeds="count"
    )
    return out


def fmt_mean_std(mean: float, std: float, scale: float = 100.0, digits: int = 1) -> str:
    if np.isnan(mean):
        return "–"
    s = f"{mean * scale:.{digits}f}"
    return s if np.isnan(std) else f"{s} ± {std * scale:.{digits}f}"


def performance_table(df: pd.DataFrame, metric: str = "auroc") -> pd.DataFrame:
    """Detector × OOD set table of ``metric`` in percent, mean ± std over seeds, best in bold."""
    agg = aggregate(df, metric)
    if agg.empty:
        return pd.DataFrame()
    higher = TABLE_METRICS.get(metric, (metric, True))[1]
    agg["row"] = agg["benchmark"] + " / " + agg["backbone"] + " / " + agg["detector"]
    cols_order = (
        agg[agg["ood_group"] != "mean"]
        .sort_values(["ood_group", "ood_dataset"], key=_group_order)["ood_dataset"]
        .unique()
        .tolist()
    )
    mean_order = {"mean near": 0, "mean far": 1, "mean all": 2}
    cols_order += sorted(
        agg.loc[agg["ood_group"] == "mean", "ood_dataset"].unique(),
        key=lambda c: mean_order.get(c, 3),
    )
    cells = agg.pivot(index="row", columns="ood_dataset", values=["mean", "std"])
    table = pd.DataFrame(index=cells.index)
    for c in cols_order:
        means, stds = cells[("mean", c)], cells[("std", c)]
        best = means.max() if higher else means.min()
        table[c] = [
            (f"**{fmt_mean_std(m, s)}**" if np.isclose(m, best) else fmt_mean_std(m, s))
            for m, s in zip(means, stds, strict=True)
        ]
    seeds = agg.groupby("row")["n_seeds"].max()
    table.insert(0, "seeds", seeds.astype(int))
    table.index.name = "benchmark / backbone / detector"
    return table


def _group_order(col: pd.Series) -> pd.Series:
    order = {"near": 0, "far": 1}
    return col.map(lambda v: order.get(v, 2)) if col.name == "ood_group" else col


def id_accuracy_table(df: pd.DataFrame) -> pd.DataFrame:
    d = ok_rows(df)
    # one value per backbone checkpoint: every detector of a seed shares it
    d = d[d["metric"] == "id_acc"].drop_duplicates(["benchmark", "backbone", "seed"])
    g = d.groupby(["benchmark", "backbone"])["value"]
    return pd.DataFrame(
        {
            "ID accuracy (%)": [
                fmt_mean_std(m, s) for m, s in zip(g.mean(), g.std(ddof=1), strict=True)
            ],
            "seeds": g.count(),
        }
    )


def failed_table(df: pd.DataFrame) -> pd.DataFrame:
    d = df[df["status"] == "failed"]
    return d[["benchmark", "backbone", "detector", "seed", "error"]].drop_duplicates()


def markdown_report(df: pd.DataFrame) -> str:
    """Every table this report knows, as one Markdown document."""
    parts = ["# ood-bench results", ""]
    parts += ["## Backbones", "", id_accuracy_table(df).to_markdown(), ""]
    for metric, (label, higher) in TABLE_METRICS.items():
        table = performance_table(df, metric)
        if table.empty:
            continue
        arrow = "higher" if higher else "lower"
        parts += [
            f"## {label} (%, mean ± std over seeds; {arrow} is better, best in bold)",
            "",
            table.to_markdown(),
            "",
        ]
    failed = failed_table(df)
    if not failed.empty:
        parts += ["## Failed jobs", "", failed.to_markdown(index=False), ""]
    return "\n".join(parts)

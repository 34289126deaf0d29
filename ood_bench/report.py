"""From tidy results to paper tables: pivots, mean ± std over seeds, Markdown (and LaTeX later).

All formatting lives here; the raw CSVs hold numbers only.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

# metric → (label, higher is better)
TABLE_METRICS: dict[str, tuple[str, bool]] = {
    "auroc": ("AUROC", True),
    "fpr95_id": ("FPR95 (ID 95% accepted)", False),
    "fpr95_ood": ("FPR95 (OOD 95% rejected)", False),
}


def ok_rows(df: pd.DataFrame, clean: bool = True) -> pd.DataFrame:
    """Successful rows; ``clean`` keeps uncorrupted jobs only (robustness tables take the rest)."""
    d = df[df["status"] == "ok"]
    return d[d["corruption"] == "none"] if clean else d


def aggregate(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Mean, std and number of seeds per (benchmark, backbone, detector, OOD set) for one metric.

    Per seed, the group means (``near``/``far``/``all``) are taken over OOD sets first, so the
    std of a mean column is the spread of that mean across seeds.
    """
    d = ok_rows(df)
    d = d[(d["metric"] == metric) & (d["ood_dataset"] != "")]
    keys = ["benchmark", "backbone", "detector", "seed"]
    # one value per seed and set, even if a run slipped in twice: seeds weigh equally
    per_set = d.groupby(keys + ["ood_group", "ood_dataset"], as_index=False)["value"].mean()
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
    """``mean ± std`` scaled (percent by default); ``–`` for a missing mean, no ± without std."""
    if np.isnan(mean):
        return "–"
    s = f"{mean * scale:.{digits}f}"
    return s if np.isnan(std) else f"{s} ± {std * scale:.{digits}f}"


TIE_NOTE = (
    "mean columns: bold = best, underlined = not significantly worse than it (paired DeLong "
    "test on the stored per-sample scores, seeds pooled, Holm-corrected, 5 %)"
)


def performance_table(
    df: pd.DataFrame, metric: str = "auroc", ties: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Detector × OOD set table of ``metric`` in percent, mean ± std over seeds, best in bold.

    ``ties`` (AUROC only; :func:`ood_bench.site.significance.significance`: ``best`` and
    ``tied`` per benchmark, backbone, detector and group) replaces the bold-the-largest rule in
    the ``mean <group>`` columns of the benchmarks it covers: bold = the best, ``<u>…</u>``
    (underlined in LaTeX) = not significantly worse than it."""
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
    bench_of = agg.drop_duplicates("row").set_index("row")["benchmark"].reindex(cells.index)
    keys = agg.drop_duplicates("row").set_index("row")[["benchmark", "backbone", "detector"]]
    keys = keys.reindex(cells.index)
    use_ties = ties is not None and len(ties) and metric == "auroc"
    covered = (
        set(zip(ties.index.get_level_values(0), ties.index.get_level_values(1), strict=True))
        if use_ties
        else set()
    )
    for c in cols_order:
        means, stds = cells[("mean", c)], cells[("std", c)]
        # best within each benchmark: rows of different benchmarks do not compete
        grouped = means.groupby(bench_of)
        best = grouped.transform("max" if higher else "min")
        table[c] = [
            (f"**{fmt_mean_std(m, s)}**" if np.isclose(m, b) else fmt_mean_std(m, s))
            for m, s, b in zip(means, stds, best, strict=True)
        ]
        if use_ties and c.startswith("mean "):
            group = c.removeprefix("mean ")
            for row, k in keys.iterrows():
                key = (k["benchmark"], k["backbone"], k["detector"], group)
                if (k["benchmark"], k["backbone"]) not in covered:
                    continue
                plain = fmt_mean_std(means[row], stds[row])
                if key in ties.index and ties.at[key, "best"]:
                    table.at[row, c] = f"**{plain}**"
                elif key in ties.index and ties.at[key, "tied"]:
                    table.at[row, c] = f"<u>{plain}</u>"
                else:
                    table.at[row, c] = plain
    seeds = agg.groupby("row")["n_seeds"].max()
    table.insert(0, "seeds", seeds.astype(int))
    table.index.name = "benchmark / backbone / detector"
    return table


def _group_order(col: pd.Series) -> pd.Series:
    """Sort key for an ``ood_group`` column: near, far, then the rest."""
    order = {"near": 0, "far": 1}
    return col.map(lambda v: order.get(v, 2)) if col.name == "ood_group" else col


def id_accuracy(df: pd.DataFrame) -> pd.DataFrame:
    """Backbone ID test accuracy (fraction) per (benchmark, backbone): ``mean``, ``std`` and
    ``seeds`` over the seeds' checkpoints."""
    d = ok_rows(df)
    # one value per backbone checkpoint: every detector of a seed shares it
    d = d[d["metric"] == "id_acc"].drop_duplicates(["benchmark", "backbone", "seed"])
    g = d.groupby(["benchmark", "backbone"])["value"]
    return pd.DataFrame({"mean": g.mean(), "std": g.std(ddof=1), "seeds": g.count()})


def id_accuracy_table(df: pd.DataFrame) -> pd.DataFrame:
    """Backbone ID test accuracy (%) per benchmark / backbone, mean ± std."""
    acc = id_accuracy(df)
    out = pd.DataFrame(
        {
            "ID accuracy (%)": [
                fmt_mean_std(m, s) for m, s in zip(acc["mean"], acc["std"], strict=True)
            ],
            "seeds": acc["seeds"],
        }
    )
    out.index = plain_labels(out.index)
    out.index.name = "benchmark / backbone"
    return out


def plain_labels(index: pd.Index) -> pd.Index:
    """Row labels as plain text: a (benchmark, backbone, ...) tuple becomes ``"a / b / ..."``."""
    return pd.Index([" / ".join(map(str, i)) if isinstance(i, tuple) else str(i) for i in index])


def job_metric_table(
    df: pd.DataFrame, metrics: dict[str, str], scale: float = 1.0, digits: int = 3
) -> pd.DataFrame:
    """Job-level metrics (no OOD set) per benchmark / backbone / detector, mean ± std over seeds."""
    d = ok_rows(df)
    d = d[d["metric"].isin(metrics) & (d["ood_dataset"] == "")]
    if d.empty:
        return pd.DataFrame()
    d = d.assign(row=d["benchmark"] + " / " + d["backbone"] + " / " + d["detector"])
    g = d.groupby(["row", "metric"])["value"]
    agg = pd.DataFrame({"mean": g.mean(), "std": g.std(ddof=1)}).reset_index()
    table = pd.DataFrame(index=sorted(agg["row"].unique()))
    for m, label in metrics.items():
        sub = agg[agg["metric"] == m].set_index("row")
        if sub.empty:
            continue
        table[label] = [
            fmt_mean_std(sub.at[r, "mean"], sub.at[r, "std"], scale, digits)
            if r in sub.index
            else "–"
            for r in table.index
        ]
    table.index.name = "benchmark / backbone / detector"
    return table


def validity_table(df: pd.DataFrame) -> pd.DataFrame:
    """Realised type-I error of p-value detectors: fraction of ID test rejected at each alpha."""
    return job_metric_table(
        df, {f"fpr_at_{a:g}": f"FPR at α={a:g} (%)" for a in (0.01, 0.05, 0.1)}, 100.0, 1
    )


def runtime_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Job-level metrics per (benchmark, backbone, detector, seed), one column each, with
    ``ratio`` = score time over forward time per sample; empty without timing rows."""
    d = ok_rows(df)
    d = d[(d["ood_dataset"] == "")]
    wide = d.pivot_table(
        index=["benchmark", "backbone", "detector", "seed"], columns="metric", values="value"
    )
    if wide.empty or "score_ms_per_sample" not in wide:
        return pd.DataFrame()
    wide["ratio"] = wide["score_ms_per_sample"] / wide["forward_ms_per_sample"]
    return wide


def runtime_table(df: pd.DataFrame) -> pd.DataFrame:
    """Fit time, score time per sample, and score time relative to one forward pass."""
    wide = runtime_frame(df)
    if wide.empty:
        return pd.DataFrame()
    g = wide.groupby(level=["benchmark", "backbone", "detector"])
    out = pd.DataFrame(
        {
            "fit (s)": g["fit_s"].median().map(lambda v: f"{v:.3f}"),
            "score (ms/sample)": g["score_ms_per_sample"].median().map(lambda v: f"{v:.4f}"),
            "score / forward": g["ratio"].median().map(lambda v: f"{v:.2f}"),
        }
    )
    if "reference_mb" in wide:
        out["reference (MiB)"] = (
            g["reference_mb"].median().map(lambda v: "–" if np.isnan(v) else f"{v:.2f}")
        )
    out.index = plain_labels(out.index)
    out.index.name = "benchmark / backbone / detector (median over seeds)"
    return out


def robustness_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Per (benchmark, backbone, detector, corruption, severity, seed): mean AUROC over OOD sets,
    ID accuracy and, for p-value detectors, the ID rejection rate at 0.05. Clean jobs appear as
    corruption ``none``, severity 0."""
    d = ok_rows(df, clean=False)
    keys = ["benchmark", "backbone", "detector", "corruption", "severity", "seed"]
    auroc = d[(d["metric"] == "auroc")].groupby(keys)["value"].mean().rename("auroc")
    acc = d[d["metric"] == "id_acc"].groupby(keys)["value"].mean().rename("id_acc")
    fpr = d[d["metric"] == "fpr_at_0.05"].groupby(keys)["value"].mean().rename("fpr_at_0.05")
    return pd.concat([auroc, acc, fpr], axis=1).reset_index()


def robustness_table(df: pd.DataFrame, value: str = "auroc") -> pd.DataFrame:
    """Detector × (corruption, severity) table of ``value`` in percent, mean ± std over seeds."""
    r = robustness_frame(df).dropna(subset=[value])
    if r.empty or (r["corruption"] == "none").all():
        return pd.DataFrame()
    # the clean column only for the (benchmark, backbone, detector) rows that were corrupted
    shifted = r.loc[r["corruption"] != "none", ["benchmark", "backbone", "detector"]]
    r = r.merge(shifted.drop_duplicates(), on=["benchmark", "backbone", "detector"])
    r["col"] = np.where(
        r["corruption"] == "none",
        " clean",
        r["corruption"] + " s" + r["severity"].astype(int).astype(str),
    )
    if value == "id_acc":  # a property of the backbone, not of the detector
        r = r.drop_duplicates(["benchmark", "backbone", "corruption", "severity", "seed"])
        r["row"] = r["benchmark"] + " / " + r["backbone"]
    else:
        r["row"] = r["benchmark"] + " / " + r["backbone"] + " / " + r["detector"]
    g = r.groupby(["row", "col"])[value]
    cells = pd.DataFrame({"mean": g.mean(), "std": g.std(ddof=1)}).reset_index()
    cells["text"] = [fmt_mean_std(m, sd) for m, sd in zip(cells["mean"], cells["std"], strict=True)]
    table = cells.pivot(index="row", columns="col", values="text")
    table.index.name = "benchmark / backbone / detector"
    return table


def ranking_stability(df: pd.DataFrame) -> pd.DataFrame:
    """Kendall's tau between the detector rankings (mean AUROC) of every pair of seeds, per
    (benchmark, backbone, corruption, severity): how much a ranking depends on the seed."""
    from itertools import combinations

    from scipy.stats import kendalltau

    r = robustness_frame(df).dropna(subset=["auroc"])
    rows = []
    for key, sub in r.groupby(["benchmark", "backbone", "corruption", "severity"]):
        wide = sub.pivot_table(index="detector", columns="seed", values="auroc")
        wide = wide.dropna()
        if wide.shape[0] < 3 or wide.shape[1] < 2:
            continue
        taus = [kendalltau(wide[a], wide[b]).statistic for a, b in combinations(wide.columns, 2)]
        rows.append(
            {
                "benchmark": key[0],
                "backbone": key[1],
                "corruption": key[2],
                "severity": int(key[3]),
                "detectors": wide.shape[0],
                "seeds": wide.shape[1],
                "tau_mean": float(np.mean(taus)),
                "tau_min": float(np.min(taus)),
            }
        )
    return pd.DataFrame(rows)


def failed_table(df: pd.DataFrame) -> pd.DataFrame:
    """The failed jobs with their error message, one row each."""
    d = df[df["status"] == "failed"]
    return d[["benchmark", "backbone", "detector", "seed", "error"]].drop_duplicates()


# LaTeX's ten special characters and what typesets each as itself (text mode): one pass, so
# the braces of a replacement are never escaped again; ``^`` goes too, so ``^^5c`` (TeX's code
# for a backslash) cannot smuggle a command in
LATEX_SPECIALS = {
    "\\": r"\textbackslash{}",
    "{": r"\{",
    "}": r"\}",
    "$": r"\$",
    "&": r"\&",
    "#": r"\#",
    "%": r"\%",
    "_": r"\_",
    "^": r"\textasciicircum{}",
    "~": r"\textasciitilde{}",
}
_LATEX_SPECIAL = re.compile("|".join(map(re.escape, LATEX_SPECIALS)))


def latex_escape(text: str) -> str:
    """``text`` with every LaTeX special character (``\\ { } $ & # % _ ^ ~``) escaped, so
    a name prints as itself and never runs as TeX."""
    return _LATEX_SPECIAL.sub(lambda m: LATEX_SPECIALS[m.group()], text)


def to_latex(table: pd.DataFrame, caption: str, label: str) -> str:
    """A report table as booktabs LaTeX: names escaped, ``**best**`` → ``\\textbf``, ± in math."""

    def cell(v: object) -> str:
        """One cell as LaTeX: escaped, ``**x**`` bold, ± and – in LaTeX form."""
        t = latex_escape(str(v)).replace("±", r"$\pm$").replace("–", "--")
        t = re.sub(r"<u>(.+?)</u>", r"\\underline{\1}", t)
        return re.sub(r"\*\*(.+?)\*\*", r"\\textbf{\1}", t)

    t = table.copy()
    t.index = [latex_escape(str(i)) for i in t.index]
    t.index.name = latex_escape(str(table.index.name or ""))
    t.columns = [latex_escape(str(c)) for c in t.columns]
    t = t.map(cell)
    caption = latex_escape(caption).replace("±", r"$\pm$")
    return t.style.to_latex(hrules=True, caption=caption, label=label, position_float="centering")


def report_tables(
    df: pd.DataFrame, ties: pd.DataFrame | None = None
) -> list[tuple[str, str, pd.DataFrame]]:
    """Every table the report knows: (file stem, caption, table), empty ones left out;
    ``ties``: the AUROC table's marks (:func:`performance_table`)."""
    seeds = ok_rows(df)["seed"].nunique()
    out = [("id_accuracy", "Backbone ID test accuracy (%)", id_accuracy_table(df))]
    for metric, (label, higher) in TABLE_METRICS.items():
        arrow = "higher" if higher else "lower"
        marked = ties is not None and len(ties) and metric == "auroc"
        out.append(
            (
                f"performance_{metric}",
                f"{label} (%, mean ± std over {seeds} seeds; {arrow} is better, best in bold"
                + (f"; {TIE_NOTE})" if marked else ")"),
                performance_table(df, metric, ties),
            )
        )
    out.append(
        ("validity", "ID test rejected at level alpha (%, p-value detectors)", validity_table(df))
    )
    out.append(("runtime", "Runtime on CPU (median over seeds)", runtime_table(df)))
    out.append(
        ("robustness_auroc", "Mean AUROC over OOD sets under corruption (%)", robustness_table(df))
    )
    out.append(
        (
            "robustness_fpr",
            "Corrupted ID rejected at alpha = 0.05 (%)",
            robustness_table(df, "fpr_at_0.05"),
        )
    )
    return [(n, c, t) for n, c, t in out if not t.empty]


def markdown_report(df: pd.DataFrame, ties: pd.DataFrame | None = None) -> str:
    """Every table this report knows, as one Markdown document (``ties``: the AUROC table's
    marks, :func:`performance_table`)."""
    parts = ["# ood-bench results", ""]
    parts += ["## Backbones", "", id_accuracy_table(df).to_markdown(), ""]
    for metric, (label, higher) in TABLE_METRICS.items():
        table = performance_table(df, metric, ties)
        if table.empty:
            continue
        arrow = "higher" if higher else "lower"
        marked = ties is not None and len(ties) and metric == "auroc"
        parts += [
            f"## {label} (%, mean ± std over seeds; {arrow} is better, best in bold"
            + (f"; {TIE_NOTE})" if marked else ")"),
            "",
            table.to_markdown(),
            "",
        ]
    validity = validity_table(df)
    if not validity.empty:
        parts += [
            "## Statistical validity: ID test rejected at level α (%, mean ± std over "
            "seeds; conformal p-values guarantee ≤ α on average)",
            "",
            validity.to_markdown(),
            "",
        ]
    runtime = runtime_table(df)
    if not runtime.empty:
        parts += ["## Runtime (CPU)", "", runtime.to_markdown(), ""]
    rob = robustness_table(df)
    if not rob.empty:
        parts += [
            "## Robustness: mean AUROC over OOD sets under corruption (%, mean ± std over seeds)",
            "",
            rob.to_markdown(),
            "",
        ]
        acc = robustness_table(df, "id_acc")
        parts += [
            "## Robustness: backbone ID accuracy under corruption (%)",
            "",
            acc.to_markdown(),
            "",
        ]
        fpr = robustness_table(df, "fpr_at_0.05")
        if not fpr.empty:
            parts += [
                "## Robustness: corrupted ID rejected at α = 0.05 (%, p-value detectors;"
                " growth = false alarms under covariate shift)",
                "",
                fpr.to_markdown(),
                "",
            ]
    stab = ranking_stability(df)
    if not stab.empty:
        parts += [
            "## Ranking stability across seeds (Kendall's τ of detector rankings by mean AUROC)",
            "",
            stab.to_markdown(index=False, floatfmt=".3f"),
            "",
        ]
    failed = failed_table(df)
    if not failed.empty:
        parts += ["## Failed jobs", "", failed.to_markdown(index=False), ""]
    return "\n".join(parts)

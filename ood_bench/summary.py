"""The demo's compact summary: per detector, AUROC and both FPR95 readings per OOD group, runtime,
and the validity check of p-value detectors (realised false-positive rate at alpha with its exact
binomial interval), then a few closing lines computed from those numbers.

Built on :func:`ood_bench.report.aggregate` (group means per seed, then mean over seeds).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import binomtest

from ood_bench.report import aggregate, failed_table, fmt_mean_std, ok_rows
from ood_bench.results import METRICS
from ood_bench.validity import conformal_band, job_calibration

KEYS = ["benchmark", "backbone", "detector"]
GROUPS = ("near", "far")
PERF = ("auroc", "fpr95_id", "fpr95_ood")
LAB = "ood_bench"  # the library of the lab's own (stat_*) detectors
# two mean AUROCs closer than this (a fraction: 0.5 points) are called tied, whatever the seeds
MARGIN = 0.005
# the metrics the demo prints (its per-job tables and this summary), defined in its last lines
DEFINED = ("auroc", "fpr95_id", "fpr95_ood", "tpr_at_0.05", "fpr_at_0.05")


def group_means(df: pd.DataFrame) -> pd.DataFrame:
    """Per (benchmark, backbone, detector): mean over seeds of each metric of ``PERF`` averaged
    over the OOD sets of each group, in columns ``<metric> <group>`` (fractions); for AUROC also
    its standard deviation over seeds (``auroc_std <group>``, NaN with one seed) and the number
    of seeds (``seeds <group>``), which :func:`verdict` needs to call a winner."""
    parts = []
    for metric in PERF:
        a = aggregate(df, metric)
        a = a[a["ood_dataset"].isin([f"mean {g}" for g in GROUPS])]
        a = a.assign(col=metric + " " + a["ood_dataset"].str.removeprefix("mean "))
        parts.append(a.pivot_table(index=KEYS, columns="col", values="mean"))
        if metric == "auroc":
            for stat, name in (("std", "auroc_std"), ("n_seeds", "seeds")):
                spread = a.assign(col=a["col"].str.replace("auroc", name, regex=False))
                # unstack, not pivot_table: a std that is NaN everywhere (one seed) stays
                parts.append(spread.set_index([*KEYS, "col"])[stat].unstack("col"))
    out = pd.concat(parts, axis=1)
    order = [f"{m} {g}" for m in (*PERF, "auroc_std", "seeds") for g in GROUPS]
    return out[[c for c in order if c in out.columns]]


def verdict(diff: float, spread: float, seeds: int, margin: float = MARGIN) -> tuple[bool, str]:
    """Whether a mean AUROC ``diff`` (fractions, >= 0) between two detectors names a winner, and
    why: only when it exceeds ``margin`` **and** ``spread`` (the larger of the two detectors'
    standard deviations over seeds), which needs ``seeds`` >= 2. One seed names no winner."""
    points = f"{100 * diff:.1f} points apart"
    if diff <= margin:
        return False, f"tied ({points}, within the {100 * margin:g}-point margin)"
    if seeds < 2 or np.isnan(spread):
        return False, (
            f"no winner called ({points} on one seed: no seed spread to judge it by; "
            "run seed=0,1,2 to tell)"
        )
    if diff <= spread:
        return False, f"tied ({points}, within the seed spread ±{100 * spread:.1f})"
    return True, f"ahead by {100 * diff:.1f} points (more than the seed spread ±{100 * spread:.1f})"


def rule_line(margin: float = MARGIN) -> str:
    """The rule :func:`verdict` applies, as the summary states it."""
    return (
        f"Rule: one detector is called ahead of another only when its mean AUROC is higher by more "
        f"than {100 * margin:g} points and by more than the larger of the two standard deviations "
        "over seeds; closer is tied, and one seed calls no winner."
    )


def metric_lines() -> list[str]:
    """One line per metric the demo prints, from :data:`ood_bench.results.METRICS`."""
    return [f"{m}: {METRICS[m]}." for m in DEFINED if m in METRICS]


def runtimes(df: pd.DataFrame) -> pd.DataFrame:
    """Median over seeds of ``fit_s`` and ``score_ms_per_sample`` per detector."""
    d = ok_rows(df)
    d = d[d["metric"].isin(["fit_s", "score_ms_per_sample"]) & (d["ood_dataset"] == "")]
    return d.pivot_table(index=KEYS, columns="metric", values="value", aggfunc="median")


def validity(df: pd.DataFrame, alpha: float = 0.05, level: float = 0.95) -> pd.DataFrame:
    """The type-I error check of p-value detectors at ``alpha``: ID test samples rejected
    (``fpr_at_<alpha>`` × ``n_id``, pooled over seeds), the realised rate, its exact
    Clopper–Pearson ``level`` interval, whether alpha lies in it and whether the count is
    significantly above what valid conformal p-values give. The last uses the exact law of a
    marginal conformal FPR — Beta-binomial per job, as every ID test sample shares the job's
    calibration set (n_calib = 1/p_min − 1), convolved over seeds — and the binomial interval only
    where a job's calibration size is unknown or not marginal (:mod:`ood_bench.validity`)."""
    d = ok_rows(df)
    cols = ["k", "n", "fpr", "ci_low", "ci_high", "alpha_in_ci", "above_alpha"]
    jobs = d[d["ood_dataset"] == ""] if "run_id" in d.columns else None
    d = d[(d["metric"] == f"fpr_at_{alpha:g}") & (d["ood_dataset"] == "")]
    if d.empty:
        return pd.DataFrame(columns=cols, index=pd.MultiIndex.from_tuples([], names=KEYS))
    d = d.assign(k=(d["value"] * d["n_id"]).round().astype(int), n=d["n_id"].astype(int))
    counts = d.groupby(KEYS)[["k", "n"]].sum()
    rows = []
    for key, (k, n) in zip(counts.index, zip(counts["k"], counts["n"], strict=True), strict=True):
        ci = binomtest(int(k), int(n), alpha).proportion_ci(confidence_level=level, method="exact")
        high = (
            None
            if jobs is None
            else _conformal_high(d[d[KEYS].apply(tuple, axis=1) == key], jobs, alpha, level)
        )
        rows.append(
            {
                "fpr": k / n,
                "ci_low": ci.low,
                "ci_high": ci.high,
                "alpha_in_ci": ci.low <= alpha <= ci.high,
                "above_alpha": ci.low > alpha if high is None else k / n > high,
            }
        )
    return pd.concat([counts, pd.DataFrame(rows, index=counts.index)], axis=1)[cols]


def _conformal_high(
    runs: pd.DataFrame, jobs: pd.DataFrame, alpha: float, level: float
) -> float | None:
    """The upper end of :func:`ood_bench.validity.conformal_band` for these runs (each job's
    calibration size from :func:`ood_bench.validity.job_calibration`); None when a job's
    calibration is not marginal or its size unknown."""
    n_test, n_calib = [], []
    for r in runs.itertuples(index=False):
        n_cal, kind = job_calibration(jobs[jobs["run_id"] == r.run_id])
        if kind != "marginal" or n_cal is None:
            return None
        n_test.append(int(r.n))
        n_calib.append(n_cal)
    return conformal_band(n_test, n_calib, alpha, level)[1]


def summary_frame(df: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """Every number of the compact table, one row per (benchmark, backbone, detector)."""
    d = ok_rows(df)
    lib = d.groupby(KEYS)["library"].first()
    out = pd.concat([lib, group_means(df), runtimes(df), validity(df, alpha)], axis=1)
    return out[out["library"].notna()]


def _pct(v: float) -> str:
    """A fraction as a percent with one decimal, ``–`` when missing."""
    return fmt_mean_std(v, np.nan)


def check_text(row: pd.Series, alpha: float) -> str:
    """The validity verdict of one row: held (alpha in the interval, or significantly below),
    violated (significantly above), or no p-values."""
    if pd.isna(row.get("fpr")):
        return "no p-values"
    if row["above_alpha"]:
        return "VIOLATED (above α)"
    return "held (α in CI)" if row["alpha_in_ci"] else "held (below α)"


def _markdown(table: pd.DataFrame) -> str:
    """A table as Markdown pipes, cells kept as written (``0.0`` stays ``0.0``), numbers right."""
    align = ("left",) + tuple(
        "left" if c in ("library", "check") else "right" for c in table.columns
    )
    return table.to_markdown(disable_numparse=True, colalign=align)


def performance_table(frame: pd.DataFrame, benchmark: str) -> pd.DataFrame:
    """One benchmark's AUROC and both FPR95 readings (%) per OOD group, detectors as rows (best
    first by AUROC on the first group present); groups the benchmark lacks are left out."""
    f = frame.xs(benchmark, level="benchmark").droplevel("backbone")
    perf = [c for c in (f"{m} {g}" for m in PERF for g in GROUPS) if c in f and f[c].notna().any()]
    first = next(c for c in perf if c.startswith("auroc"))
    f = f.sort_values(first, ascending=False, kind="stable")
    table = pd.DataFrame(index=pd.Index(f.index.astype(str), name="detector"))
    for c in perf:
        table[c.replace("auroc", "AUROC")] = [_pct(v) for v in f[c]]
    return table


def cost_validity_table(frame: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """Per benchmark / detector: library, fit and scoring time, and the type-I error check (the
    realised ``fpr_at_<alpha>`` with its exact 95 % interval, and the verdict)."""
    # per benchmark, the p-value detectors first
    order = pd.DataFrame({"no_p": frame["fpr"].isna()}, index=frame.index).reset_index()
    f = frame.iloc[order.sort_values(["benchmark", "no_p", "detector"]).index]
    table = pd.DataFrame(index=pd.Index([f"{b} / {d}" for b, _, d in f.index]))
    table.index.name = "benchmark / detector"
    table["library"] = f["library"].to_numpy()
    table["fit (s)"] = [f"{v:.3f}" for v in f["fit_s"]]
    table["score (ms/sample)"] = [f"{v:.3f}" for v in f["score_ms_per_sample"]]
    table[f"fpr_at_{alpha:g} [95% CI] (%)"] = [
        "–"
        if pd.isna(r["fpr"])
        else f"{_pct(r['fpr'])} [{_pct(r['ci_low'])}, {_pct(r['ci_high'])}]"
        for _, r in f.iterrows()
    ]
    table["check"] = [check_text(r, alpha) for _, r in f.iterrows()]
    return table


def closing_lines(df: pd.DataFrame, frame: pd.DataFrame, alpha: float = 0.05) -> list[str]:
    """What the tables show, computed from them: the detector with the highest mean AUROC on near
    and on far OOD per benchmark, set against the best of the other side (the lab's ``stat_*``
    detectors vs the libraries' baselines) with a winner only where :func:`verdict` finds one
    (the rule is the line after them), and whether the type-I error guarantee held for every
    p-value detector."""
    lines = []
    compared = False
    d = ok_rows(df)
    sets = d[d["ood_group"].isin(GROUPS)].groupby(["benchmark", "ood_group"])["ood_dataset"]
    sets = sets.unique()
    for group in GROUPS:
        col = f"auroc {group}"
        if col not in frame:
            continue
        for bench, sub in frame[frame[col].notna()].groupby(level="benchmark"):
            best = sub[col].idxmax()
            is_lab = sub["library"] == LAB
            rival = sub[~is_lab] if sub.at[best, "library"] == LAB else sub[is_lab]
            text = (
                f"{group.capitalize()} OOD on {bench} ({', '.join(sorted(sets[(bench, group)]))}):"
                f" highest mean AUROC {best[2]} {_pct(sub.at[best, col])} % (fpr95_id "
                f"{_pct(sub.at[best, f'fpr95_id {group}'])} %, fpr95_ood "
                f"{_pct(sub.at[best, f'fpr95_ood {group}'])} %)"
            )
            if not rival.empty:
                r = rival[col].idxmax()
                side = "baseline" if sub.at[best, "library"] == LAB else "lab detector"
                std = f"auroc_std {group}"
                ahead, why = verdict(
                    sub.at[best, col] - rival.at[r, col],
                    np.fmax(sub.at[best, std], rival.at[r, std]),
                    int(min(sub.at[best, f"seeds {group}"], rival.at[r, f"seeds {group}"])),
                )
                who = f"{best[2]} " if ahead else ""
                text += f"; best {side} {r[2]} {_pct(rival.at[r, col])} %: {who}{why}"
                compared = True
            lines.append(text + ".")
    if compared:
        lines.append(rule_line())
    v = frame[frame["fpr"].notna()]
    if v.empty:
        lines.append(f"No p-value detector in these results: no guarantee at α = {alpha:g}.")
        return lines
    above = v["above_alpha"].astype(bool)
    inside = int(v["alpha_in_ci"].astype(bool).sum())
    below = len(v) - inside - int(above.sum())
    spread = f"realised FPR {_pct(v['fpr'].min())}–{_pct(v['fpr'].max())} %"
    if not above.any():
        lines.append(
            f"Guarantee at α = {alpha:g} held: no p-value detector rejects significantly more "
            f"than {100 * alpha:g} % of ID test data ({spread}; α inside the exact 95 % interval "
            f"for {inside} of {len(v)}, the interval below α for {below})."
        )
    else:
        names = ", ".join(f"{b} / {det}" for b, _, det in v.index[above])
        lines.append(
            f"Guarantee at α = {alpha:g} VIOLATED for {int(above.sum())} of {len(v)} p-value "
            f"detector runs ({names}): ID test rejection significantly above {100 * alpha:g} % "
            "(above the 95 % range of the Beta-binomial count of valid conformal p-values; the "
            f"binomial interval where the calibration size is unknown; {spread})."
        )
    scores_only = sorted(frame.index[frame["fpr"].isna()].get_level_values("detector").unique())
    if scores_only:
        lines.append(
            f"Scores only, no p-values and so no level to check: {', '.join(scores_only)} "
            "(an FPR95 reading picks its threshold on the test data itself)."
        )
    return lines


def demo_summary(df: pd.DataFrame, alpha: float = 0.05) -> str:
    """The compact tables (AUROC and both FPR95 readings per benchmark; cost and validity) as
    Markdown pipes with plain-text labels, then the closing lines."""
    frame = summary_frame(df, alpha)
    d = ok_rows(df)
    seeds = d["seed"].nunique()
    parts = []
    for bench in sorted(frame.index.get_level_values("benchmark").unique()):
        backbones = ", ".join(frame.xs(bench, level="benchmark").index.unique("backbone"))
        n_id = int(d.loc[d["benchmark"] == bench, "n_id"].max())
        parts += [
            f"## {bench} / {backbones}: mean over the OOD sets of each group (%, {seeds} "
            f"seed{'s' if seeds > 1 else ''}; ID test {n_id} images)",
            "",
            _markdown(performance_table(frame, bench)),
            "",
        ]
    failed = failed_table(df)
    if not failed.empty:
        parts += [f"## Failed jobs (left out): {len(failed)}", ""]
        parts += [
            f"- {r.benchmark} / {r.detector} (seed {r.seed:g}): {str(r.error).splitlines()[0]}"
            for r in failed.itertuples()
        ]
        parts.append("")
    parts += [
        f"## Cost and validity: fpr_at_{alpha:g} = ID test rejected at α = {alpha:g} "
        "(p-value detectors), exact Clopper–Pearson 95 % interval",
        "",
        _markdown(cost_validity_table(frame, alpha)),
        "",
        "## What this shows",
        "",
    ]
    parts += [f"- {line}" for line in closing_lines(df, frame, alpha)]
    parts += ["", "## Metrics (docs/metrics.md)", ""]
    parts += [f"- {line}" for line in metric_lines()]
    return "\n".join(parts)

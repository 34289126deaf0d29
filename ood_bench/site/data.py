"""The numbers of the site, as frames of fractions (formatting is the tables' job), computed
from the files under a results folder with :mod:`ood_bench.report` and :mod:`ood_bench.summary`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ood_bench import report
from ood_bench.errors import ConfigError, DataError
from ood_bench.names import check_name
from ood_bench.results import NOVELTY_METRICS, backbone_conflicts, one_result_per_job, read_results
from ood_bench.site.significance import significance
from ood_bench.validity import conformal_band

KEYS = ["benchmark", "backbone", "detector"]
PERF = ("auroc", "fpr95_id", "fpr95_ood")
GROUPS = ("near", "far", "all")
ALPHA = 0.05  # the level the leaderboard reports the realised FPR at
TPR = f"tpr_at_{ALPHA:g}"  # OOD rejected by the conformal p-values at level ALPHA (FPR <= ALPHA)
BOARD = (*PERF, TPR)  # the per-group metrics of the leaderboards
PREFIXES = ("pood_", "openood_", "stat_", "ob_")  # the libraries' and ood-bench's prefixes
# the columns of a tidy CSV that hold names (ood_bench.names): they become file names (a page
# per benchmark, img/<benchmark>_*.svg), links, filter attributes and table cells; the second
# set may be empty (rows without an OOD set: ID accuracy, p-value levels; a failed job's row)
NAME_COLUMNS = ("benchmark", "backbone", "detector")
OPTIONAL_NAME_COLUMNS = (
    "id_dataset",
    "ood_dataset",
    "ood_group",
    "corruption",
    "calib_source",
    "library",
    "metric",
)

# detector family → method names (the options without their library prefix), space-separated
FAMILIES: dict[str, str] = {
    "softmax / logit": "msp maxlogit mls energy ebo entropy gen temperaturescaling temp_scaling "
    "klmatching klm dropout weightedebo mcm mcd openmax weiper weiper_kld",
    "input gradient": "odin iodin mahalanobisodin gradnorm graduncertainty godin",
    "activation shaping": "ash dice react scale vra lts rankfeat adascale_a adascale_l t2fnorm "
    "optfs actsub",
    "feature distance": "mahalanobis mds mds_ensemble multimahalanobis rmd rmds knn cider npos "
    "reweightood gmm she nnguide relation vim residual nci fdbd gram grood ssd cfood pnml nacue "
    "maha_pp rmds_pp neco cop corp combood cadref caref carvalho",
    "multi-layer trajectory": "trajectory",
}


def family(detector: str) -> str:
    """The detector's family: how it scores (``other`` when unknown)."""
    if detector.startswith("stat_"):
        return "conformal p-value"
    method = detector.split("+", 1)[0]
    for prefix in PREFIXES:
        method = method.removeprefix(prefix)
    return next((f for f, names in FAMILIES.items() if method in names.split()), "other")


@dataclass
class Results:
    """The results folder read once: ``df`` holds every row of ``raw/*.csv`` (one result per
    job) with a ``source`` column naming its file relative to ``root``."""

    root: Path
    df: pd.DataFrame

    def file_exists(self, rel: str) -> bool:
        """Whether the results folder holds the file ``rel``."""
        return (self.root / rel).is_file()


def check_names_of(df: pd.DataFrame, path: Path) -> None:
    """Refuse a CSV whose name columns hold a value outside :data:`ood_bench.names.NAME_PATTERN`
    (``../../x``, ``javascript:…``, ``^^5c…``): checked once here, where the site reads the
    names, so no page, image or link is ever made from one; the error names the file, the
    column, the line and the fix."""
    for col in (*NAME_COLUMNS, *OPTIONAL_NAME_COLUMNS):
        values = df[col]
        if col in OPTIONAL_NAME_COLUMNS:
            values = values[values != ""]
        for value in values.unique():
            try:
                check_name(value, f"{col.replace('_', ' ')} name")
            except ConfigError as e:
                raise DataError(
                    f"{path}, column {col}, line {first_line(path, col, value)}: {e} In a "
                    "results CSV: rerun the job under a valid name, or correct the value in "
                    "the CSV, or leave the file out."
                ) from e


def first_line(path: Path, col: str, value: str) -> int:
    """The line of ``path`` (1 = the header) where column ``col`` first holds ``value``."""
    d = pd.read_csv(path, dtype=str, keep_default_na=False, usecols=[col])
    return int((d[col] == value).to_numpy().argmax()) + 2


def read_tidy(root: Path, files: list[Path]) -> pd.DataFrame:
    """The result CSVs ``files`` (ood_bench's schema), one result per job, each row with its
    ``source`` (path relative to ``root``); every name checked (:func:`check_names_of`)."""
    frames = []
    for f in files:
        df = read_results(f)
        check_names_of(df, f)
        frames.append(df.assign(source=f.relative_to(root).as_posix()))
    return one_result_per_job(pd.concat(frames, ignore_index=True))


def conflict_files(root: Path, df: pd.DataFrame, conflicts: pd.DataFrame) -> str:
    """The files holding the conflicting checkpoints, each with their sha256 prefixes:
    ``ROOT/raw/a.csv: 0481320a9420, 1555732b3f4d; ROOT/raw/b.csv: ffffffffffff``."""
    ok = df[(df["status"] == "ok") & df["backbone_sha256"].isin(set(conflicts["sha256"].explode()))]
    shas = ok.groupby("source")["backbone_sha256"].unique()
    return "; ".join(
        f"{root / f}: {', '.join(sorted(x[:12] for x in v))}" for f, v in sorted(shas.items())
    )


def load(root: str | Path) -> Results:
    """Read ``root/raw/*.csv``; a clear error when the folder or its CSVs are missing, or when
    one backbone name holds results of several checkpoints."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(
            f"no results folder at {root}: give the folder that holds raw/*.csv (e.g. results)"
        )
    files = sorted((root / "raw").glob("*.csv"))
    if not files:
        raise DataError(
            f"no CSV under {root / 'raw'}: run the sweeps and ood-bench collect first "
            "(make paper), or give the results folder of the repository"
        )
    df = read_tidy(root, files)
    conflicts = backbone_conflicts(df)
    if len(conflicts):
        raise DataError(
            f"{root / 'raw'} mixes backbone checkpoints under one name "
            f"({len(conflicts)} benchmark/backbone/seed; {conflict_files(root, df, conflicts)}). "
            "Fix: remove the file that is not the paper's (a sweep of your own belongs in "
            "scratch/), or collect one checkpoint's results"
        )
    if not (df["status"] == "ok").any():
        errors = df.loc[df["error"] != "", "error"]
        first = f" (the first error: {errors.iloc[0][:200]})" if len(errors) else ""
        raise DataError(
            f"no successful result under {root / 'raw'}: all {df['run_id'].nunique()} jobs "
            f"failed{first}, so the site would have no number to show. Fix: read the jobs' "
            "errors (ood-bench tables lists them), fix the cause and rerun the sweep, "
            "then ood-bench collect"
        )
    if report.ok_rows(df).empty:
        raise DataError(
            f"no result without corruption under {root / 'raw'}: the leaderboards and the "
            "benchmark pages are made of clean (corruption=none) results, the robustness page "
            "compares with them. Fix: collect the clean sweep of the benchmark into "
            f"{root / 'raw'} too (make paper does)"
        )
    return Results(root, df)


def benchmarks(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (benchmark, backbone): ID dataset, OOD sets per group, detectors, seeds,
    ID accuracy (mean, std over seeds) and the source files."""
    d = report.ok_rows(df)
    acc = report.id_accuracy(df)
    rows = []
    for (bench, bb), g in d.groupby(["benchmark", "backbone"]):
        sets = g[g["ood_dataset"] != ""].drop_duplicates("ood_dataset")
        rows.append(
            {
                "benchmark": bench,
                "backbone": bb,
                "id_dataset": g["id_dataset"].iloc[0],
                "near": sorted(sets.loc[sets["ood_group"] == "near", "ood_dataset"]),
                "far": sorted(sets.loc[sets["ood_group"] == "far", "ood_dataset"]),
                "detectors": g["detector"].nunique(),
                "seeds": g["seed"].nunique(),
                "id_acc": acc.at[(bench, bb), "mean"] if (bench, bb) in acc.index else np.nan,
                "id_acc_std": acc.at[(bench, bb), "std"] if (bench, bb) in acc.index else np.nan,
                "sources": sorted(g["source"].unique()),
            }
        )
    return pd.DataFrame(rows)


def group_stats(df: pd.DataFrame) -> pd.DataFrame:
    """Per (benchmark, backbone, detector): ``<metric>_<group>`` mean, ``…_std`` and
    ``…_n`` (seeds) for the metrics of :data:`BOARD` and the groups near, far and all, straight
    from :func:`ood_bench.report.aggregate` (NaN where a metric has no row). A benchmark with
    one OOD group has ``all`` = it."""
    out = []
    for metric in BOARD:
        a = report.aggregate(df, metric)
        if a.empty:
            empty = pd.MultiIndex.from_tuples([], names=KEYS)
            for g in GROUPS:
                for suffix in ("", "_std", "_n"):
                    out.append(pd.Series(dtype=float, index=empty, name=f"{metric}_{g}{suffix}"))
            continue
        a = a[a["ood_group"] == "mean"].assign(group=lambda x: x["ood_dataset"].str[5:])
        w = a.set_index(KEYS + ["group"])[["mean", "std", "n_seeds"]].unstack("group")
        for stat, suffix in (("mean", ""), ("std", "_std"), ("n_seeds", "_n")):
            cols = {g: w[stat].get(g, np.nan) for g in GROUPS}
            near, far = pd.Series(cols["near"], index=w.index), pd.Series(cols["far"], w.index)
            every = pd.Series(cols["all"], index=w.index)
            every = every.fillna(far.where(near.isna())).fillna(near.where(far.isna()))
            for g, s in (("near", near), ("far", far), ("all", every)):
                out.append(s.rename(f"{metric}_{g}{suffix}"))
    return pd.concat(out, axis=1)


def scoring_cost(root: Path) -> pd.Series:
    """Score time over forward time from ``runtime/scoring_cost.csv`` (one run of
    scripts/bench_scoring.py), indexed by (backbone, detector); empty without the file."""
    path = root / "runtime" / "scoring_cost.csv"
    if not path.is_file():
        return pd.Series(dtype=float)
    d = pd.read_csv(path)
    d["backbone"] = d["backbone"].str.split(" (", n=1, regex=False).str[0]
    return d.set_index(["backbone", "detector"])["score/forward"]


def leaderboard(res: Results) -> pd.DataFrame:
    """One row per (benchmark, backbone, detector): library, family, seeds, AUROC and both
    FPR95 readings per group (mean, std over seeds), the score cost relative to the forward pass
    (median over the sweep's jobs, and the one-run measurement where there is one), whether the
    detector gives calibrated p-values and its realised FPR at :data:`ALPHA` (mean, std over seeds),
    and the source files."""
    df = res.df
    d = report.ok_rows(df)
    out = group_stats(df)
    out = out[out["auroc_all"].notna()]
    info = d.groupby(KEYS).agg(library=("library", "first"))
    out = info.join(out, how="inner")
    out.insert(1, "family", [family(k[2]) for k in out.index])
    out["seeds"] = out["auroc_all_n"].astype(int)
    run = report.runtime_frame(df)
    out["cost"] = run["ratio"].groupby(level=KEYS).median() if len(run) else np.nan
    bench = scoring_cost(res.root)
    out["cost_bench"] = [bench.get((bb, det), np.nan) for _, bb, det in out.index]
    fpr = d[(d["metric"] == f"fpr_at_{ALPHA:g}") & (d["ood_dataset"] == "")]
    fpr = fpr.groupby(KEYS)["value"].agg(["mean", "std"]).reindex(out.index)
    out["pvalues"] = fpr["mean"].notna()
    out["alpha_fpr"], out["alpha_fpr_std"] = fpr["mean"], fpr["std"]
    used = d[d["corruption"] == "none"]
    out["sources"] = used.groupby(KEYS)["source"].agg(lambda s: tuple(sorted(set(s))))
    out = out.sort_values("auroc_all", ascending=False, kind="stable")
    # like with like: the rank is among the detectors run on the benchmark's full seed count
    full = out.groupby(level=["benchmark", "backbone"])["seeds"].transform("max")
    out["full_seeds"] = full
    out["ranked"] = out["seeds"] == full
    sig = significance(res.root, df, out)
    for g in GROUPS:
        cols = ["low", "high", "p_holm", "best", "tied", "scored_seeds"]
        part = sig.xs(g, level="group")[cols] if g in sig.index.get_level_values("group") else None
        for c in cols:
            name = f"{c}_{g}"
            out[name] = part[c].reindex(out.index) if part is not None else np.nan
    return out


def with_library(frame: pd.DataFrame, df: pd.DataFrame) -> pd.DataFrame:
    """``frame`` (with the columns of :data:`KEYS`) with each detector's ``library``."""
    lib = report.ok_rows(df, clean=False).groupby(KEYS)["library"].first().reset_index()
    return frame.merge(lib, on=KEYS, how="left")


def per_set(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (benchmark, backbone, detector, OOD group, OOD set): AUROC, AUPR-out and
    both FPR95 readings, mean and std over seeds, and the number of seeds."""
    parts = []
    for metric in (*PERF, "aupr_out"):
        a = report.aggregate(df, metric)
        a = a[a["ood_group"] != "mean"].set_index(KEYS + ["ood_group", "ood_dataset"])
        parts += [a["mean"].rename(metric), a["std"].rename(f"{metric}_std")]
        if metric == "auroc":
            parts.append(a["n_seeds"].rename("seeds"))
    return with_library(pd.concat(parts, axis=1).reset_index(), df)


def robustness(df: pd.DataFrame) -> pd.DataFrame:
    """Per (benchmark, backbone, detector, corruption, severity) of the detectors that were
    run under corruption: mean AUROC over OOD sets, ID accuracy and the corrupted ID rejected
    at α = 0.05 (p-value detectors), mean and std over seeds, and the seeds."""
    r = report.robustness_frame(df)
    shifted = r.loc[r["corruption"] != "none", KEYS].drop_duplicates()
    r = r.merge(shifted, on=KEYS)
    keys = KEYS + ["corruption", "severity"]
    g = r.groupby(keys)
    out = g[["auroc", "id_acc", "fpr_at_0.05"]].agg(["mean", "std"])
    out.columns = [f"{m}{'' if s == 'mean' else '_std'}" for m, s in out.columns]
    out["seeds"] = g["seed"].nunique()
    return with_library(out.reset_index(), df)


def pvalue_levels(df: pd.DataFrame) -> pd.DataFrame:
    """Realised FPR at every level α of the p-value detectors, per (benchmark, backbone,
    detector, calib_source, α): mean, std and seeds, with the ID test size per seed."""
    d = report.ok_rows(df)
    d = d[d["metric"].str.startswith("fpr_at_") & (d["ood_dataset"] == "")]
    d = d.assign(alpha=d["metric"].str.removeprefix("fpr_at_").astype(float))
    g = d.groupby(KEYS + ["calib_source", "alpha"])
    out = g["value"].agg(mean="mean", std="std", seeds="count")
    out["n_id"] = g["n_id"].median()
    return with_library(out.reset_index(), df)


def novelty(root: Path) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """The novelty CSVs ``root/novelty/*.csv`` read once: every row as (benchmark, backbone,
    detector, scenario, metric, mean, std, seeds), whatever scenarios the files hold; the
    novelty report's table (``novelty.md``); and the files."""
    from ood_bench.novelty.report import novelty_table

    files = sorted((root / "novelty").glob("*.csv"))
    if not files:
        return pd.DataFrame(), pd.DataFrame(), []
    df = read_tidy(root, files)
    ok = report.ok_rows(df)
    d = ok[(ok["ood_group"] == "novelty") & ok["metric"].isin(NOVELTY_METRICS)]
    g = d.groupby(KEYS + ["ood_dataset", "metric"])["value"]
    out = g.agg(mean="mean", std="std", seeds="count").reset_index()
    long = out.rename(columns={"ood_dataset": "scenario"})
    return long, novelty_table(df), sorted(d["source"].unique())


def calibration_curves(root: Path) -> dict[str, pd.DataFrame]:
    """The realised-FPR-vs-α curves of ``analysis/*/calibration.csv`` (alpha, fpr, band_lo,
    band_hi; per benchmark when the file says), by path relative to ``root``."""
    return {
        f.relative_to(root).as_posix(): pd.read_csv(f)
        for f in sorted((root / "analysis").glob("*/calibration.csv"))
    }


def library_defaults(root: Path) -> pd.DataFrame:
    """``libraries/defaults.csv``: per (method, variant, detector, setting) the AUROC averaged
    over the OOD sets, then mean and std over seeds."""
    path = root / "libraries" / "defaults.csv"
    if not path.is_file():
        return pd.DataFrame()
    d = pd.read_csv(path, keep_default_na=False)
    keys = ["method", "variant", "detector", "setting"]
    per_seed = d.groupby(keys + ["seed"], sort=False)["auroc"].mean()
    g = per_seed.groupby(level=keys, sort=False)
    return g.agg(mean="mean", std="std", seeds="count").reset_index()


def crosscheck(root: Path) -> pd.DataFrame:
    """``crosscheck/openood_crosscheck_<benchmark>.csv``: per (benchmark, method, variant) the
    mean AUROC of each library over the OOD sets and the largest per-set difference."""
    frames = []
    for f in sorted((root / "crosscheck").glob("openood_crosscheck_*.csv")):
        bench = f.stem.removeprefix("openood_crosscheck_")
        try:
            check_name(bench, "benchmark name", f"the file name {f}")
        except ConfigError as e:
            raise DataError(f"{e} Rename the file to openood_crosscheck_<benchmark>.csv.") from e
        frames.append(pd.read_csv(f).assign(benchmark=bench))
    if not frames:
        return pd.DataFrame()
    d = pd.concat(frames, ignore_index=True)
    g = d.groupby(["benchmark", "method", "variant"], sort=False)
    return g.agg(
        pood=("auroc_pood", "mean"), openood=("auroc_openood", "mean"), diff=("abs_diff", "max")
    ).reset_index()


def validity_checks(df: pd.DataFrame) -> pd.DataFrame:
    """Per (benchmark, backbone, detector, calib_source, source, α): the ID test rejections
    pooled over the seeds of that one source file (a leaked-calibration file is never pooled
    with held-out runs), the realised fraction, the 95 % band of :func:`conformal_band` and
    the verdict: ``inside``, ``above`` (more false alarms than a valid p-value gives: a
    violation) or ``below`` (conservative)."""
    d = report.ok_rows(df)
    d = d[d["ood_dataset"] == ""]
    fpr = d[d["metric"].str.startswith("fpr_at_")]
    fpr = fpr.assign(alpha=fpr["metric"].str.removeprefix("fpr_at_").astype(float))
    keys = [*KEYS, "calib_source", "source", "seed"]
    pmin = d[d["metric"] == "p_min"].groupby(keys)["value"].first()
    # class-conditional calibration: the rows do not hold the per-class sizes
    classcond = d[(d["metric"] == "calib_class_conditional") & (d["value"] > 0)]
    pmin = pmin.drop(classcond.set_index(keys).index, errors="ignore")
    rows = []
    for k, g in fpr.groupby([*KEYS, "calib_source", "source", "alpha"]):
        g = g.drop_duplicates("seed")
        n = [int(v) for v in g["n_id"]]
        cal = []
        for seed in g["seed"]:
            p = pmin.get((*k[:5], seed), np.nan)
            cal.append(int(round(1 / p - 1)) if pd.notna(p) and p > 0 else None)
        kk = float((g["value"] * g["n_id"]).round().sum())
        lo, hi, method = conformal_band(n, cal, k[5])
        f = kk / sum(n)
        verdict = "above" if f > hi else "below" if f < lo else "inside"
        rows.append(
            dict(zip([*KEYS, "calib_source", "source", "alpha"], k, strict=True))
            | {
                "seeds": len(g),
                "n_id": int(np.median(n)),
                "fpr": f,
                "band_lo": lo,
                "band_hi": hi,
                "method": method,
                "verdict": verdict,
                "mean": g["value"].mean(),
                "std": g["value"].std(),
            }
        )
    cols = [
        *KEYS,
        "calib_source",
        "source",
        "alpha",
        "seeds",
        "n_id",
        "fpr",
        "band_lo",
        "band_hi",
        "method",
        "verdict",
        "mean",
        "std",
    ]
    return with_library(pd.DataFrame(rows, columns=cols), df)


def ties(root: str | Path) -> pd.DataFrame:
    """The tie marks of the leaderboards of the results folder ``root`` as one frame: ``best``
    and ``tied`` per (benchmark, backbone, detector, group), only where stored scores gave
    them (empty without scores), for :func:`ood_bench.report.performance_table`."""
    lb = leaderboard(load(root))
    parts = []
    for g in GROUPS:
        part = lb[lb[f"scored_seeds_{g}"].notna()][[f"best_{g}", f"tied_{g}"]]
        part.columns = ["best", "tied"]
        parts.append(part.assign(group=g).set_index("group", append=True))
    out = pd.concat(parts)
    return out.astype(bool) if len(out) else out

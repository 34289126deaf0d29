"""Performance, runtime and robustness of each library's detectors, from the collected results.

Same benchmark, backbone and seeds for all: ``digits`` with ``digits_cnn`` on the seeds that
every detector of every library has (:func:`common_seeds`); near-OOD from ``digits_open``;
robustness = clean minus corrupted mean AUROC (the ImageNet-C sweeps) on the seeds with both.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from libcompare.libraries import Library
from libcompare.measure import Measure, na
from ood_bench.report import aggregate, robustness_frame

A = "performance"
BENCHMARK = "digits"
NEAR = "digits_open"


def _auroc_per_detector(
    df: pd.DataFrame, benchmark: str, seeds: list[int], group: str = ""
) -> pd.Series:
    """Mean AUROC (over OOD sets of ``group``, or all, then over seeds) per detector: the
    report's own ``mean <group>`` column (:func:`ood_bench.report.aggregate`)."""
    d = df[(df["benchmark"] == benchmark) & df["seed"].isin(seeds)]
    if d.empty:
        return pd.Series(dtype=float)
    agg = aggregate(d, "auroc")
    means = agg[agg["ood_group"] == "mean"]
    if group:
        column = f"mean {group}"
    else:  # "mean all" exists only with several groups; else the one group's mean is all
        column = "mean all" if (means["ood_dataset"] == "mean all").any() else None
        if column is None and means["ood_dataset"].nunique() == 1:
            column = means["ood_dataset"].iloc[0]
    return means[means["ood_dataset"] == column].set_index("detector")["mean"]


def _clean(df: pd.DataFrame) -> pd.DataFrame:
    """Successful rows of uncorrupted jobs."""
    return df[(df["status"] == "ok") & (df["corruption"] == "none")]


def common_seeds(df: pd.DataFrame, libs: list[Library]) -> list[int]:
    """Seeds on ``digits`` that every detector of every library with results there has, so
    that each library's mean rests on the same seeds."""
    d = _clean(df)
    d = d[(d["benchmark"] == BENCHMARK) & (d["metric"] == "auroc")]
    sets = []
    for lib in libs:
        per_det = d[d["library"] == lib.key].groupby("detector")["seed"].agg(set)
        if not per_det.empty:
            sets.append(set.intersection(*per_det))
    return sorted(set.intersection(*sets)) if sets else []


def robustness_drop(df: pd.DataFrame, lib: Library) -> tuple[float, int, int]:
    """Mean over the library's detectors of (clean - corrupted) mean AUROC, in points; the
    number of detectors and of corrupted jobs it rests on (jobs from the report's
    :func:`ood_bench.report.robustness_frame`)."""
    d = df[(df["library"] == lib.key) & (df["benchmark"] == BENCHMARK)]
    jobs = robustness_frame(d).dropna(subset=["auroc"])
    clean = jobs[jobs["corruption"] == "none"].set_index(["detector", "seed"])["auroc"]
    bad = jobs[jobs["corruption"] != "none"]
    keys = pd.MultiIndex.from_frame(bad[["detector", "seed"]])
    bad = bad[keys.isin(clean.index)]
    if bad.empty:
        return float("nan"), 0, 0
    ref = clean.reindex(pd.MultiIndex.from_frame(bad[["detector", "seed"]])).to_numpy()
    per_det = bad.assign(drop=ref - bad["auroc"]).groupby("detector")["drop"].mean()
    return 100 * float(per_det.mean()), len(per_det), len(bad)


def measure(df: pd.DataFrame | None, lib: Library, seeds: list[int]) -> list[Measure]:
    """Every performance figure of one library's own detectors."""
    names = [
        ("detectors evaluated", ""),
        ("jobs failed or refused", ""),
        ("mean AUROC", "%"),
        ("best detector", ""),
        ("best AUROC", "%"),
        ("best near-OOD AUROC", "%"),
        ("median score time", "ms/sample"),
        ("median fit time", "s"),
        ("AUROC drop under corruption", "points"),
    ]
    if df is None or not (df["library"] == lib.key).any():
        why = f"no collected results of {lib.label} detectors"
        return [na(lib.key, A, n, "collected results", why, u) for n, u in names]
    mine = df[df["library"] == lib.key]
    ok = _clean(mine)
    where = f"{BENCHMARK}, digits_cnn, seeds {','.join(map(str, seeds))}"
    auroc = _auroc_per_detector(ok, BENCHMARK, seeds)
    failed = mine[mine["status"] == "failed"][["detector", "benchmark", "seed"]].drop_duplicates()
    out = [
        Measure(
            lib.key,
            A,
            "detectors evaluated",
            int(auroc.size),
            f"detectors with AUROC rows on {where}",
        ),
        Measure(
            lib.key,
            A,
            "jobs failed or refused",
            len(failed),
            "jobs with a status=failed row (errors and refusals as not applicable), all sweeps",
            detail=", ".join(sorted(set(failed["detector"]))),
        ),
    ]
    if auroc.empty:
        why = f"no {lib.label} results on {where}"
        out += [na(lib.key, A, n, where, why, u) for n, u in names[2:5]]
    else:
        best = auroc.idxmax()
        out += [
            Measure(
                lib.key,
                A,
                "mean AUROC",
                100 * float(auroc.mean()),
                f"mean over its detectors of the mean AUROC over OOD sets, {where}",
                "%",
            ),
            Measure(lib.key, A, "best detector", str(best), f"highest mean AUROC, {where}"),
            Measure(
                lib.key, A, "best AUROC", 100 * float(auroc.max()), f"that detector, {where}", "%"
            ),
        ]
    near_seeds = sorted(set(ok.loc[ok["benchmark"] == NEAR, "seed"]) & set(seeds)) or seeds
    near = _auroc_per_detector(ok, NEAR, near_seeds, group="near")
    if near.empty:
        out.append(
            na(lib.key, A, "best near-OOD AUROC", NEAR, f"no {lib.label} results on {NEAR}", "%")
        )
    else:
        out.append(
            Measure(
                lib.key,
                A,
                "best near-OOD AUROC",
                100 * float(near.max()),
                f"{NEAR} (unseen digits 6–9 vs 0–5), best detector, seeds "
                f"{','.join(map(str, near_seeds))}",
                "%",
                detail=str(near.idxmax()),
            )
        )
    rt = ok[(ok["benchmark"] == BENCHMARK) & ok["seed"].isin(seeds) & (ok["ood_dataset"] == "")]
    for name, metric, unit in (
        ("median score time", "score_ms_per_sample", "ms/sample"),
        ("median fit time", "fit_s", "s"),
    ):
        v = rt.loc[rt["metric"] == metric].groupby("detector")["value"].median()
        if v.empty:
            out.append(na(lib.key, A, name, metric, "no runtime rows", unit))
        else:
            out.append(
                Measure(
                    lib.key,
                    A,
                    name,
                    float(v.median()),
                    f"median over its detectors of {metric}, {where} (CPU, 2 cores; the sweeps ran "
                    "at different machine loads: compare speed with the examples' same-run times)",
                    unit,
                )
            )
    drop, ndet, njobs = robustness_drop(mine, lib)
    method = (
        "clean minus corrupted mean AUROC (ImageNet-C corruptions of the ID test split, "
        "severities 1/3/5), mean over its detectors in the robustness sweeps"
    )
    if np.isnan(drop):
        out.append(
            na(
                lib.key,
                A,
                "AUROC drop under corruption",
                method,
                f"no {lib.label} detector in a robustness sweep with clean results",
                "points",
            )
        )
    else:
        dets = sorted(set(mine.loc[mine["corruption"] != "none", "detector"]))
        out.append(
            Measure(
                lib.key,
                A,
                "AUROC drop under corruption",
                drop,
                method,
                "points",
                detail=f"{ndet} detectors ({', '.join(dets)}), {njobs} corrupted jobs",
            )
        )
    return out

"""Generated blocks on the committed sweeps: headline figures, the statistical detectors,
backbones, sweep costs, the recommended preset, training cards, the calibration-leak check, the
ablation and the scoring cost."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ood_bench import report
from ood_bench.backbones.cards import normalized_card
from ood_bench.docsync.common import _best, _md, _means, _raw, pct
from ood_bench.results import one_result_per_job, read_results
from ood_bench.validity import conformal_fpr_band


def headline(results: Path) -> str:
    """Per benchmark: MSP, the best pytorch-ood detector, MaSF, the best statistical detector,
    and the statistical detectors' realised type-I error at α = 5 %."""
    rows = []
    for name in ("digits_all", "mnist_fashion"):
        m = _means(_raw(results, name))
        for bench, g in m.groupby("benchmark", sort=True):
            cols = [("all", "all OOD sets")]
            if g["near"].notna().any():
                cols.append(("near", "near OOD only"))
            for col, label in cols:
                msp = g[g["detector"] == "pood_msp"][col]
                masf = g[g["detector"] == "stat_masf"][col]
                bp, bs = _best(g, "pytorch-ood", col), _best(g, "ood_bench", col)
                stat = g[g["library"] == "ood_bench"]
                rows.append(
                    {
                        "benchmark (OOD sets)": f"`{bench}` ({label})",
                        "seeds": str(int(g["seeds"].max())),
                        "MSP": pct(msp.iloc[0]) if len(msp) else "–",
                        "best pytorch-ood": f"{pct(bp[col])} (`{bp['detector']}`)",
                        "MaSF": pct(masf.iloc[0]) if len(masf) else "–",
                        "best statistical": f"{pct(bs[col])} (`{bs['detector']}`)",
                        "realised FPR at α = 5 %": (
                            f"{pct(stat['fpr05_min'].min())}–{pct(stat['fpr05_max'].max())}"
                        ),
                    }
                )
    return (
        "Mean AUROC (%) over each benchmark's OOD sets, mean over seeds "
        "(`results/raw/digits_all.csv`, `results/raw/mnist_fashion.csv`); the last column is the "
        "range, over the statistical detectors and seeds, of the fraction of ID test images "
        "rejected at α = 5 %:\n\n" + _md(pd.DataFrame(rows))
    )


def stat_detectors(results: Path) -> str:
    """Every statistical detector per benchmark beside the best pytorch-ood detector: AUROC
    (all, near with its per-seed range) and the realised FPR at α = 5 %."""
    rows = []
    for name in ("digits_all", "mnist_fashion"):
        m = _means(_raw(results, name))
        for bench, g in m.groupby("benchmark", sort=True):
            best = _best(g, "pytorch-ood", "all")
            show = pd.concat([g[g["library"] == "ood_bench"], best.to_frame().T])
            for _, r in show.sort_values("all", ascending=False).iterrows():
                near = "–"
                if not np.isnan(r["near"]):
                    near = f"{pct(r['near'])} ({pct(r['near_min'])}–{pct(r['near_max'])})"
                rows.append(
                    {
                        "benchmark": f"`{bench}`",
                        "detector": f"`{r['detector']}`",
                        "seeds": str(int(r["seeds"])),
                        "AUROC all": pct(r["all"]),
                        "AUROC near (seed range)": near,
                        "FPR at α = 5 %": pct(r["fpr05"]),
                    }
                )
    return (
        "Mean AUROC (%) over seeds, the best pytorch-ood detector of each benchmark for "
        "reference; FPR at α = 5 %: realised fraction of ID test rejected, mean over seeds "
        "(`results/raw/digits_all.csv`, `results/raw/mnist_fashion.csv`):\n\n"
        + _md(pd.DataFrame(rows))
    )


def backbones(results: Path) -> str:
    """ID test accuracy of each trained backbone, over the seeds of the committed sweeps."""
    df = pd.concat([_raw(results, "digits_all"), _raw(results, "mnist_fashion")])
    t = report.id_accuracy_table(df)
    t.index = ["`" + label.replace(" / ", "` / `") + "`" for label in t.index]
    t = t.rename_axis("benchmark / backbone").reset_index()
    t["seeds"] = t["seeds"].astype(str)
    return (
        "ID test accuracy of the self-trained backbones (mean ± std over seeds, "
        "`results/raw/digits_all.csv`, `results/raw/mnist_fashion.csv`):\n\n" + _md(t)
    )


def sweep_planning(results: Path) -> str:
    """What a job costs, from the runtime rows of the committed sweeps."""
    rows = []
    for name in ("digits_all", "mnist_fashion"):
        raw = report.ok_rows(_raw(results, name))
        for bench, d in raw.groupby("benchmark", sort=True):
            job = d[d["ood_dataset"] == ""].pivot_table(
                index=["run_id", "detector"], columns="metric", values="value", aggfunc="first"
            )
            job = job.reset_index()
            extracted = job[job["forward_samples"] > 0]
            own = job.get("detector_forward_samples")
            slow = job.loc[job["fit_s"].idxmax()]
            rows.append(
                {
                    "benchmark / backbone": f"`{bench}` / `{d['backbone'].iloc[0]}`",
                    "jobs": str(len(job)),
                    "extraction: jobs / images / s (sum)": (
                        f"{len(extracted)} / {extracted['forward_samples'].sum():,.0f} / "
                        f"{extracted['extract_s'].sum():.1f}"
                    ),
                    "forward (ms/image)": f"{job['forward_ms_per_sample'].median():.3f}",
                    "fit (s): median / max": (
                        f"{job['fit_s'].median():.2f} / {slow['fit_s']:.1f} (`{slow['detector']}`)"
                    ),
                    "score (ms/sample, median)": f"{job['score_ms_per_sample'].median():.3f}",
                    "a model-level detector's own forward passes (max)": (
                        f"{own.max():,.0f}" if own is not None and own.max() > 0 else "–"
                    ),
                    "peak RSS (MiB): median / max": (
                        f"{job['peak_rss_mb'].median():.0f} / {job['peak_rss_mb'].max():.0f}"
                    ),
                }
            )
    r = report.ok_rows(_raw(results, "robustness_digits"), clean=False)
    j = r[r["ood_dataset"] == ""].pivot_table(
        index="run_id", columns="metric", values="value", aggfunc="first"
    )
    ts = pd.to_datetime(r.drop_duplicates("run_id")["timestamp"])
    span = (ts.max() - ts.min()).total_seconds() / 60
    hits = j["cache_hits"].sum()
    return (
        "From the runtime rows of the committed sweeps (2 shared CPU cores; "
        "`peak_rss_mb` is the peak of the process so far, and jobs of a local multirun share one "
        "process):\n\n"
        + _md(pd.DataFrame(rows))
        + f"\n\nThe robustness sweep (`results/raw/robustness_digits.csv`): {len(j)} jobs, "
        f"{int((j['forward_samples'] > 0).sum())} of which extracted features; the others read "
        f"them ({hits:,.0f} feature sets read from the cache in all); {span:.1f} min from the "
        "first job's timestamp to the last."
    )


RECOMMENDED = "stat_maha_energy"
# the committed sweeps the recommended preset is compared on (those present are read)
COMPARED = (
    "digits_all",
    "recommended",
    "openood_all",
    "mnist_fashion",
    "mnist_split",
    "cifar10_offline",
)


def _per_detector(df: pd.DataFrame) -> pd.DataFrame:
    """Per (benchmark, detector): library, seeds, mean AUROC and FPR95 (ID positive) over the OOD
    sets then the seeds, and the score cost as a fraction of the forward pass."""
    d = report.ok_rows(df)
    d = d[d["corruption"].fillna("none").isin(["none", ""])] if "corruption" in d else d
    sets = d[d["ood_group"].isin(["near", "far"]) & d["metric"].isin(["auroc", "fpr95_id"])]
    per_seed = sets.groupby(["benchmark", "detector", "seed", "metric"])["value"].mean()
    out = per_seed.groupby(level=[0, 1, 3]).mean().unstack()
    out["seeds"] = per_seed.groupby(level=[0, 1]).apply(
        lambda s: s.index.get_level_values(2).nunique()
    )
    out["library"] = d.groupby(["benchmark", "detector"])["library"].first()
    run = d[d["ood_dataset"].fillna("") == ""].pivot_table(
        index=["benchmark", "detector", "seed"], columns="metric", values="value"
    )
    if {"score_ms_per_sample", "forward_ms_per_sample"} <= set(run.columns):
        ratio = run["score_ms_per_sample"] / run["forward_ms_per_sample"]
        out["cost"] = ratio.groupby(level=[0, 1]).mean()
    else:
        out["cost"] = np.nan
    return out.reset_index()


def recommended(results: Path) -> str:
    """The recommended preset per committed benchmark beside the best other native preset and
    the best library detector (mean AUROC, FPR95 ID-positive, score cost)."""
    names = [n for n in COMPARED if (results / "raw" / f"{n}.csv").is_file()]
    df = one_result_per_job(pd.concat([_raw(results, n) for n in names], ignore_index=True))
    m = _per_detector(df)
    rows = []
    for bench, g in m.groupby("benchmark", sort=False):
        rec = g[g["detector"] == RECOMMENDED]
        if rec.empty:
            continue
        r = rec.iloc[0]
        others = g[g["detector"] != RECOMMENDED]
        native = others[others["library"] == "ood_bench"]
        libs = others[others["library"] != "ood_bench"]
        bn = native.loc[native["auroc"].idxmax()] if len(native) else None
        bl = libs.loc[libs["auroc"].idxmax()] if len(libs) else None

        def cell(x: pd.Series | None) -> str:
            if x is None:
                return "–"
            seeds = int(x["seeds"])
            return (
                f"{pct(x['auroc'], 2)} / {pct(x['fpr95_id'], 2)} (`{x['detector']}`, "
                f"{seeds} seed{'s' if seeds > 1 else ''})"
            )

        rivals = [x for x in (bn, bl) if x is not None]
        lead = all(
            r["auroc"] >= x["auroc"] - 1e-12 and r["fpr95_id"] <= x["fpr95_id"] + 1e-12
            for x in rivals
        )
        rows.append(
            {
                "benchmark": f"`{bench}`",
                "seeds": str(int(r["seeds"])),
                f"`{RECOMMENDED}` AUROC / FPR95": f"{pct(r['auroc'], 2)} / {pct(r['fpr95_id'], 2)}",
                "best other native": cell(bn),
                "best library": cell(bl),
                "leads both": "yes" if lead else "no",
                "score cost (× forward)": "–" if np.isnan(r["cost"]) else f"{r['cost']:.3f}",
            }
        )
    files = ", ".join(f"`results/raw/{n}.csv`" for n in names)
    if not rows:
        return f"No committed run of `{RECOMMENDED}` yet ({files})."
    return (
        "Mean AUROC (%) / FPR95 (%, ID positive: OOD accepted when 95 % of ID is) over each "
        "benchmark's OOD sets, then over seeds; best = highest AUROC; *leads both*: at least "
        "as high an AUROC and as low an FPR95 as both rivals; score cost: scoring time per "
        f"sample over the backbone's forward time per sample, mean over its jobs ({files}):"
        "\n\n" + _md(pd.DataFrame(rows))
    )


def training_cards(results: Path) -> str:
    """The committed training cards of the backbones trained with ood-bench train."""
    rows = []
    for path in sorted((results / "backbones").glob("*.json")):
        card = normalized_card(json.loads(path.read_text()))
        v = card.get("versions", {})
        rows.append(
            {
                "card": f"`results/backbones/{path.name}`",
                "backbone / benchmark": f"`{path.stem.rsplit('_s', 1)[0]}`",
                "ID test accuracy (%)": pct(card["id_test_acc"], 2),
                "epochs": str(card["identity"]["train"]["epochs"]),
                "training (min)": f"{card['train_s'] / 60:.1f}",
                "whole command (min)": f"{card['wall_s'] / 60:.1f}",
                "machine": (
                    f"{v['cpu_count']} CPU cores" if "cpu_count" in v else v.get("hostname", "?")
                )
                + f", torch {v.get('torch', '?')}",
                "sha256": f"`{card['sha256'][:12]}…`",
                "commit": f"`{v.get('git_sha', '?')}`",
            }
        )
    if not rows:
        return "No committed training card yet (`results/backbones/*.json`)."
    return (
        "Backbones trained once with `ood-bench train` (card: the command's JSON, "
        "copied under `results/backbones/`):\n\n" + _md(pd.DataFrame(rows))
    )


def calib_leak(results: Path) -> str:
    """Realised FPR at α = 0.05 with leaked (``calib_source=train``, results/calib_leak/) and
    held-out (``auto`` → ``test``) calibration of the same CIFAR-10 jobs, each beside the 95 %
    range of a conformal FPR (beta-binomial in the calib and test sizes)."""

    leak = results / "calib_leak" / "cifar10_leak.csv"
    if not (leak.is_file() and (results / "raw" / "cifar10_offline.csv").is_file()):
        return "No committed CIFAR-10 leak runs yet (`results/calib_leak/cifar10_leak.csv`)."

    def runs(df: pd.DataFrame) -> pd.DataFrame:
        d = report.ok_rows(df)
        d = d[d["ood_dataset"].fillna("") == ""]
        wide = d.pivot_table(index=["detector", "seed"], columns="metric", values="value")
        fpr = d[d["metric"] == "fpr_at_0.05"].set_index(["detector", "seed"])["n_id"]
        return wide.assign(n_id=fpr).reset_index()

    leaked = runs(read_results(leak))
    held = runs(_raw(results, "cifar10_offline"))
    held = held[held["seed"].isin(leaked["seed"]) & held["detector"].isin(leaked["detector"])]

    def band(d: pd.DataFrame) -> str:
        n, n_cal = int(d["n_id"].iloc[0]), int(round(1 / d["p_min"].min() - 1))
        lo, hi = conformal_fpr_band(n, n_cal, 0.05)
        return f"n = {n:,}, n_calib = {n_cal:,}: {pct(lo, 2)}–{pct(hi, 2)}"

    def cell(g: pd.DataFrame) -> str:
        return " / ".join(pct(v, 2) for v in g.sort_values("seed")["fpr_at_0.05"])

    rows = [
        {
            "detector": f"`{det}`",
            "calib from train (leaked), % per seed": cell(leaked[leaked["detector"] == det]),
            "calib held out (auto → test), % per seed": cell(held[held["detector"] == det]),
        }
        for det in sorted(leaked["detector"].unique())
    ]
    seeds = ", ".join(str(int(x)) for x in sorted(leaked["seed"].unique()))
    return (
        f"Seeds {seeds}. 95 % range of the realised FPR of a valid marginal conformal p-value "
        f"(beta-binomial): leaked {band(leaked)}; held out {band(held)} "
        "(`results/calib_leak/cifar10_leak.csv`, `results/raw/cifar10_offline.csv`):\n\n"
        + _md(pd.DataFrame(rows))
    )


def ablation(results: Path) -> str:
    """The recommended preset's ablation table (results/analysis/<preset>/ablation.md)."""
    path = results / "analysis" / RECOMMENDED / "ablation.md"
    if not path.is_file():
        return f"No committed ablation of `{RECOMMENDED}` yet (`scripts/ablate_detector.py`)."
    body = path.read_text().split("\n", 2)[2].strip()  # without its title line
    return f"From `results/analysis/{RECOMMENDED}/ablation.md`. {body}"


def scoring_cost(results: Path) -> str:
    """Score time over forward time measured in one run (results/runtime/scoring_cost.csv)."""
    path = results / "runtime" / "scoring_cost.csv"
    if not path.is_file():
        return "No committed scoring-cost run yet (`scripts/bench_scoring.py --csv`)."
    d = pd.read_csv(path)
    rows = [
        {
            "backbone": r["backbone"],
            "detector": f"`{r['detector']}`",
            "forward (ms / image)": f"{r['forward_ms']:.4f}",
            "score (ms / image)": f"{r['score_ms']:.4f}",
            "score / forward": f"{r['score/forward']:.3f}",
        }
        for _, r in d.iterrows()
    ]
    return (
        "`scripts/bench_scoring.py` at commit "
        f"{d['git_sha'].iloc[0]}: the forward pass alone (batches of 128, best of 3) and the "
        "scoring of the ID test features, in one run (`results/runtime/scoring_cost.csv`):\n\n"
        + _md(pd.DataFrame(rows))
    )

#!/usr/bin/env python
"""Behaviour analyses of a statistical detector: figures (PNG + PDF) and CSVs.

    python scripts/analyze_detector.py --detector stat_masf --out results/analysis/stat_masf
    python scripts/analyze_detector.py --detector stat_drood benchmark=digits_open seed=1

Trailing ``key=value`` words are Hydra overrides of the run config (benchmark, backbone, seed,
cache_dir, ...). Features come from the same cache as the runner's jobs. Writes:

- ``pvalue_hist``: calibrated p-value histograms on ID test and each OOD set, with the KS
  statistic of the ID p-values against uniform (``pvalue_ks.csv``);
- ``calibration``: realised FPR vs alpha on ID test, with a 95 % binomial band;
- ``layer_auroc``: AUROC of each layer's p-value for each tail (which layers and which tail carry
  the signal) (``layer_auroc.csv``);
- ``combination_ablation.csv``: AUROC and fpr_at_0.05 for within × across combination rules;
- ``calib_size``: spread of the realised FPR at 0.05 over redraws of the calib/test partition
  for n_calib ∈ {50, 100, 500, all} (``calib_size.csv``);
- ``layer_correlation``: Spearman correlation of the layer p-values on ID test.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from scipy import stats as sps

from ood_bench.atomic import atomic_write
from ood_bench.config import build, compose
from ood_bench.detectors.stat import StatDetector
from ood_bench.environment import require_clean_tree
from ood_bench.features import Features
from ood_bench.figures import reproducible, save_fig
from ood_bench.metrics import ood_metrics
from ood_bench.pipeline import prepare

log = logging.getLogger("analyze_detector")
TAILS = ("right", "left", "two-sided")
ALPHAS = np.linspace(0.0, 0.2, 41)[1:]


def save_csv(df: pd.DataFrame, out: Path, name: str) -> None:
    """Write ``df`` atomically to ``out/<name>.csv``."""
    atomic_write(out / f"{name}.csv", lambda p: df.to_csv(p, index=False, float_format="%.6g"))


def subset(f: Features, idx: np.ndarray) -> Features:
    """The samples of ``f`` at ``idx`` (meta kept)."""
    return Features(
        f.logits[idx],
        f.penultimate[idx],
        f.labels[idx],
        {k: v[idx] for k, v in f.taps.items()},
        f.meta,
    )


def concat(a: Features, b: Features) -> Features:
    """The samples of ``a`` followed by those of ``b`` (taps and meta of ``a``)."""
    import torch

    return Features(
        torch.cat([a.logits, b.logits]),
        torch.cat([a.penultimate, b.penultimate]),
        torch.cat([a.labels, b.labels]),
        {k: torch.cat([a.taps[k], b.taps[k]]) for k in a.taps},
        a.meta,
    )


def pvalue_histograms(det: StatDetector, test: Features, ood: dict[str, Features], out: Path):
    """Histograms of the calibrated p-values on ID test and every OOD set, and their KS
    statistics against uniform (``pvalue_ks.csv``); returns the ID test p-values."""
    p_id = det.pvalues(test)
    ks = sps.kstest(p_id, "uniform")
    rows = [{"set": "id_test", "ks_stat": ks.statistic, "ks_pvalue": ks.pvalue, "n": len(p_id)}]
    n = 1 + len(ood)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 2.8), sharey=False)
    bins = np.linspace(0, 1, 21)
    axes[0].hist(p_id, bins=bins, color="tab:blue")
    axes[0].set_title(f"ID test (KS={ks.statistic:.3f})", fontsize=9)
    for ax, (name, f) in zip(axes[1:], ood.items(), strict=True):
        p = det.pvalues(f)
        ax.hist(p, bins=bins, color="tab:red")
        ax.set_title(f"{name} (p≤0.05: {np.mean(p <= 0.05):.0%})", fontsize=9)
        rows.append(
            {
                "set": name,
                "ks_stat": sps.kstest(p, "uniform").statistic,
                "ks_pvalue": np.nan,
                "n": len(p),
            }
        )
    for ax in axes:
        ax.set_xlabel("p-value")
    fig.suptitle(f"{det.name}: calibrated p-values", fontsize=10, y=1.04)
    save_fig(fig, out, "pvalue_hist")
    save_csv(pd.DataFrame(rows), out, "pvalue_ks")
    return p_id


def calibration_curve(det: StatDetector, p_id: np.ndarray, out: Path) -> None:
    """Realised FPR on ID test against alpha, with a 95 % binomial band (figure and CSV)."""
    fpr = np.array([np.mean(p_id <= a) for a in ALPHAS])
    lo, hi = sps.binom.interval(0.95, len(p_id), ALPHAS)
    fig, ax = plt.subplots(figsize=(4, 3.4))
    ax.fill_between(ALPHAS, lo / len(p_id), hi / len(p_id), color="0.85", label="95% binomial band")
    ax.plot(ALPHAS, ALPHAS, "k--", lw=1, label="FPR = alpha")
    ax.plot(ALPHAS, fpr, "o-", ms=3, label="realised (ID test)")
    ax.set_xlabel("alpha")
    ax.set_ylabel("ID test rejected")
    ax.set_title(f"{det.name}: calibration", fontsize=10)
    ax.legend(fontsize=8)
    save_fig(fig, out, "calibration")
    save_csv(
        pd.DataFrame(
            {"alpha": ALPHAS, "fpr": fpr, "band_lo": lo / len(p_id), "band_hi": hi / len(p_id)}
        ),
        out,
        "calibration",
    )


def layer_auroc(cfg_det, prep, out: Path) -> None:
    """AUROC of each layer p-value (−log p as score) per tail, for each OOD set."""
    rows = []
    for tail in TAILS:
        det = build(cfg_det, "detector").with_options(tail=tail)
        det.fit_reference(prep.fit)
        p_id = det.layer_pvalues(prep.test)
        for name, f in prep.ood.items():
            p_ood = det.layer_pvalues(f)
            for j, key in enumerate(det.keys_):
                auc = ood_metrics(-np.log(p_id[:, j]), -np.log(p_ood[:, j]))["auroc"]
                rows.append({"tail": tail, "layer": key, "ood_dataset": name, "auroc": auc})
        if det.options.statistic != "channel":
            break  # distance statistics are one-sided by construction: one pass is enough
    df = pd.DataFrame(rows)
    save_csv(df, out, "layer_auroc")
    mean = df.groupby(["layer", "tail"], sort=False)["auroc"].mean().unstack()
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(mean), 3.2))
    mean.plot.bar(ax=ax, rot=0)
    ax.axhline(0.5, color="k", lw=0.8, ls="--")
    ax.set_ylabel("AUROC (mean over OOD sets)")
    ax.set_ylim(0, 1)
    ax.set_title(f"per-layer AUROC by tail ({cfg_det.name})", fontsize=10)
    save_fig(fig, out, "layer_auroc")


def combination_ablation(cfg_det, prep, out: Path) -> None:
    """AUROC per OOD set and fpr_at_0.05 for every within × across combination rule."""
    rows = []
    withins = (
        ("simes", "bonferroni", "fisher", "cauchy")
        if cfg_det.get("statistic", "channel") == "channel"
        else (cfg_det.get("within", "simes"),)
    )
    for within in withins:
        for across in ("fisher", "stouffer", "tippett", "simes", "cauchy", "hmp"):
            det = build(cfg_det, "detector").with_options(within=within, across=across)
            det.fit(prep.fit, prep.calib)
            s_id, p_id = det.score(prep.test), det.pvalues(prep.test)
            aucs = [ood_metrics(s_id, det.score(f))["auroc"] for f in prep.ood.values()]
            rows.append(
                {
                    "within": within,
                    "across": across,
                    "mean_auroc": np.mean(aucs),
                    **{f"auroc_{n}": a for n, a in zip(prep.ood, aucs, strict=True)},
                    "fpr_at_0.05": np.mean(p_id <= 0.05),
                }
            )
    save_csv(pd.DataFrame(rows), out, "combination_ablation")


def calib_size(cfg_det, prep, out: Path, redraws: int, seed: int) -> None:
    """Redraw the calib/test partition of the held-out ID pool; realised FPR at 0.05."""
    pool = concat(prep.calib, prep.test)
    det = build(cfg_det, "detector").fit_reference(prep.fit)
    rng = np.random.default_rng(seed)
    n_pool = len(pool)
    sizes = [n for n in (50, 100, 500) if n < n_pool - 50] + [len(prep.calib)]
    rows = []
    for n in sizes:
        for r in range(redraws):
            perm = rng.permutation(n_pool)
            det.calibrate(subset(pool, perm[:n]))
            p = det.pvalues(subset(pool, perm[n:]))
            rows.append({"n_calib": n, "redraw": r, "fpr_at_0.05": np.mean(p <= 0.05)})
    df = pd.DataFrame(rows)
    save_csv(df, out, "calib_size")
    fig, ax = plt.subplots(figsize=(4, 3.2))
    groups = [g["fpr_at_0.05"].to_numpy() for _, g in df.groupby("n_calib")]
    ax.boxplot(groups, tick_labels=[str(n) for n in sorted(df["n_calib"].unique())])
    ax.axhline(0.05, color="r", ls="--", lw=1, label="alpha = 0.05")
    ax.set_xlabel("n_calib")
    ax.set_ylabel("realised FPR on ID test")
    ax.set_title(f"{cfg_det.name}: {redraws} redraws per size", fontsize=10)
    ax.legend(fontsize=8)
    save_fig(fig, out, "calib_size")


def layer_correlation(det: StatDetector, test: Features, out: Path) -> None:
    """Spearman correlation of the layer p-values on ID test (figure and CSV)."""
    p = det.layer_pvalues(test)
    corr = pd.DataFrame(p, columns=det.keys_).corr(method="spearman")
    atomic_write(out / "layer_correlation.csv", lambda f: corr.to_csv(f, float_format="%.4f"))
    fig, ax = plt.subplots(figsize=(1.5 + 0.6 * len(corr), 1.2 + 0.6 * len(corr)))
    im = ax.imshow(corr.to_numpy(), vmin=-1, vmax=1, cmap="RdBu_r")
    ax.set_xticks(range(len(corr)), corr.columns, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(corr)), corr.columns, fontsize=8)
    for i in range(len(corr)):
        for j in range(len(corr)):
            ax.text(j, i, f"{corr.iat[i, j]:.2f}", ha="center", va="center", fontsize=7)
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_title("Spearman corr. of layer p-values (ID test)", fontsize=9)
    save_fig(fig, out, "layer_correlation")


def main(argv: list[str] | None = None) -> int:
    """Fit the statistical detector and write every analysis; returns the exit code."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--detector", default="stat_masf", help="a conf/detector option")
    p.add_argument("--out", type=Path, default=None, help="default results/analysis/<detector>")
    p.add_argument("--redraws", type=int, default=100, help="redraws per calibration size")
    p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. benchmark=digits_open")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    reproducible()
    cfg = compose([f"detector={args.detector}", *args.overrides])
    out = args.out or Path("results/analysis") / f"{cfg.benchmark.name}_{args.detector}"
    require_clean_tree(out, "analyze_detector.py")
    prep = prepare(cfg)
    det = build(cfg.detector, "detector")
    if not isinstance(det, StatDetector):
        raise SystemExit(f"{args.detector} is not a statistical detector (stat_*)")
    det.fit(prep.fit, prep.calib)
    p_id = pvalue_histograms(det, prep.test, prep.ood, out)
    calibration_curve(det, p_id, out)
    layer_correlation(det, prep.test, out)
    layer_auroc(cfg.detector, prep, out)
    combination_ablation(cfg.detector, prep, out)
    calib_size(cfg.detector, prep, out, args.redraws, int(cfg.seed))
    log.info("wrote the analysis of %s on %s to %s", args.detector, cfg.benchmark.name, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python
"""Paper figures (PNG + PDF, reproducible) from collected results and the feature cache.

    python scripts/make_figures.py results/raw --out results/figures
    python scripts/make_figures.py results/raw --out results/figures --roc digits:stat_masf,pood_knn

From the CSVs: AUROC vs corruption severity per detector (one panel per corruption), corrupted-ID
rejection at α = 0.05 vs severity (p-value detectors), and the p-value calibration plot
(realised ID rejection vs α). With ``--roc BENCHMARK:DET,DET``: ROC curves (scikit-learn's
``RocCurveDisplay``) and ID-vs-OOD score histograms, recomputed from the cached features (seed 0).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.metrics import RocCurveDisplay

from ood_bench.config import build, compose
from ood_bench.environment import require_clean_tree
from ood_bench.figures import reproducible, save_fig
from ood_bench.pipeline import prepare
from ood_bench.report import ok_rows, robustness_frame
from ood_bench.results import read_results

log = logging.getLogger("make_figures")


def robustness_figures(df: pd.DataFrame, out: Path) -> list[str]:
    """Per benchmark: mean AUROC and corrupted-ID rejection at α = 0.05 vs severity, one
    panel per corruption (severity 0 = clean); returns the figure names."""
    r = robustness_frame(df)
    made = []
    for bench, sub in r.groupby("benchmark"):
        shifted = sub[sub["corruption"] != "none"]
        if shifted.empty:
            continue
        clean = sub[sub["corruption"] == "none"]
        for value, label, name in (
            ("auroc", "mean AUROC over OOD sets", "robustness_auroc"),
            ("fpr_at_0.05", "corrupted ID rejected at α=0.05", "robustness_fpr"),
        ):
            data = shifted.dropna(subset=[value])
            if data.empty:
                continue
            corrs = sorted(data["corruption"].unique())
            fig, axes = plt.subplots(
                1, len(corrs), figsize=(3.2 * len(corrs), 3), sharey=True, squeeze=False
            )
            for ax, corr in zip(axes[0], corrs, strict=True):
                for det, d in data[data["corruption"] == corr].groupby("detector"):
                    base = clean[clean["detector"] == det][value].dropna()
                    pts = d.groupby("severity")[value].agg(["mean", "std"])
                    xs = ([0] if len(base) else []) + pts.index.astype(int).tolist()
                    ys = ([base.mean()] if len(base) else []) + pts["mean"].tolist()
                    ax.plot(xs, ys, marker="o", ms=3, label=det)
                ax.set_title(corr, fontsize=9)
                ax.set_xlabel("severity (0 = clean)")
                ax.set_xticks(range(0, 6))
            axes[0][0].set_ylabel(label)
            axes[0][-1].legend(fontsize=6, loc="best")
            fig.suptitle(f"{bench}: {label} vs corruption severity", fontsize=10, y=1.02)
            save_fig(fig, out, f"{bench}_{name}")
            made.append(f"{bench}_{name}")
    return made


def calibration_figure(df: pd.DataFrame, out: Path) -> list[str]:
    """Per benchmark: realised ID test rejection vs α per p-value detector (mean ± std over
    seeds); returns the figure names."""
    d = ok_rows(df)
    d = d[d["metric"].str.startswith("fpr_at_")]
    if d.empty:
        return []
    d = d.assign(alpha=d["metric"].str.removeprefix("fpr_at_").astype(float))
    made = []
    for bench, sub in d.groupby("benchmark"):
        fig, ax = plt.subplots(figsize=(4, 3.4))
        top = sub["alpha"].max() * 1.2
        ax.plot([0, top], [0, top], "k--", lw=1, label="FPR = α")
        for det, dd in sub.groupby("detector"):
            pts = dd.groupby("alpha")["value"].agg(["mean", "std"])
            ax.errorbar(
                pts.index,
                pts["mean"],
                yerr=pts["std"].fillna(0),
                marker="o",
                ms=3,
                capsize=2,
                label=det,
            )
        ax.set_xlabel("α")
        ax.set_ylabel("ID test rejected (mean ± std over seeds)")
        ax.set_title(f"{bench}: calibration of p-values", fontsize=10)
        ax.legend(fontsize=6)
        save_fig(fig, out, f"{bench}_pvalue_calibration")
        made.append(f"{bench}_pvalue_calibration")
    return made


def roc_figures(spec: str, out: Path, cache_dir: str | None) -> list[str]:
    """ROC curves and ID-vs-OOD score histograms for ``BENCHMARK:DET,DET`` (seed 0, cached
    features); returns the figure names."""
    bench_name, dets = spec.split(":", 1)
    detectors = dets.split(",")
    extra = [f"cache_dir={cache_dir}"] if cache_dir else []
    cfgs = {
        d: compose([f"benchmark={bench_name}", f"detector={d}", "seed=0", *extra])
        for d in detectors
    }
    prep = prepare(next(iter(cfgs.values())))
    n_sets = len(prep.ood)
    fig_roc, axes_roc = plt.subplots(1, n_sets, figsize=(3.3 * n_sets, 3.2), squeeze=False)
    fig_h, axes_h = plt.subplots(
        len(detectors), n_sets, figsize=(3.0 * n_sets, 2.2 * len(detectors)), squeeze=False
    )
    for i, (name, cfg) in enumerate(cfgs.items()):
        det = build(cfg.detector, "detector").fit(prep.fit, prep.calib)
        s_id = det.score(prep.test)
        for j, (set_name, feats) in enumerate(prep.ood.items()):
            s_ood = det.score(feats)
            y = np.r_[np.zeros(len(s_id)), np.ones(len(s_ood))]
            RocCurveDisplay.from_predictions(
                y, np.r_[s_id, s_ood], name=name, ax=axes_roc[0][j], plot_chance_level=(i == 0)
            )
            axes_roc[0][j].set_title(set_name, fontsize=9)
            ax = axes_h[i][j]
            lo, hi = np.percentile(np.r_[s_id, s_ood], [0.5, 99.5])
            bins = np.linspace(lo, hi if hi > lo else lo + 1, 40)
            ax.hist(s_id, bins=bins, alpha=0.6, density=True, label="ID test")
            ax.hist(s_ood, bins=bins, alpha=0.6, density=True, label=set_name)
            ax.set_title(f"{name} vs {set_name}", fontsize=8)
            ax.tick_params(labelsize=6)
        axes_h[i][0].legend(fontsize=6)
    for ax in axes_roc[0]:
        ax.legend(fontsize=6)
    fig_roc.suptitle(f"{bench_name}: ROC curves (OOD positive)", fontsize=10, y=1.02)
    save_fig(fig_roc, out, f"{bench_name}_roc")
    fig_h.suptitle(f"{bench_name}: score histograms (higher = more OOD)", fontsize=10, y=1.01)
    save_fig(fig_h, out, f"{bench_name}_score_hist")
    return [f"{bench_name}_roc", f"{bench_name}_score_hist"]


def main(argv: list[str] | None = None) -> int:
    """Write every figure the results allow (and the ``--roc`` ones); returns the exit code."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("results", nargs="+", type=Path, help="collected CSVs or folders of them")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument(
        "--roc",
        action="append",
        default=[],
        help="BENCHMARK:DET1,DET2 — ROC curves and histograms from cached features",
    )
    p.add_argument("--cache-dir", default=None)
    args = p.parse_args(argv)
    require_clean_tree(args.out, "make_figures.py")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    reproducible()
    df = read_results(*args.results)
    made = robustness_figures(df, args.out) + calibration_figure(df, args.out)
    for spec in args.roc:
        made += roc_figures(spec, args.out, args.cache_dir)
    log.info("wrote %d figures (PNG + PDF) to %s: %s", len(made), args.out, ", ".join(made))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

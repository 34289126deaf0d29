"""The paper's figure files: robustness and p-value calibration figures from the collected
results, ROC curves and score histograms recomputed from the cached features (PNG + PDF,
reproducible; ``ood-bench figures``)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ood_bench.figures import calibration_plots, robustness_plots, save_fig


def robustness_figures(df: pd.DataFrame, out: Path) -> list[str]:
    """Per benchmark: mean AUROC and corrupted-ID rejection at α = 0.05 vs severity, one
    panel per corruption (severity 0 = clean); returns the figure names."""
    return _save_all(robustness_plots(df), out)


def calibration_figure(df: pd.DataFrame, out: Path) -> list[str]:
    """Per benchmark: realised ID test rejection vs α per p-value detector (mean ± std over
    seeds); returns the figure names."""
    return _save_all(calibration_plots(df), out)


def _save_all(figs: list[tuple[str, plt.Figure]], out: Path) -> list[str]:
    """Save each (name, figure) as PNG + PDF into ``out``; returns the names."""
    for name, fig in figs:
        save_fig(fig, out, name)
    return [name for name, _ in figs]


def roc_figures(spec: str, out: Path, cache_dir: str | None) -> list[str]:
    """ROC curves and ID-vs-OOD score histograms for ``BENCHMARK:DET,DET`` (seed 0, cached
    features); returns the figure names."""
    from sklearn.metrics import RocCurveDisplay

    from ood_bench.config import compose
    from ood_bench.pipeline import fitted_detector, prepare

    bench_name, dets = spec.split(":", 1)
    detectors = dets.split(",")
    extra = [f"cache_dir={cache_dir}"] if cache_dir else []
    cfgs = {
        d: compose([f"benchmark={bench_name}", f"detector={d}", "seed=0", *extra])
        for d in detectors
    }
    prep = prepare(next(iter(cfgs.values())))
    n_sets = len(prep.ood)
    fig_roc, axes_roc = plt.subplots(
        1, n_sets, figsize=(3.4 * n_sets, 3.4), squeeze=False, sharey=True, layout="constrained"
    )
    fig_h, axes_h = plt.subplots(
        len(detectors),
        n_sets,
        figsize=(3.0 * n_sets, 2.2 * len(detectors)),
        squeeze=False,
        layout="constrained",
    )
    for i, (name, cfg) in enumerate(cfgs.items()):
        det = fitted_detector(cfg, prep, calibrate=False)  # seeded, bound, fitted
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
            ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 4))  # 1e5-scale scores
            ax.xaxis.get_offset_text().set_fontsize(6)
        axes_h[i][0].legend(fontsize=6)
    for j, ax in enumerate(axes_roc[0]):
        ax.legend(fontsize=6, loc="lower right")
        ax.set_xlabel("FPR (ID test rejected)", fontsize=8)
        ax.set_ylabel("TPR (OOD rejected)" if j == 0 else "", fontsize=8)
        ax.tick_params(labelsize=7)
    fig_roc.suptitle(f"{bench_name}: ROC curves (OOD positive)", fontsize=10)
    save_fig(fig_roc, out, f"{bench_name}_roc")
    fig_h.suptitle(f"{bench_name}: score histograms (higher = more OOD)", fontsize=10)
    save_fig(fig_h, out, f"{bench_name}_score_hist")
    return [f"{bench_name}_roc", f"{bench_name}_score_hist"]

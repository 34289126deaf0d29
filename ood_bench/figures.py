"""Figures shared by the report scripts and the results site: the robustness and p-value
calibration plots, and reproducible PNG + PDF output."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from ood_bench.atomic import atomic_write  # noqa: E402
from ood_bench.report import ok_rows, robustness_frame  # noqa: E402


def reproducible() -> None:
    """Fixed PDF dates (SOURCE_DATE_EPOCH) and SVG hash salt, so re-rendering gives equal files."""
    os.environ.setdefault("SOURCE_DATE_EPOCH", "0")
    plt.rcParams["svg.hashsalt"] = "ood-bench"


def save_fig(fig: plt.Figure, out: Path, name: str) -> None:
    """Write ``name.png`` and ``name.pdf`` into ``out`` atomically and close the figure."""
    for ext in ("png", "pdf"):
        meta = {"CreationDate": None} if ext == "pdf" else {}
        atomic_write(
            out / f"{name}.{ext}",
            lambda p, e=ext, m=meta: fig.savefig(
                p, format=e, dpi=150, bbox_inches="tight", metadata=m
            ),
        )
    plt.close(fig)


def robustness_plots(df: pd.DataFrame) -> list[tuple[str, plt.Figure]]:
    """Per benchmark: mean AUROC and corrupted-ID rejection at α = 0.05 vs severity, one
    panel per corruption (severity 0 = clean), as (``<benchmark>_robustness_<value>``,
    figure) pairs."""
    r = robustness_frame(df)
    made: list[tuple[str, plt.Figure]] = []
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
            made.append((f"{bench}_{name}", fig))
    return made


def calibration_plots(df: pd.DataFrame) -> list[tuple[str, plt.Figure]]:
    """Per benchmark: realised ID test rejection vs α per p-value detector (mean ± std over
    seeds), as (``<benchmark>_pvalue_calibration``, figure) pairs."""
    d = ok_rows(df)
    d = d[d["metric"].str.startswith("fpr_at_")]
    if d.empty:
        return []
    d = d.assign(alpha=d["metric"].str.removeprefix("fpr_at_").astype(float))
    made: list[tuple[str, plt.Figure]] = []
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
        made.append((f"{bench}_pvalue_calibration", fig))
    return made

"""The site's figures: SVG plots rendered from the CSVs (text kept as text, fixed hash salt and
no date, so the same data give the same bytes), and the committed PNGs that the CSVs cannot
rebuild (ROC curves and score histograms need the scores; novelty projections need the saved
samples), copied as they are."""

from __future__ import annotations

import io
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from ood_bench.figures import calibration_plots, robustness_plots  # noqa: E402
from ood_bench.site.sources import Source  # noqa: E402

# SVG: scalable and small for line plots, text searchable; deterministic with a fixed salt
SVG_RC = {"svg.hashsalt": "ood-bench-site", "svg.fonttype": "none"}


@dataclass(frozen=True)
class Figure:
    """An image of the site: its path in the site, bytes, caption and sources."""

    path: str
    data: bytes
    caption: str
    sources: tuple[Source, ...]

    @property
    def size(self) -> tuple[int, int]:
        """Width and height in CSS pixels (96 per inch) at the size the figure was drawn."""
        if self.data[:8] == b"\x89PNG\r\n\x1a\n":
            w, h = struct.unpack(">II", self.data[16:24])
            dpi = 96.0
            at = self.data.find(b"pHYs", 0, 4096)
            if at > 0:
                ppm, _, unit = struct.unpack(">IIB", self.data[at + 4 : at + 13])
                dpi = ppm * 0.0254 if unit == 1 else dpi
            return round(w * 96 / dpi), round(h * 96 / dpi)
        m = re.search(r'width="([0-9.]+)pt" height="([0-9.]+)pt"', self.data[:2000].decode())
        if m is None:
            raise ValueError(f"{self.path}: neither a PNG nor an SVG with its size in pt")
        return round(float(m.group(1)) * 4 / 3), round(float(m.group(2)) * 4 / 3)


def svg(fig: plt.Figure) -> bytes:
    """``fig`` as reproducible SVG bytes (the figure is closed)."""
    buf = io.BytesIO()
    with plt.rc_context(SVG_RC):
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    return buf.getvalue()


def rendered(
    figs: list[tuple[str, plt.Figure]], caption: str, sources: Callable[[str], pd.DataFrame]
) -> list[Figure]:
    """(name, figure) pairs of :mod:`ood_bench.figures` as site SVGs; ``sources(benchmark)``:
    the rows the benchmark's figure is drawn from (their ``source`` column names the files)."""
    out = []
    for name, fig in figs:
        bench = name.rsplit("_", 2)[
            0
        ]  # <benchmark>_robustness_auroc, <benchmark>_pvalue_calibration
        src = tuple(Source(p) for p in sorted(sources(bench)["source"].unique()))
        out.append(Figure(f"img/{name}.svg", svg(fig), f"{bench}: {caption}", src))
    return out


def robustness(df: pd.DataFrame) -> list[Figure]:
    """AUROC and corrupted-ID rejection vs severity, one panel per corruption (``df``: the
    rows of the detectors run under corruption, clean ones included)."""
    return rendered(
        robustness_plots(df),
        "mean over seeds vs corruption severity (0 = clean)",
        lambda b: df[df["benchmark"] == b],
    )


def pvalue_calibration(df: pd.DataFrame) -> list[Figure]:
    """Realised ID rejection vs α per p-value detector and benchmark."""
    return rendered(
        calibration_plots(df),
        "realised FPR vs α of the p-value detectors, mean ± std over seeds (dashed: FPR = α)",
        lambda b: df[(df["benchmark"] == b) & df["metric"].str.startswith("fpr_at_")],
    )


def calibration_curve(rel: str, d: pd.DataFrame) -> Figure:
    """One ``analysis/*/calibration.csv``: realised FPR vs α with its 95 % band, one line per
    benchmark (mean over seeds) when the file has several."""
    fig, ax = plt.subplots(figsize=(4.2, 3.4))
    top = d["alpha"].max()
    ax.plot([0, top], [0, top], "k--", lw=1, label="FPR = α")
    groups = d.groupby("benchmark") if "benchmark" in d else [(rel.split("/")[1], d)]
    for name, g in groups:
        m = g.groupby("alpha")[["fpr", "band_lo", "band_hi"]].mean()
        (line,) = ax.plot(m.index, m["fpr"], lw=1.2, label=str(name))
        ax.fill_between(m.index, m["band_lo"], m["band_hi"], color=line.get_color(), alpha=0.15)
    ax.set_xlabel("α")
    ax.set_ylabel("ID test rejected")
    ax.set_title(f"{rel.split('/')[1]}: realised FPR vs α (95 % band)", fontsize=9)
    ax.legend(fontsize=7)
    name = rel.replace("/", "_").removesuffix(".csv")
    caption = (
        f"{rel.split('/')[1]} analysis: realised FPR vs α (band: 95 % range of a valid "
        "p-value's realised FPR)"
    )
    return Figure(f"img/{name}.svg", svg(fig), caption, (Source(rel),))


def copied(root: Path, rel: str, caption: str) -> Figure:
    """A committed image under the results folder, copied as it is."""
    return Figure(
        f"img/{rel.replace('/', '_')}", (root / rel).read_bytes(), caption, (Source(rel),)
    )


MAX_CURVES = 6  # detectors drawn in a benchmark's ROC and histogram figures
PALETTE = plt.get_cmap("tab10").colors


def score_figures(
    bench: str, detectors: list[str], scores: dict, seed: int, sources: tuple
) -> list[Figure]:
    """ROC curves (one panel per OOD group, the group's sets pooled) and ID vs OOD score
    histograms (one panel per detector) of ``detectors`` on one seed, from their stored scores
    (``scores``: detector → :class:`ood_bench.scores.JobScores`); a detector keeps its colour in
    every panel."""
    import numpy as np
    from sklearn.metrics import roc_curve

    dets = [d for d in detectors if d in scores][:MAX_CURVES]
    if not dets:
        return []
    colour = {d: PALETTE[i % len(PALETTE)] for i, d in enumerate(dets)}
    groups = sorted({s.group for d in dets for s in scores[d].ood_sets.values()}, reverse=True)
    fig, axes = plt.subplots(1, len(groups), figsize=(4.4 * len(groups), 3.8), squeeze=False)
    for ax, g in zip(axes[0], groups, strict=True):
        for d in dets:
            js = scores[d]
            ood = [s.score for s in js.ood_sets.values() if s.group == g]
            if not ood:
                continue
            ood_all = np.concatenate(ood)
            y = np.r_[np.zeros(len(js.id_set.score)), np.ones(len(ood_all))]
            fpr, tpr, _ = roc_curve(y, np.r_[js.id_set.score, ood_all])
            ax.plot(fpr, tpr, lw=1.3, color=colour[d], label=d)
        ax.plot([0, 1], [0, 1], "k:", lw=0.8)
        ax.set_xlabel("FPR (ID rejected)")
        ax.set_ylabel("TPR (OOD rejected)")
        ax.set_title(f"{bench}: {g} OOD sets pooled, seed {seed}", fontsize=10)
        ax.legend(fontsize=8, loc="lower right")
    figs = [
        Figure(
            f"img/{bench}_roc.svg",
            svg(fig),
            f"{bench}: ROC curves (OOD positive) of the {len(dets)} best detectors on the "
            f"board of all OOD sets, seed {seed}, from the stored scores",
            sources,
        )
    ]
    cols = min(3, len(dets))
    rows = -(-len(dets) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.7 * rows), squeeze=False)
    for ax in axes.flat[len(dets) :]:
        ax.set_visible(False)
    for ax, d in zip(axes.flat, dets, strict=False):
        js = scores[d]
        sid = js.id_set.score
        sood = np.concatenate([s.score for s in js.ood_sets.values()])
        both = np.r_[sid, sood]
        # the central 99 % of the pooled scores: a few outliers must not squash every bar
        lo, hi = np.quantile(both, [0.005, 0.995])
        if hi <= lo:
            lo, hi = lo - 0.5, hi + 0.5
        bins = np.linspace(lo, hi, 41)
        ax.hist(
            np.clip(sid, lo, hi), bins, density=True, alpha=0.55, color="#3b75af", label="ID test"
        )
        ax.hist(
            np.clip(sood, lo, hi),
            bins,
            density=True,
            alpha=0.55,
            color="#e1812c",
            label="OOD (all sets)",
        )
        out = int(((both < lo) | (both > hi)).sum())
        ax.set_title(d, fontsize=10, color=colour[d])
        ax.set_xlabel("score (higher = more OOD)" + (f"; {out} clipped" if out else ""), fontsize=8)
        ax.tick_params(labelsize=8)
        ax.legend(fontsize=8)
    fig.tight_layout()
    figs.append(
        Figure(
            f"img/{bench}_score_hist.svg",
            svg(fig),
            f"{bench}: ID vs OOD score histograms, seed {seed}, central 99 % of the scores "
            "(the rest clipped into the end bins)",
            sources,
        )
    )
    return figs


def cd_figure(
    family: str, ranks, cd: float, n_blocks: int, p_value: float, sources: tuple
) -> Figure:
    """A critical-difference diagram (:func:`ood_bench.stats.cd_diagram`) as a site SVG."""
    from ood_bench.stats import cd_diagram

    title = f"{family}: AUROC, {n_blocks} blocks, Friedman p = {p_value:.2g}, CD = {cd:.2f}"
    fig = cd_diagram(ranks, cd, title=title)
    name = re.sub(r"[^a-z0-9]+", "_", family.lower()).strip("_")
    caption = (
        f"{family}: average rank by AUROC over the (benchmark, OOD set) blocks (1 = best); "
        "detectors joined by a bar are not significantly different (Nemenyi, 5 %)"
    )
    return Figure(f"img/cd_{name}.svg", svg(fig), caption, sources)

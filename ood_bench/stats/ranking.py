"""Many detectors across benchmarks: Friedman's test, Nemenyi's critical difference and its
diagram (Demšar 2006), and an optional Bayesian signed-rank comparison (baycomp).

Friedman's statistic is ``scipy.stats.friedmanchisquare``; Nemenyi's ``q_alpha`` is the
studentized range quantile (``scipy.stats.studentized_range``, infinite degrees of freedom)
over √2, which reproduces Demšar's table. The diagram is drawn here with matplotlib:
scikit-posthocs' ``critical_difference_diagram`` draws cliques from a p-value matrix without the
CD bar, and autorank's ``plot_stats`` needs autorank's own pipeline (which picks its tests
itself), so neither draws Demšar's figure from given ranks.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

log = logging.getLogger(__name__)


def rank_table(
    rows: pd.DataFrame,
    metric: str,
    blocks: Sequence[str] = ("benchmark", "ood_dataset"),
    detector: str = "detector",
    average_seeds: bool = True,
) -> pd.DataFrame:
    """Blocks × detectors table of ``metric`` from tidy result rows (``metric``, ``value``).

    With ``average_seeds`` a block's value is the mean over seeds (seeds of one benchmark are
    not independent data sets, Demšar's blocks); otherwise ``seed`` joins the block key. Blocks
    where a detector is missing are dropped (Friedman needs complete blocks), with a warning.
    """
    d = rows[rows["metric"] == metric]
    if d.empty:
        raise ValueError(
            f"no rows with metric {metric!r}: pick one of {sorted(rows['metric'].unique())}"
        )
    keys = list(blocks) + ([] if average_seeds else ["seed"])
    table = d.groupby([*keys, detector])["value"].mean().unstack(detector)
    complete = table.dropna()
    if len(complete) < len(table):
        log.warning(
            "%d of %d blocks lack a detector and are left out of the ranking: %s",
            len(table) - len(complete),
            len(table),
            list(table.index.difference(complete.index))[:5],
        )
    if complete.empty:
        raise ValueError(
            f"no block has every detector's {metric!r}: run the missing jobs or rank fewer "
            "detectors (select them before calling rank_table)"
        )
    return complete


def average_ranks(table: pd.DataFrame, higher_is_better: bool = True) -> pd.Series:
    """Mean rank of each detector (column) over blocks (rows); rank 1 = best, ties averaged."""
    values = table.to_numpy(dtype=np.float64)
    ranks = stats.rankdata(-values if higher_is_better else values, axis=1)
    return pd.Series(ranks.mean(axis=0), index=table.columns, name="rank").sort_values()


@dataclass(frozen=True)
class FriedmanResult:
    """Friedman's test over ``n_blocks`` blocks and ``k`` detectors, with the Iman–Davenport
    F form Demšar recommends (less conservative), and the average ranks (1 = best)."""

    statistic: float
    p_value: float
    iman_davenport: float
    p_iman_davenport: float
    n_blocks: int
    k: int
    ranks: pd.Series


def friedman(table: pd.DataFrame, higher_is_better: bool = True) -> FriedmanResult:
    """Friedman's test that every detector (column) ranks alike across blocks (rows)."""
    n, k = table.shape
    if k < 3 or n < 2:
        raise ValueError(
            f"Friedman's test needs at least 3 detectors and 2 blocks, got {k} and {n}: for two "
            "detectors use a paired test (scipy.stats.wilcoxon, or bayesian_signed_rank)"
        )
    values = table.to_numpy(dtype=np.float64)
    chi2, p = stats.friedmanchisquare(*values.T)
    ff = (n - 1) * chi2 / (n * (k - 1) - chi2) if n * (k - 1) > chi2 else np.inf
    p_ff = float(stats.f.sf(ff, k - 1, (k - 1) * (n - 1)))
    return FriedmanResult(
        float(chi2), float(p), float(ff), p_ff, n, k, average_ranks(table, higher_is_better)
    )


def nemenyi_q(k: int, alpha: float = 0.05) -> float:
    """Nemenyi's ``q_alpha`` for k detectors: studentized range quantile / √2 (Demšar's table)."""
    return float(stats.studentized_range.ppf(1 - alpha, k, np.inf) / np.sqrt(2))


def critical_difference(k: int, n_blocks: int, alpha: float = 0.05) -> float:
    """Nemenyi's critical difference ``q_alpha · sqrt(k (k + 1) / (6 N))`` (Demšar 2006)."""
    return nemenyi_q(k, alpha) * np.sqrt(k * (k + 1) / (6 * n_blocks))


def nemenyi_pvalues(ranks: pd.Series, n_blocks: int) -> pd.DataFrame:
    """Pairwise Nemenyi p-values from average ranks: the studentized range of the rank
    difference, ``|R_i − R_j| · √2 / sqrt(k (k + 1) / (6 N))``."""
    k = len(ranks)
    r = ranks.to_numpy()
    q = np.abs(r[:, None] - r[None, :]) * np.sqrt(2) / np.sqrt(k * (k + 1) / (6 * n_blocks))
    p = stats.studentized_range.sf(q, k, np.inf)
    np.fill_diagonal(p, 1.0)
    return pd.DataFrame(np.minimum(p, 1.0), index=ranks.index, columns=ranks.index)


def cliques(ranks: pd.Series, cd: float) -> list[tuple[int, int]]:
    """Maximal runs ``(first, last)`` of detectors (sorted by rank) spanning at most ``cd``:
    the groups the diagram joins by a bar (not significantly different)."""
    r = ranks.sort_values().to_numpy()
    out: list[tuple[int, int]] = []
    for i in range(len(r)):
        j = int(np.searchsorted(r, r[i] + cd + 1e-12, side="right")) - 1
        if j > i and not (out and out[-1][1] >= j):
            out.append((i, j))
    return out


def cd_diagram(
    ranks: pd.Series,
    cd: float,
    title: str | None = None,
    width: float | None = None,
):
    """Demšar's critical-difference diagram as a matplotlib Figure (returned, not saved).

    The axis carries the average ranks (1 = best, at the left); the bar above it is the
    critical difference; a thick line joins detectors whose ranks differ by at most ``cd``.
    ``width`` (inches) grows with the number of detectors unless given.
    """
    import matplotlib.pyplot as plt

    r = ranks.sort_values()
    k = len(r)
    names, values = list(r.index), r.to_numpy()
    half = (k + 1) // 2
    groups = cliques(r, cd)
    step = 0.25
    height = 1.0 + step * (half + 1) + 0.15 * len(groups)
    if width is None:
        width = max(6.0, 3.0 + 0.25 * k)
    fig, ax = plt.subplots(figsize=(width, height))
    lo, hi = 1, max(k, 2)
    ax.set_xlim(lo - 0.5, hi + 0.5)
    top = 0.0
    ax.hlines(top, lo, hi, color="k", lw=1)
    label_every = 1 if k <= 15 else 5
    for t in range(lo, hi + 1):
        ax.vlines(t, top, top + 0.06, color="k", lw=1)
        if t == lo or t % label_every == 0:
            ax.text(t, top + 0.1, str(t), ha="center", va="bottom", fontsize=8)
    # CD bar, above the axis at the left
    ax.hlines(top + 0.45, lo, lo + cd, color="k", lw=1.5)
    ax.vlines([lo, lo + cd], top + 0.40, top + 0.50, color="k", lw=1.5)
    ax.text(lo + cd / 2, top + 0.52, f"CD = {cd:.2f}", ha="center", va="bottom", fontsize=8)
    # detectors: the better half to the left, the rest to the right
    for i, (name, v) in enumerate(zip(names, values, strict=True)):
        left = i < half
        y = -(step * ((i if left else k - 1 - i) + 1) + 0.15 * len(groups))
        x_text = lo - 0.4 if left else hi + 0.4
        ax.plot([v, v, x_text], [top, y, y], color="k", lw=0.8)
        label = f"{name} ({v:.2f})" if left else f"({v:.2f}) {name}"
        ax.text(x_text, y, label, ha="right" if left else "left", va="center", fontsize=8)
    # cliques, just below the axis
    for g, (i, j) in enumerate(groups):
        y = -0.1 - 0.15 * g
        ax.hlines(y, values[i] - 0.03, values[j] + 0.03, color="k", lw=3)
    ax.set_ylim(-(step * (half + 1) + 0.15 * len(groups)), 0.8)
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def bayesian_signed_rank(
    x: np.ndarray,
    y: np.ndarray,
    rope: float = 0.01,
    higher_is_better: bool = True,
    nsamples: int = 50_000,
    seed: int = 0,
) -> dict[str, float]:
    """Bayesian signed-rank test (Benavoli et al. 2014) of detector x against y, one value of
    the metric per block: posterior probabilities that x is better by more than ``rope``, that
    they are practically equivalent, or that y is better (``p_x``, ``p_rope``, ``p_y``).
    Needs baycomp (``pip install ood-bench[stats]``)."""
    try:
        from baycomp import SignedRankTest
    except ImportError as e:
        raise ImportError(
            "bayesian_signed_rank needs baycomp: pip install 'baycomp>=1.0.3' "
            "(or the stats extra: pip install ood-bench[stats])"
        ) from e
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if not higher_is_better:
        x, y = -x, -y
    # baycomp works on y − x: "left" (y − x < −rope) is x better, "right" is y better
    p = SignedRankTest.probs(x, y, rope, nsamples=nsamples, random_state=seed)
    if rope > 0:
        p_x, p_rope, p_y = p
    else:
        (p_x, p_y), p_rope = p, 0.0
    return {"p_x": float(p_x), "p_rope": float(p_rope), "p_y": float(p_y)}

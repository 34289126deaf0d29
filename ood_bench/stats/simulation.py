"""Simulations that pin the statistics: binormal scores whose true metrics are known.

ID scores ~ N(0, 1), OOD scores ~ N(Δ, 1): true AUROC = Φ(Δ / √2), true FPR95 (either reading)
= Φ(z₀.₉₅ − Δ), true TPR at FPR f = 1 − Φ(z₁₋f − Δ). Two detectors share a correlation ρ
within each class and have the same Δ, hence the same true AUROC (the null of the paired test).
Used by tests/test_stats.py and ood-bench simulations.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import norm

from ood_bench.stats.intervals import (
    CHUNK_ELEMENTS,
    bootstrap_ci,
    delong,
    delong_from_placements,
    wald_interval,
)
from ood_bench.stats.paired import paired_bootstrap


def true_metric(metric: str, delta: float, fpr: float = 0.05) -> float:
    """The binormal model's true value of ``metric``."""
    if metric == "auroc":
        return float(norm.cdf(delta / np.sqrt(2)))
    if metric in ("fpr95_id", "fpr95_ood"):
        return float(norm.cdf(norm.ppf(0.95) - delta))
    if metric == "tpr_at_fpr":
        return float(norm.sf(norm.ppf(1 - fpr) - delta))
    raise ValueError(f"no true value for metric {metric!r}")


def binormal(
    rng: np.random.Generator,
    draws: int,
    n_id: int,
    n_ood: int,
    delta: float,
    k: int = 1,
    rho: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """``draws`` data sets of k detectors: ``(draws, k, n_id)`` and ``(draws, k, n_ood)``,
    scores of different detectors on one sample correlated by ``rho``."""

    def scores(n: int) -> np.ndarray:
        common = rng.standard_normal((draws, 1, n))
        own = rng.standard_normal((draws, k, n))
        return np.sqrt(rho) * common + np.sqrt(1 - rho) * own

    return scores(n_id), scores(n_ood) + delta


def _chunks(draws: int, per_draw: int) -> list[int]:
    size = max(1, CHUNK_ELEMENTS // per_draw)
    return [min(size, draws - s) for s in range(0, draws, size)]


def delong_coverage(
    draws: int = 2000,
    n_id: int = 100,
    n_ood: int = 100,
    delta: float = 1.0,
    level: float = 0.95,
    method: str = "logit",
    seed: int = 0,
) -> float:
    """Fraction of ``draws`` binormal data sets whose DeLong interval covers the true AUROC."""
    rng = np.random.default_rng(seed)
    truth = true_metric("auroc", delta)
    covered = 0
    for b in _chunks(draws, n_id + n_ood):
        s_id, s_ood = binormal(rng, b, n_id, n_ood, delta)
        auroc, cov = delong(s_id, s_ood)
        low, high = wald_interval(auroc[:, 0], np.sqrt(cov[:, 0, 0]), level, method)
        covered += int(np.sum((low <= truth) & (truth <= high)))
    return covered / draws


def delong_type1(
    draws: int = 2000,
    n_id: int = 100,
    n_ood: int = 100,
    delta: float = 1.0,
    rho: float = 0.5,
    alpha: float = 0.05,
    seed: int = 0,
) -> float:
    """Rejection rate of DeLong's paired test at ``alpha`` between two detectors with the same
    true AUROC and correlated scores (the null): its type-I error."""
    rng = np.random.default_rng(seed)
    rejected = 0
    for b in _chunks(draws, 2 * (n_id + n_ood)):
        s_id, s_ood = binormal(rng, b, n_id, n_ood, delta, k=2, rho=rho)
        auroc, cov = delong(s_id, s_ood)
        var = cov[:, 0, 0] + cov[:, 1, 1] - 2 * cov[:, 0, 1]
        z = (auroc[:, 0] - auroc[:, 1]) / np.sqrt(var)
        rejected += int(np.sum(2 * norm.sf(np.abs(z)) <= alpha))
    return rejected / draws


def delong_bruteforce(
    scores_id: np.ndarray, scores_ood: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """DeLong's AUROCs and covariance from the definition: placement values by comparing every
    (OOD, ID) pair, ψ = 1 above, 1/2 tied, 0 below. O(n·m); for checking :func:`delong`."""
    s_id, s_ood = np.atleast_2d(scores_id), np.atleast_2d(scores_ood)
    x, y = s_ood[:, :, None], s_id[:, None, :]  # (k, m, 1) vs (k, 1, n)
    psi = (x > y) + 0.5 * (x == y)
    return delong_from_placements(psi.mean(axis=1), psi.mean(axis=2))


def variance_agreement(
    fixtures: int = 200, max_n: int = 40, k: int = 3, seed: int = 0
) -> tuple[float, float]:
    """Largest absolute and relative difference between :func:`delong`'s covariance and the
    brute-force one over ``fixtures`` small random data sets of k detectors (half with ties)."""
    rng = np.random.default_rng(seed)
    worst_abs = worst_rel = 0.0
    for f in range(fixtures):
        n, m = rng.integers(2, max_n + 1, size=2)
        s_id = rng.standard_normal((k, n))
        s_ood = rng.standard_normal((k, m)) + rng.uniform(0, 2)
        if f % 2:  # coarse scores: many ties within and across classes
            s_id, s_ood = np.round(s_id * 2) / 2, np.round(s_ood * 2) / 2
        a_fast, c_fast = delong(s_id, s_ood)
        a_slow, c_slow = delong_bruteforce(s_id, s_ood)
        diff = max(np.max(np.abs(c_fast - c_slow)), np.max(np.abs(a_fast - a_slow)))
        worst_abs = max(worst_abs, float(diff))
        scale = np.max(np.abs(c_slow))
        if scale > 0:
            worst_rel = max(worst_rel, float(np.max(np.abs(c_fast - c_slow)) / scale))
    return worst_abs, worst_rel


def bootstrap_coverage(
    draws: int = 200,
    n_id: int = 500,
    n_ood: int = 500,
    delta: float = 2.0,
    metric: str = "fpr95_id",
    n_resamples: int = 500,
    level: float = 0.95,
    fpr: float = 0.05,
    seed: int = 0,
) -> float:
    """Fraction of ``draws`` binormal data sets whose percentile bootstrap interval of
    ``metric`` covers its true value."""
    rng = np.random.default_rng(seed)
    truth = true_metric(metric, delta, fpr)
    s_id, s_ood = binormal(rng, draws, n_id, n_ood, delta)
    covered = 0
    for d in range(draws):
        ci = bootstrap_ci(s_id[d, 0], s_ood[d, 0], metric, n_resamples, level, seed + d, fpr)
        covered += int(ci.low <= truth <= ci.high)
    return covered / draws


def bootstrap_type1(
    draws: int = 200,
    n_id: int = 500,
    n_ood: int = 500,
    delta: float = 2.0,
    rho: float = 0.5,
    metric: str = "fpr95_id",
    n_resamples: int = 500,
    alpha: float = 0.05,
    seed: int = 0,
) -> float:
    """Rejection rate of the paired bootstrap at ``alpha`` between two detectors with the same
    true ``metric`` and correlated scores (the null)."""
    rng = np.random.default_rng(seed)
    s_id, s_ood = binormal(rng, draws, n_id, n_ood, delta, k=2, rho=rho)
    rejected = 0
    for d in range(draws):
        r = paired_bootstrap(
            s_id[d, 0], s_ood[d, 0], s_id[d, 1], s_ood[d, 1], metric, n_resamples, seed=seed + d
        )
        rejected += int(r.p_value <= alpha)
    return rejected / draws

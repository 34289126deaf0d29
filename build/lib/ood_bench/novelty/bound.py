"""The count: how many of a batch's rejections can false alarms explain?

Given the calibration set (n samples), an ID test sample is rejected at level alpha with
probability pi ~ Beta(k, n - k + 1), k = floor(alpha (n + 1)), so the false rejections among
the batch's ID samples are Beta-binomial *marginally over the shared calibration set* (the
Binomial(m, alpha) ignores that dependence and breaks the level). Its upper quantile gives j*,
a bound on the false rejections, and R - j* a lower confidence bound on the true outliers.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import special, stats


def n_rejectable(alpha: float, n_calib: int) -> int:
    """k = floor(alpha (n + 1)): a conformal p-value is <= alpha iff fewer than k calibration
    scores reach the test score (k = 0: nothing can be rejected)."""
    return int(math.floor(alpha * (n_calib + 1) + 1e-9))


def _betabinom_quantile(size: int, k: int, n_calib: int, level: float) -> int:
    """Smallest q with P(V > q) <= level, V ~ Beta-binomial(size, k, n - k + 1): the pmf from
    log-gamma terms, summed (scipy's generic discrete ppf is a slow search)."""
    if size <= 0 or k == 0:
        return 0
    a, b = float(k), float(n_calib - k + 1)
    x = np.arange(size + 1, dtype=np.float64)
    logpmf = (
        special.gammaln(size + 1.0)
        - special.gammaln(x + 1.0)
        - special.gammaln(size - x + 1.0)
        + special.betaln(x + a, size - x + b)
        - special.betaln(a, b)
    )
    cdf = np.cumsum(np.exp(logpmf))
    return int(min(np.searchsorted(cdf, 1.0 - level - 1e-12), size))


def false_rejection_quantile(
    size: int | np.ndarray, alpha: float, n_calib: int, level: float
) -> np.ndarray:
    """Upper (1 - level) quantile of the number of rejected ID samples among ``size`` of them:
    the smallest q with P(V > q) <= level for V ~ Beta-binomial(size, k, n - k + 1)."""
    k = n_rejectable(alpha, n_calib)
    size = np.asarray(size, dtype=np.int64)
    out = [_betabinom_quantile(int(s), k, n_calib, level) for s in size.ravel()]
    return np.asarray(out, dtype=np.int64).reshape(size.shape)


def false_rejection_bound(m: int, r: int, alpha: float, n_calib: int, level: float) -> int:
    """j*: with probability >= 1 - level, at most j* of the r rejections among m samples are ID.

    The true ID set N satisfies V <= q(|N|) with probability >= 1 - level, and
    |N| <= m - r + V, so V <= j* = max{j <= r : j <= q(m - r + j)}. Since q(s) <= q(s + 1) <=
    q(s) + 1 (one more sample adds at most one rejection), j - q(m - r + j) is non-decreasing:
    the admissible j form an interval [0, j*], found by bisection.
    """
    if r == 0:
        return 0
    k = n_rejectable(alpha, n_calib)
    lo, hi = 0, r  # j = 0 is always admissible
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if mid <= _betabinom_quantile(m - r + mid, k, n_calib, level):
            lo = mid
        else:
            hi = mid - 1
    return lo


def excess_pvalue(m: int, r: int, alpha: float, n_calib: int) -> float:
    """P(V >= r) for V ~ Beta-binomial(m, k, n - k + 1): the p-value of "r rejections among m
    are all false alarms" (the global test of any outlier)."""
    k = n_rejectable(alpha, n_calib)
    if k == 0:
        return 1.0 if r == 0 else 0.0
    return float(stats.betabinom.sf(r - 1, m, k, n_calib - k + 1))

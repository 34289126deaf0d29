"""Statistical building blocks of a post-hoc OOD detector built from hypothesis tests.

- Empirical p-values of values against an ID reference sample, one column (channel) at a time,
  right, left or two-sided (:class:`EmpiricalReference`, :func:`empirical_pvalues`).
- Conformal p-values of OOD scores against a calibration sample (:func:`conformal_pvalues`):
  marginally valid whatever the score (Bates et al. 2023).
- Combinations of p-values along one axis (:func:`combine_pvalues`): the scipy methods and, by
  hand, those scipy lacks (Simes, Bonferroni, Cauchy/ACAT, harmonic mean p-value).
- Benjamini–Hochberg over a batch (:func:`benjamini_hochberg`).
- The calibration-conditional correction of conformal p-values (:func:`calibration_conditional`).
- The smallest p-value n calibration scores can give (:func:`smallest_pvalue`) and the
  calibration size a level needs (:func:`min_calib_size`).

Every function is vectorised with numpy; scipy does the work wherever it has the method.

References
----------
- Bates, Candès, Lei, Romano, Sesia (2023). Testing for outliers with conformal p-values.
  Ann. Statist. 51(1), 149–178. arXiv:2104.08279.
- Simes (1986). An improved Bonferroni procedure for multiple tests of significance. Biometrika.
- Liu & Xie (2020). Cauchy combination test: a powerful test with analytic p-value calculation
  under arbitrary dependency structures. JASA 115(529), 393–402.
- Wilson (2019). The harmonic mean p-value for combining dependent tests. PNAS 116(4), 1195–1200.
- Benjamini & Hochberg (1995). Controlling the false discovery rate. JRSS-B.
- Massart (1990). The tight constant in the Dvoretzky–Kiefer–Wolfowitz inequality. Ann. Probab.
- Sarkar (2008). On the Simes inequality and its generalization. IMS Collections 1, 231–242.
- Benjamini & Yekutieli (2001). The control of the false discovery rate in multiple testing
  under dependency. Ann. Statist.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy import special, stats

__all__ = [
    "COMBINERS",
    "EmpiricalReference",
    "Tail",
    "benjamini_hochberg",
    "calibration_conditional",
    "combine_pvalues",
    "conformal_pvalues",
    "empirical_pvalues",
    "min_calib_size",
    "smallest_pvalue",
]

Tail = Literal["right", "left", "two-sided"]
TAILS: tuple[str, ...] = ("right", "left", "two-sided")

_SCIPY_COMBINERS = ("fisher", "stouffer", "tippett", "pearson", "mudholkar_george")
_HAND_COMBINERS = ("simes", "bonferroni", "cauchy", "hmp")
COMBINERS: tuple[str, ...] = _SCIPY_COMBINERS + _HAND_COMBINERS
_WEIGHTED = ("stouffer", "bonferroni", "cauchy", "hmp")

_TINY = float(np.finfo(np.float64).tiny)  # smallest normal double: 1/p and log(p) stay finite
_CAUCHY_SMALL = 1e-15  # below this, cot(pi p) = 1/(p pi) to double precision (ACAT R package)
# location of the HMP's Landau law: 1 + digamma(1) - log(2/pi) ~ 0.874 (Wilson 2019, p.hmp)
_HMP_LOC0 = 1.0 + float(special.digamma(1.0)) - float(np.log(2.0 / np.pi))


class EmpiricalReference:
    """An ID reference sample, each column sorted once, for fast empirical p-values.

    ``ref`` is (n,) — one variable — or (n, d) — d variables (channels) tested separately. The
    columns are stored sorted, as float64, one contiguous row per column (shape (d, n)), so a
    p-value costs one ``np.searchsorted`` (O(log n)) per value.

    The p-value of x counts the reference values at least as extreme as x, ties included
    (conservative), plus one for x itself (the "+1" makes it valid in finite samples when x and
    the reference are exchangeable, as the conformal p-values of Bates et al. 2023):

    - right: (1 + #{ref >= x}) / (n + 1)  — large values are extreme;
    - left: (1 + #{ref <= x}) / (n + 1)  — small values are extreme;
    - two-sided: min(1, 2 · min(right, left)).

    Under the null (x exchangeable with the reference, continuous) ``P(p <= a) = floor(a (n+1)) /
    (n+1) <= a`` for one-sided p-values; with ties, or two-sided, ``P(p <= a) <= a``.
    """

    def __init__(self, ref: np.ndarray) -> None:
        ref = np.asarray(ref, dtype=np.float64)
        if ref.ndim not in (1, 2):
            raise ValueError(f"ref must have shape (n,) or (n, d), got {ref.shape}")
        if ref.shape[0] == 0:
            raise ValueError("ref is empty: an empirical p-value needs at least one value")
        if np.isnan(ref).any():
            raise ValueError("ref contains NaN")
        self._vector = ref.ndim == 1
        cols = ref[None, :] if self._vector else ref.T
        # (d, n) with C-contiguous rows: np.sort keeps the transposed (F) layout of ref.T, and
        # searchsorted on a strided row is ~4x slower
        self._sorted = np.ascontiguousarray(np.sort(cols, axis=1))
        self.n: int = int(ref.shape[0])

    @property
    def d(self) -> int | None:
        """Number of columns, or None for a 1-D reference."""
        return None if self._vector else int(self._sorted.shape[0])

    @property
    def nbytes(self) -> int:
        """Memory of the stored (sorted) reference in bytes."""
        return int(self._sorted.nbytes)

    def counts(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(#{ref >= x}, #{ref <= x})`` for every value of x (same shape as x)."""
        x = np.asarray(x, dtype=np.float64)
        if self._vector:
            col = self._sorted[0]
            return self.n - np.searchsorted(col, x, side="left"), np.searchsorted(
                col, x, side="right"
            )
        d = self._sorted.shape[0]
        if x.ndim != 2 or x.shape[1] != d:
            raise ValueError(f"x must have shape (m, {d}) for a reference with {d} columns")
        xt = np.ascontiguousarray(x.T)
        ge = np.empty(xt.shape, dtype=np.int64)
        le = np.empty(xt.shape, dtype=np.int64)
        for j in range(d):  # one searchsorted per column: d calls of O(m log n)
            ge[j] = self.n - np.searchsorted(self._sorted[j], xt[j], side="left")
            le[j] = np.searchsorted(self._sorted[j], xt[j], side="right")
        return ge.T, le.T

    def pvalues(self, x: np.ndarray, tail: Tail = "two-sided") -> np.ndarray:
        """Empirical p-values of x (shape (m,) for a 1-D reference — any shape works — or (m, d)).

        NaN in x gives NaN (not a spuriously small p-value).
        """
        if tail not in TAILS:
            raise ValueError(f"unknown tail {tail!r}; choose one of {TAILS}")
        x = np.asarray(x, dtype=np.float64)
        ge, le = self.counts(x)
        denom = self.n + 1.0
        if tail == "right":
            p = (1.0 + ge) / denom
        elif tail == "left":
            p = (1.0 + le) / denom
        else:
            p = np.minimum(1.0, 2.0 * (1.0 + np.minimum(ge, le)) / denom)
        p = np.asarray(p, dtype=np.float64)
        nan = np.isnan(x)
        if nan.any():
            p = np.where(nan, np.nan, p)
        return p


def empirical_pvalues(ref: np.ndarray, x: np.ndarray, tail: Tail = "two-sided") -> np.ndarray:
    """Empirical p-values of x against ``ref``: ``EmpiricalReference(ref).pvalues(x, tail)``."""
    return EmpiricalReference(ref).pvalues(x, tail)


def conformal_pvalues(calib_scores: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Conformal p-values of OOD scores (higher = more OOD): (1 + #{calib >= s}) / (n + 1).

    Bates et al. (2023), with their sign convention flipped (there, small scores are outlying).
    For a test point exchangeable with the n calibration points, ``P(p <= a) <= a`` for every a
    (marginally over calibration set and test point), whatever the score function.
    ``calib_scores`` is 1-D; ``scores`` any shape.
    """
    calib_scores = np.asarray(calib_scores, dtype=np.float64)
    if calib_scores.ndim != 1:
        raise ValueError(f"calib_scores must be 1-D, got shape {calib_scores.shape}")
    return EmpiricalReference(calib_scores).pvalues(scores, "right")


def _weights(weights: np.ndarray | None, n: int) -> np.ndarray:
    """Non-negative weights of length n normalised to sum 1 (equal weights by default)."""
    if weights is None:
        return np.full(n, 1.0 / n)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n,):
        raise ValueError(f"weights must have shape ({n},) to match the combined axis")
    if (w < 0).any() or not np.isfinite(w).all() or w.sum() <= 0:
        raise ValueError("weights must be finite, non-negative and not all zero")
    return w / w.sum()


def combine_pvalues(
    p: np.ndarray, method: str, axis: int = -1, weights: np.ndarray | None = None
) -> np.ndarray:
    """Combine p-values along ``axis`` into one p-value, vectorised over the other axes.

    Through ``scipy.stats.combine_pvalues`` (its ``axis`` argument): "fisher", "stouffer"
    (optionally weighted), "tippett" (min p; 1 − (1 − min p)^n, Šidák-exact under
    independence), "pearson", "mudholkar_george" (a Student-t
    approximation). These assume independent tests.

    By hand (scipy lacks them):

    - "simes": min_i n p_(i) / i (Simes 1986). Exact under independence, valid under positive
      dependence (PRDS; Benjamini & Yekutieli 2001), and = p when the p-values are all equal.
    - "bonferroni": min(1, n · min p); weighted: min(1, min_i p_i / w_i) with sum w = 1. Valid
      under any dependence.
    - "cauchy": ACAT (Liu & Xie 2020): T = sum_i w_i tan((0.5 − p_i) π) with sum w = 1,
      p = 0.5 − arctan(T) / π. Exact under independence, approximately valid for small p
      under arbitrary dependence. tan((0.5 − p) π) is computed as cot(π p) = 1 / tan(π p),
      and as 1/(p π) for p < 1e-15 (as the ACAT R package; equal there), the tail as
      arctan2(1, T) / π, which has no cancellation for large T (= ACAT's 1/(T π)). Caveat: a
      p-value of exactly 1 contributes −cot(π) ≈ −8e15 and pulls the combination to ≈ 1.
    - "hmp": harmonic mean p-value (Wilson 2019), asymptotically exact version: with
      1/HMP = sum_i w_i / p_i (sum w = 1) and L the number of p-values,
      p = P(Landau > 1/HMP) for a Landau law of location log L + 1 + ψ(1) − log(2/π)
      (≈ log L + 0.874) and scale π/2 — the R package harmonicmeanp's ``p.hmp``, whose
      FMStable S0 parametrisation (alpha = 1, location mu, scale sigma) is exactly
      ``scipy.stats.landau(loc=mu, scale=sigma)``. Asymptotically exact under independence
      (L large or p small), robust to dependence for small p (Wilson 2019); for a single p
      it returns ≈ p when p is small (0.0105 at p = 0.01) but less than p near 1.

    Inputs must lie in [0, 1]; every method sees them clipped to [tiny, 1] with tiny the
    smallest normal double (log 0, 1/0 and Φ⁻¹(0) would be infinite). NaN propagates.
    ``weights`` (1-D, length along ``axis``) only for "stouffer", "bonferroni", "cauchy", "hmp".
    """
    if method not in COMBINERS:
        raise ValueError(f"unknown combination method {method!r}; choose one of {COMBINERS}")
    if weights is not None and method not in _WEIGHTED:
        raise ValueError(f"weights are supported only by {_WEIGHTED}, not {method!r}")
    p = np.moveaxis(np.asarray(p, dtype=np.float64), axis, -1)
    if p.ndim == 0 or p.shape[-1] == 0:
        raise ValueError("nothing to combine: the combined axis is empty")
    if ((p < 0) | (p > 1)).any():
        raise ValueError("p-values must lie in [0, 1]")
    p = np.clip(p, _TINY, 1.0)
    n = p.shape[-1]

    if method in _SCIPY_COMBINERS:
        kwargs = {}
        if weights is not None:  # stouffer
            kwargs["weights"] = np.asarray(weights, dtype=np.float64)
            if kwargs["weights"].shape != (n,):
                raise ValueError(f"weights must have shape ({n},) to match the combined axis")
        with np.errstate(divide="ignore"):  # log1p(-1) = -inf for p = 1: pearson, mudholkar
            return np.asarray(stats.combine_pvalues(p, method, axis=-1, **kwargs).pvalue)

    if method == "simes":
        ranks = np.arange(1, n + 1, dtype=np.float64)
        return np.minimum(1.0, np.min(np.sort(p, axis=-1) * (n / ranks), axis=-1))

    w = _weights(weights, n)
    if method == "bonferroni":
        with np.errstate(divide="ignore"):
            return np.minimum(1.0, np.min(p / w, axis=-1))
    if method == "cauchy":
        cot = np.where(p < _CAUCHY_SMALL, 1.0 / (p * np.pi), 1.0 / np.tan(np.pi * p))
        t = np.sum(w * cot, axis=-1)
        return np.arctan2(1.0, t) / np.pi
    # hmp
    inv_hmp = np.sum(w / p, axis=-1)
    return np.minimum(1.0, stats.landau.sf(inv_hmp, loc=np.log(n) + _HMP_LOC0, scale=np.pi / 2))


def benjamini_hochberg(p: np.ndarray, alpha: float) -> np.ndarray:
    """Benjamini–Hochberg step-up at FDR level ``alpha``: the boolean reject mask.

    All entries of ``p`` form one family; rejected where the BH-adjusted p-value
    (``scipy.stats.false_discovery_control``) is <= alpha. Valid under independence or PRDS,
    which conformal p-values sharing one calibration set satisfy (Bates et al. 2023).
    """
    if not 0 < alpha <= 1:
        raise ValueError(f"alpha must lie in (0, 1], got {alpha}")
    p = np.asarray(p, dtype=np.float64)
    if p.size == 0:
        return np.zeros(p.shape, dtype=bool)
    adjusted = stats.false_discovery_control(p.ravel(), method="bh")
    return (adjusted <= alpha).reshape(p.shape)


def _simes_bounds(n: int, delta: float, k: int) -> np.ndarray:
    """b_1..b_n with P(U_(i) <= b_i for all i) >= 1 − delta (generalised Simes, Sarkar 2008).

    Bates et al. (2023), calibration-conditional section:
    b_{n+1-i} = 1 − delta^{1/k} (i(i−1)…(i−k+1) / (n(n−1)…(n−k+1)))^{1/k} for i >= k, and
    b_{n+1-i} = 1 for i < k; the products are taken through log-gamma.
    Same constants as ``compute_aseq`` in the authors' code
    (github.com/msesia/conditional-conformal-pvalues, cccpv/utils_calib.py).
    """
    i = np.arange(1, n + 1, dtype=np.float64)
    log_ratio = (special.gammaln(i + 1) - special.gammaln(np.maximum(i - k + 1, 1.0))) - (
        special.gammaln(n + 1.0) - special.gammaln(n - k + 1.0)
    )
    a = np.where(i >= k, np.exp((np.log(delta) + log_ratio) / k), 0.0)  # a_i, increasing in i
    return 1.0 - a[::-1]  # b_j = 1 − a_{n+1−j}


def calibration_conditional(
    p: np.ndarray,
    n_calib: int,
    delta: float = 0.1,
    method: Literal["simes", "dkw"] = "simes",
) -> np.ndarray:
    """Calibration-conditional correction of marginal conformal p-values (Bates et al. 2023).

    A marginal conformal p-value p̂ = i/(n+1) (n = ``n_calib``) is valid only on average over
    calibration sets: given the calibration set, P(p̂ <= i/(n+1) | calib) = U_(i), the i-th
    smallest of n uniforms (continuous scores). If 0 <= b_1 <= … <= b_n satisfy
    P(U_(i) <= b_i for all i) >= 1 − delta, then h(i/(n+1)) = b_i, h(1) = 1 gives, with
    probability >= 1 − delta over the calibration set, P(h(p̂) <= t | calib) <= t for all t.

    - "simes" (default, the paper's recommendation): b from the generalised Simes inequality
      with k = n // 2 (as the authors' code: k = int(n / 2)), see
      :func:`_simes_bounds`. For k = 1 this is Simes' equality: n = 2 gives b = (1 − delta,
      1 − delta/2).
    - "dkw": b_i = min(1, i/n + eps), eps = sqrt(log(1/delta) / (2n)) — derived here, not
      copied: on the event sup_t (t − G_n(t)) <= eps of the uniform empirical CDF G_n, which
      has probability >= 1 − exp(−2 n eps²) = 1 − delta by Massart's one-sided DKW inequality
      (valid for delta <= 1/2; for delta > 1/2 the two-sided constant log(2/delta) is used),
      G_n(b_i) >= i/n, i.e. U_(i) <= b_i. The authors' code uses p̂ + sqrt(log(2/delta)/(2n))
      instead (the two-sided constant on the (n+1) grid), which is larger for moderate n.

    Inputs off the grid are rounded up to the next multiple of 1/(n+1) (conservative). The
    output is max(h(p), p): still valid (h is only raised), monotone, never below the input.
    NaN propagates.
    """
    if method not in ("simes", "dkw"):
        raise ValueError(f"unknown method {method!r}; choose 'simes' or 'dkw'")
    if int(n_calib) != n_calib or n_calib < 1:
        raise ValueError(f"n_calib must be a positive integer, got {n_calib}")
    if not 0 < delta < 1:
        raise ValueError(f"delta must lie in (0, 1), got {delta}")
    n = int(n_calib)
    p = np.asarray(p, dtype=np.float64)

    if method == "simes":
        b = _simes_bounds(n, delta, max(1, n // 2))
    else:
        log_term = np.log(1.0 / delta) if delta <= 0.5 else np.log(2.0 / delta)
        eps = np.sqrt(log_term / (2.0 * n))
        b = np.minimum(1.0, np.arange(1, n + 1) / n + eps)
    b = np.maximum.accumulate(np.append(b, 1.0))  # h on the grid i = 1..n+1 (h(1) = 1)

    nan = np.isnan(p)
    idx = np.ceil(np.where(nan, 1.0, p) * (n + 1) - 1e-9)  # grid index, rounded up
    idx = np.clip(idx, 1, n + 1).astype(np.int64)
    out = np.maximum(b[idx - 1], p)
    return np.where(nan, np.nan, out)


def smallest_pvalue(
    n_calib: int, correction: Literal["simes", "dkw"] | None = None, delta: float = 0.1
) -> float:
    """The smallest conformal p-value ``n_calib`` calibration scores can give (p_min).

    A score above every calibration score gets 1/(n+1), the bottom of the conformal grid; with a
    ``correction`` (``simes``/``dkw``) that value passed through :func:`calibration_conditional`
    (for ``simes``: max(1/(n+1), 1 − delta^(1/k)), k = max(1, n//2)). No calibration score: 1
    (nothing can be rejected). A level alpha < p_min can never reject.
    """
    if int(n_calib) != n_calib or n_calib < 0:
        raise ValueError(f"n_calib must be a non-negative integer, got {n_calib}")
    n = int(n_calib)
    if n == 0:
        return 1.0
    p = 1.0 / (n + 1)
    if correction:
        p = float(calibration_conditional(np.array([p]), n, delta, correction)[0])
    return p


def min_calib_size(
    alpha: float, correction: Literal["simes", "dkw"] | None = None, delta: float = 0.1
) -> int:
    """The smallest calibration size n whose :func:`smallest_pvalue` is <= ``alpha``.

    Plainly n = ceil(1/alpha) − 1 (1/(n+1) <= alpha); with a correction, found by an exponential
    then a binary search (p_min does not increase with n).
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")

    def ok(n: int) -> bool:
        return smallest_pvalue(n, correction, delta) <= alpha

    hi = 1
    while not ok(hi):
        hi *= 2
    lo = hi // 2  # ok(lo) is False (or lo = 0, which never reaches alpha < 1)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok(mid) else (mid, hi)
    return hi

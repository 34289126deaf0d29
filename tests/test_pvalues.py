"""Known values and null-calibration simulations for ood_bench.pvalues.

Every simulation uses a fixed seed and a tolerance of 4 binomial standard errors, so a test fails
only when the method is wrong (or, with probability ~1e-4, by bad luck — fixed seeds make the
outcome reproducible).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from ood_bench.pvalues import (
    COMBINERS,
    EmpiricalReference,
    benjamini_hochberg,
    calibration_conditional,
    combine_pvalues,
    conformal_pvalues,
    empirical_pvalues,
    min_calib_size,
    smallest_pvalue,
)


def _se(p: float, n: int) -> float:
    return math.sqrt(p * (1 - p) / n)


# --------------------------------------------------------------------------- empirical p-values

REF = np.array([3.0, 1.0, 2.0, 5.0, 2.0])  # sorted: 1 2 2 3 5, n = 5, ties at 2
X = np.array([2.0, 0.0, 6.0, 3.0, 5.0, 2.5])
# by hand: #{ref >= x} = 4 5 0 2 1 2, #{ref <= x} = 3 0 5 4 5 3
RIGHT = np.array([5, 6, 1, 3, 2, 3]) / 6
LEFT = np.array([4, 1, 6, 5, 6, 4]) / 6
TWO = np.minimum(1, 2 * np.minimum(RIGHT, LEFT))  # 1, 1/3, 1/3, 1, 2/3, 1


def test_empirical_pvalues_hand_values_with_ties():
    ref = EmpiricalReference(REF)
    assert ref.n == 5
    np.testing.assert_allclose(ref.pvalues(X, "right"), RIGHT)
    np.testing.assert_allclose(ref.pvalues(X, "left"), LEFT)
    np.testing.assert_allclose(ref.pvalues(X, "two-sided"), [1, 1 / 3, 1 / 3, 1, 2 / 3, 1])
    np.testing.assert_allclose(ref.pvalues(X), TWO)  # default: two-sided
    np.testing.assert_allclose(empirical_pvalues(REF, X, "left"), LEFT)


def test_empirical_reference_2d_columns_and_shapes():
    col2 = np.array([10.0, 20.0, 30.0, 40.0, 50.0])
    ref = EmpiricalReference(np.column_stack([REF, col2]))
    x = np.column_stack([X, [25.0, 10.0, 60.0, 50.0, 0.0, 30.0]])
    p = ref.pvalues(x, "right")
    assert p.shape == (6, 2) and ref.d == 2
    np.testing.assert_allclose(p[:, 0], RIGHT)
    # column 2 by hand: #{ref >= x} = 3 5 0 1 5 3
    np.testing.assert_allclose(p[:, 1], np.array([4, 6, 1, 2, 6, 4]) / 6)
    for tail in ("left", "two-sided"):
        p = ref.pvalues(x, tail)
        np.testing.assert_allclose(p[:, 1], EmpiricalReference(col2).pvalues(x[:, 1], tail))
    with pytest.raises(ValueError, match="shape"):
        ref.pvalues(X, "right")  # 1-D x against a 2-column reference
    with pytest.raises(ValueError, match="shape"):
        ref.pvalues(np.zeros((3, 3)), "right")
    # a 1-D reference accepts any shape of x and keeps it
    assert EmpiricalReference(REF).pvalues(np.zeros((2, 3))).shape == (2, 3)
    assert EmpiricalReference(REF).pvalues(2.0, "right") == pytest.approx(5 / 6)


def test_empirical_reference_stores_sorted_float64_and_reports_memory():
    raw = np.array([[3, 9], [1, 7], [2, 8]], dtype=np.int32)
    ref = EmpiricalReference(raw)
    np.testing.assert_array_equal(raw, [[3, 9], [1, 7], [2, 8]])  # input untouched
    assert ref.nbytes == 3 * 2 * 8  # float64
    assert EmpiricalReference(np.zeros(100, dtype=np.float32)).nbytes == 800
    # order of the reference does not matter
    rng = np.random.default_rng(0)
    r = rng.normal(size=(50, 3))
    x = rng.normal(size=(20, 3))
    np.testing.assert_array_equal(
        EmpiricalReference(r).pvalues(x), EmpiricalReference(r[::-1]).pvalues(x)
    )


def test_empirical_reference_rejects_bad_input_and_propagates_nan():
    with pytest.raises(ValueError, match="tail"):
        EmpiricalReference(REF).pvalues(X, "upper")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        EmpiricalReference(np.zeros((2, 2, 2)))
    with pytest.raises(ValueError):
        EmpiricalReference(np.array([]))
    with pytest.raises(ValueError, match="NaN"):
        EmpiricalReference(np.array([1.0, np.nan]))
    p = EmpiricalReference(REF).pvalues(np.array([np.nan, 2.0]), "right")
    assert np.isnan(p[0]) and p[1] == pytest.approx(5 / 6)


def _exact_level(n: int, alpha: float, tail: str) -> float:
    """P(p <= alpha) for a continuous null: the rank r = #{ref < x} is uniform on 0..n."""
    r = np.arange(n + 1)
    right, left = (1 + n - r) / (n + 1), (1 + r) / (n + 1)
    p = {"right": right, "left": left, "two-sided": np.minimum(1, 2 * np.minimum(right, left))}
    return float(np.mean(p[tail] <= alpha + 1e-12))


@pytest.mark.parametrize("tail", ["right", "left", "two-sided"])
def test_empirical_pvalues_are_valid_and_exact_under_the_null(tail):
    # d independent (reference, test point) pairs as the columns of one (n, d) reference
    n, d = 29, 40_000
    rng = np.random.default_rng(1)
    p = EmpiricalReference(rng.normal(size=(n, d))).pvalues(rng.normal(size=(1, d)), tail)
    for alpha in (0.05, 0.1):
        level = _exact_level(n, alpha, tail)
        assert level <= alpha + 1e-12
        rate = float(np.mean(p <= alpha))
        assert abs(rate - level) <= 4 * _se(max(level, 1e-3), d), (alpha, rate, level)
    if tail != "two-sided":  # one-sided level is floor(alpha (n+1)) / (n+1): 1/30, 3/30
        assert _exact_level(n, 0.05, tail) == pytest.approx(1 / 30)
        assert _exact_level(n, 0.1, tail) == pytest.approx(3 / 30)


@pytest.mark.parametrize("tail", ["right", "left", "two-sided"])
def test_empirical_pvalues_stay_valid_with_ties(tail):
    n, d = 30, 40_000
    rng = np.random.default_rng(2)
    ref = rng.poisson(3.0, size=(n, d))
    p = EmpiricalReference(ref).pvalues(rng.poisson(3.0, size=(1, d)), tail)
    for alpha in (0.05, 0.1, 0.3):
        assert np.mean(p <= alpha) <= alpha + 4 * _se(alpha, d)


# --------------------------------------------------------------------------- conformal p-values


def test_conformal_pvalues_formula():
    calib = np.array([0.3, 0.1, 0.2, 0.2])
    s = np.array([0.2, 0.05, 0.35, 0.3])
    # #{calib >= s} = 3 4 0 1  ->  (1 + .) / 5
    np.testing.assert_allclose(conformal_pvalues(calib, s), [4 / 5, 1, 1 / 5, 2 / 5])
    np.testing.assert_allclose(conformal_pvalues(calib, s), empirical_pvalues(calib, s, "right"))
    with pytest.raises(ValueError):
        conformal_pvalues(np.zeros((3, 2)), s)


def test_conformal_pvalues_are_marginally_valid():
    n, reps = 19, 4000
    rng = np.random.default_rng(3)
    draws = [(rng.exponential(size=n), rng.exponential(size=1)) for _ in range(reps)]
    p = np.array([conformal_pvalues(calib, s)[0] for calib, s in draws])
    for alpha in (0.05, 0.1, 0.2):
        level = math.floor(alpha * (n + 1) + 1e-9) / (n + 1)  # = alpha here: n + 1 = 20
        assert abs(np.mean(p <= alpha) - level) <= 4 * _se(level, reps)
    # shifted test scores (OOD) get small p-values
    ood = conformal_pvalues(rng.exponential(size=200), rng.exponential(size=500) + 5)
    assert np.mean(ood <= 0.05) > 0.9


# --------------------------------------------------------------------------- combinations

SCIPY_METHODS = ("fisher", "stouffer", "tippett", "pearson", "mudholkar_george")


@pytest.mark.parametrize("method", SCIPY_METHODS)
def test_scipy_combiners_equal_scipy_row_by_row(method):
    rng = np.random.default_rng(4)
    p = rng.random((6, 7)) ** 2
    expected = [stats.combine_pvalues(row, method).pvalue for row in p]
    np.testing.assert_allclose(combine_pvalues(p, method, axis=1), expected, rtol=1e-12)
    np.testing.assert_allclose(combine_pvalues(p.T, method, axis=0), expected, rtol=1e-12)
    assert combine_pvalues(p[0], method) == pytest.approx(expected[0], rel=1e-12)


def test_weighted_stouffer_equals_scipy():
    rng = np.random.default_rng(5)
    p, w = rng.random((4, 5)), np.array([1.0, 2.0, 0.5, 3.0, 1.0])
    expected = [stats.combine_pvalues(row, "stouffer", weights=w).pvalue for row in p]
    np.testing.assert_allclose(combine_pvalues(p, "stouffer", weights=w), expected, rtol=1e-12)


@pytest.mark.parametrize("method", COMBINERS)
def test_combiners_vectorise_over_other_axes(method):
    rng = np.random.default_rng(6)
    p = rng.random((3, 4, 5))
    out = combine_pvalues(p, method, axis=1)
    assert out.shape == (3, 5)
    for i in range(3):
        for j in range(5):
            assert out[i, j] == pytest.approx(combine_pvalues(p[i, :, j], method), rel=1e-12)
    assert np.all((out >= 0) & (out <= 1))


def test_simes_and_bonferroni_hand_values():
    # sorted .01 .03 .04 .5 -> 4*.01/1, 4*.03/2, 4*.04/3, 4*.5/4 = .04 .06 .0533 .5
    assert combine_pvalues(np.array([0.01, 0.04, 0.03, 0.5]), "simes") == pytest.approx(0.04)
    # 3*.02/1, 3*.025/2, 3*.03/3 = .06 .0375 .03: the minimum is at the last rank
    assert combine_pvalues(np.array([0.03, 0.02, 0.025]), "simes") == pytest.approx(0.03)
    assert combine_pvalues(np.array([0.01, 0.04, 0.5]), "bonferroni") == pytest.approx(0.03)
    assert combine_pvalues(np.array([0.4, 0.5]), "bonferroni") == pytest.approx(0.8)
    assert combine_pvalues(np.array([0.6, 0.7]), "bonferroni") == 1.0
    # weighted Bonferroni, w normalised to (.75, .25): min(.03/.75, .02/.25) = .04
    w = np.array([3.0, 1.0])
    assert combine_pvalues(np.array([0.03, 0.02]), "bonferroni", weights=w) == pytest.approx(0.04)


def test_cauchy_known_values():
    for p in (0.5, 0.3, 0.01, 1e-8, 1e-20, 1e-300):
        assert combine_pvalues(np.array([p]), "cauchy") == pytest.approx(p, rel=1e-9, abs=0)
    # [0.01, 0.5]: T = (tan(0.49 pi) + tan(0)) / 2, p = 0.5 - arctan(T) / pi
    t = 0.5 * math.tan(0.49 * math.pi)
    by_hand = 0.5 - math.atan(t) / math.pi
    assert by_hand == pytest.approx(0.019980, abs=1e-6)
    assert combine_pvalues(np.array([0.01, 0.5]), "cauchy") == pytest.approx(by_hand, rel=1e-9)
    # weights: all the weight on the first p-value gives that p-value
    w = np.array([1.0, 0.0])
    assert combine_pvalues(np.array([0.2, 0.9]), "cauchy", weights=w) == pytest.approx(0.2)
    # tiny p-values: tail stays accurate (ACAT's 1/(T pi) regime)
    tiny = combine_pvalues(np.array([1e-20, 1e-20]), "cauchy")
    assert tiny == pytest.approx(1e-20, rel=1e-9, abs=0)


@pytest.mark.parametrize("p", [0.003, 0.04, 0.3])
def test_cauchy_and_simes_are_valid_under_perfect_dependence(p):
    same = np.full(20, p)  # 20 copies of one test
    assert combine_pvalues(same, "cauchy") == pytest.approx(p, rel=1e-9)
    assert combine_pvalues(same, "simes") == pytest.approx(p, rel=1e-12)
    assert combine_pvalues(same, "bonferroni") == pytest.approx(min(1, 20 * p))


def test_hmp_matches_wilsons_landau_law():
    # single small p: HMP p-value ~ p (Wilson 2019)
    assert combine_pvalues(np.array([0.01]), "hmp") == pytest.approx(0.01, rel=0.06)
    assert combine_pvalues(np.array([1e-4]), "hmp") == pytest.approx(1e-4, rel=0.01)
    # harmonicmeanp's p.hmp = 1 - FMStable S0(alpha=1, beta=1, log L + 0.874, pi/2) CDF at 1/HMP;
    # checked here against scipy's levy_stable in Nolan's S0 parametrisation
    p = np.array([0.02, 0.3, 0.5, 0.9, 0.05])
    inv_hmp = float(np.mean(1 / p))
    loc = math.log(5) + 1 - np.euler_gamma - math.log(2 / math.pi)
    assert loc == pytest.approx(math.log(5) + 0.874, abs=1e-3)
    stable = stats.levy_stable
    old = stable.parameterization
    try:
        stable.parameterization = "S0"
        expected = stable.sf(inv_hmp, 1.0, 1.0, loc=loc, scale=math.pi / 2)
    finally:
        stable.parameterization = old
    assert combine_pvalues(p, "hmp") == pytest.approx(expected, rel=1e-6)
    # weights: sum w/p with w normalised
    w = np.array([2.0, 1.0, 1.0, 1.0, 1.0])
    inv_w = float(np.sum(w / w.sum() / p))
    expected_w = stats.landau.sf(inv_w, loc=loc, scale=math.pi / 2)
    assert combine_pvalues(p, "hmp", weights=w) == pytest.approx(expected_w, rel=1e-12)


EXACT_UNDER_INDEPENDENCE = ("fisher", "stouffer", "tippett", "pearson", "simes", "cauchy")


@pytest.mark.parametrize("method", COMBINERS)
def test_combiners_are_calibrated_under_the_independent_null(method):
    reps, n = 8000, 10
    p = combine_pvalues(np.random.default_rng(7).random((reps, n)), method)
    for alpha in (0.01, 0.05):
        rate = float(np.mean(p <= alpha))
        assert rate <= alpha + 4 * _se(alpha, reps), (alpha, rate)
        if method != "bonferroni":  # Bonferroni is conservative: 1 - (1 - a/n)^n < a
            assert rate >= alpha - 4 * _se(alpha, reps), (alpha, rate)
    if method in EXACT_UNDER_INDEPENDENCE:
        assert stats.kstest(p, "uniform").pvalue > 1e-3


def test_combine_pvalues_input_checks_and_extremes():
    with pytest.raises(ValueError, match="cauchy"):  # the message lists the methods
        combine_pvalues(np.array([0.1, 0.2]), "average")
    with pytest.raises(ValueError, match="weights"):
        combine_pvalues(np.array([0.1, 0.2]), "fisher", weights=np.ones(2))
    with pytest.raises(ValueError, match="weights"):
        combine_pvalues(np.array([0.1, 0.2]), "cauchy", weights=np.ones(3))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        combine_pvalues(np.array([0.1, 1.2]), "simes")
    with pytest.raises(ValueError, match="empty"):
        combine_pvalues(np.zeros((3, 0)), "fisher")
    # p = 0 and p = 1 together: clipped to [tiny, 1], finite output, no NaN
    for method in COMBINERS:
        out = combine_pvalues(np.array([0.0, 1.0, 0.5]), method)
        assert np.isfinite(out) and 0 <= out <= 1, method
    assert np.isnan(combine_pvalues(np.array([np.nan, 0.5]), "cauchy"))


# --------------------------------------------------------------------------- Benjamini–Hochberg


def _bh_by_hand(p: np.ndarray, alpha: float) -> np.ndarray:
    """Step-up: reject the k smallest, k the largest rank with p_(k) <= k alpha / m."""
    m = p.size
    order = np.argsort(p)
    k = 0
    for rank in range(1, m + 1):
        if p[order[rank - 1]] <= rank * alpha / m:
            k = rank
    reject = np.zeros(m, dtype=bool)
    reject[order[:k]] = True
    return reject


def test_benjamini_hochberg_hand_examples():
    # sorted .005 .01 .028 .039 .2 vs .01 .02 .03 .04 .05: the 4 smallest are rejected
    p = np.array([0.01, 0.039, 0.028, 0.2, 0.005])
    np.testing.assert_array_equal(benjamini_hochberg(p, 0.05), [True, True, True, False, True])
    # step-up: .03 > 2*.05/4 but .035 <= 3*.05/4, so .03 is rejected too
    p = np.array([0.035, 0.001, 0.9, 0.03])
    np.testing.assert_array_equal(benjamini_hochberg(p, 0.05), [True, True, False, True])
    # alpha = .005: only .001 <= 1 * .005 / 4
    np.testing.assert_array_equal(benjamini_hochberg(p, 0.005), [False, True, False, False])
    assert not benjamini_hochberg(p, 0.001).any()  # .001 > .001 / 4
    assert not benjamini_hochberg(np.array([0.2, 0.5]), 0.05).any()
    # adjusted p-value equal to alpha is rejected (<=): .025 * 2 / 1 = .05 * 2 / 2 = .05
    assert benjamini_hochberg(np.array([0.025, 0.05]), 0.05).all()


def test_benjamini_hochberg_matches_hand_reference_and_keeps_shape():
    rng = np.random.default_rng(8)
    for _ in range(50):
        p = np.concatenate([rng.random(30), rng.random(10) * 0.01])
        for alpha in (0.05, 0.2):
            np.testing.assert_array_equal(benjamini_hochberg(p, alpha), _bh_by_hand(p, alpha))
    p2 = rng.random((4, 5)) * 0.1
    out = benjamini_hochberg(p2, 0.1)
    assert out.shape == (4, 5) and out.dtype == bool
    np.testing.assert_array_equal(out.ravel(), _bh_by_hand(p2.ravel(), 0.1))
    with pytest.raises(ValueError):
        benjamini_hochberg(p2, 0.0)


# ----------------------------------------------------------------------- calibration-conditional


def test_calibration_conditional_known_values():
    # Simes with n = 2 (k = 1): b = (1 - delta, 1 - delta / 2), exact Simes bound
    out = calibration_conditional(np.array([1 / 3, 2 / 3, 1.0]), 2, delta=0.1, method="simes")
    np.testing.assert_allclose(out, [0.9, 0.95, 1.0])
    # generalised Simes, n = 10, k = 5: b_{n+1-i} = 1 - delta^(1/k) (C_i / C_n)^(1/k), i >= k
    n, k, delta = 10, 5, 0.1
    expected = np.ones(n)
    for i in range(k, n + 1):
        ratio = math.prod(range(i - k + 1, i + 1)) / math.prod(range(n - k + 1, n + 1))
        expected[n - i] = 1 - delta ** (1 / k) * ratio ** (1 / k)
    grid = np.arange(1, n + 1) / (n + 1)
    np.testing.assert_allclose(calibration_conditional(grid, n, delta, "simes"), expected)
    # DKW: i/n + sqrt(log(1/delta) / (2n))
    eps = math.sqrt(math.log(10) / 200)
    out = calibration_conditional(np.array([10 / 101, 50 / 101]), 100, 0.1, "dkw")
    np.testing.assert_allclose(out, [0.1 + eps, 0.5 + eps])


@pytest.mark.parametrize("method", ["simes", "dkw"])
def test_calibration_conditional_is_monotone_and_never_below_input(method):
    for n in (1, 7, 100, 1000):
        grid = np.arange(1, n + 2) / (n + 1)
        for delta in (0.01, 0.1, 0.6):
            h = calibration_conditional(grid, n, delta, method)
            assert np.all(h >= grid) and np.all(np.diff(h) >= 0) and h[-1] == 1.0
    # off-grid inputs are rounded up to the grid; NaN propagates
    h = calibration_conditional(np.array([0.0, 0.26, np.nan]), 3, 0.1, method)
    ref = calibration_conditional(np.array([0.25, 0.5]), 3, 0.1, method)
    np.testing.assert_allclose(h[:2], ref)
    assert np.isnan(h[2])


@pytest.mark.parametrize("method", ["simes", "dkw"])
def test_calibration_conditional_bounds_all_order_statistics(method):
    # the grid values b_i = h(i/(n+1)) must bound every uniform order statistic w.p. >= 1 - delta
    n, reps, delta = 50, 20_000, 0.1
    b = calibration_conditional(np.arange(1, n + 1) / (n + 1), n, delta, method)
    u = np.sort(np.random.default_rng(9).random((reps, n)), axis=1)
    assert np.mean((u > b).any(axis=1)) <= delta + 4 * _se(delta, reps)


def _conditional_fpr(p_of_calib: str, n: int, reps: int, alpha: float, delta: float):
    """Per calibration set, P(p <= alpha | calib) for a U(0, 1) null test score, exactly.

    Columns of one EmpiricalReference are independent calibration sets; the conformal p-value is
    constant between consecutive calibration scores, so the conditional FPR is the total length
    of the intervals where the (corrected) p-value is <= alpha.
    """
    calib = np.random.default_rng(10).random((n, reps))
    edges = np.vstack([np.zeros(reps), np.sort(calib, axis=0), np.ones(reps)])
    mids = (edges[1:] + edges[:-1]) / 2
    p = EmpiricalReference(calib).pvalues(mids, "right")  # = conformal p-values
    if p_of_calib != "marginal":
        p = calibration_conditional(p, n, delta, p_of_calib)  # type: ignore[arg-type]
    return np.sum(np.diff(edges, axis=0) * (p <= alpha), axis=0)


def test_calibration_conditional_controls_the_conditional_fpr():
    n, reps, alpha, delta = 100, 2000, 0.1, 0.1
    marginal = _conditional_fpr("marginal", n, reps, alpha, delta)
    # marginal validity holds on average over calibration sets: E FPR = floor(alpha (n+1))/(n+1)
    assert marginal.mean() == pytest.approx(10 / 101, abs=0.004)
    # ... but for ~45 % of calibration sets the FPR exceeds alpha
    assert np.mean(marginal > alpha) > 0.3
    for method in ("simes", "dkw"):
        fpr = _conditional_fpr(method, n, reps, alpha, delta)
        assert np.mean(fpr > alpha) <= delta + 4 * _se(delta, reps), method
        assert np.all(fpr <= marginal)


def test_calibration_conditional_matches_conformal_pvalues_end_to_end():
    rng = np.random.default_rng(11)
    calib, scores = rng.normal(size=200), rng.normal(size=50)
    p = conformal_pvalues(calib, scores)
    out = calibration_conditional(p, 200, 0.05)
    assert out.shape == p.shape and np.all(out >= p)


def test_calibration_conditional_input_checks():
    p = np.array([0.5])
    with pytest.raises(ValueError):
        calibration_conditional(p, 10, 0.1, "bonferroni")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        calibration_conditional(p, 0, 0.1)
    with pytest.raises(ValueError):
        calibration_conditional(p, 10, 1.5)


# smallest attainable p-value (p_min) and the calibration size a level needs -----------------


@pytest.mark.parametrize("n", [0, 1, 2, 9, 19, 27, 99])
def test_smallest_pvalue_is_the_bottom_of_the_conformal_grid(n):
    """Plain: 1/(n+1), exactly what a score above every calibration score gets; 1 without data."""
    assert smallest_pvalue(n) == (1.0 if n == 0 else 1 / (n + 1))
    if n:
        calib = np.arange(n, dtype=float)
        assert conformal_pvalues(calib, np.array([n + 1.0]))[0] == smallest_pvalue(n)


def test_smallest_pvalue_with_a_correction_is_the_corrected_bottom():
    """The correction applied to 1/(n+1): Simes' b_1 = 1 − delta^(1/k), k = n // 2 (n = 2:
    1 − delta); DKW: 1/n + sqrt(log(1/delta) / (2n))."""
    assert smallest_pvalue(2, "simes", 0.1) == pytest.approx(0.9)
    assert smallest_pvalue(27, "simes", 0.1) == pytest.approx(1 - 0.1 ** (1 / 13))
    assert smallest_pvalue(27, "dkw", 0.1) == pytest.approx(1 / 27 + math.sqrt(math.log(10) / 54))
    for method in ("simes", "dkw"):
        for n in (5, 27, 300):
            calib = np.arange(n, dtype=float)
            p = calibration_conditional(
                conformal_pvalues(calib, np.array([n + 1.0])), n, 0.1, method
            )
            assert smallest_pvalue(n, method, 0.1) == p[0]


def test_min_calib_size_is_one_over_alpha_minus_one_without_correction():
    assert [min_calib_size(a) for a in (0.01, 0.05, 0.1, 0.2)] == [99, 19, 9, 4]


@pytest.mark.parametrize("method", [None, "simes", "dkw"])
@pytest.mark.parametrize("alpha", [0.01, 0.05, 0.1])
def test_min_calib_size_is_the_first_size_that_reaches_alpha(method, alpha):
    n = min_calib_size(alpha, method, 0.1)
    assert smallest_pvalue(n, method, 0.1) <= alpha < smallest_pvalue(n - 1, method, 0.1)


def test_min_calib_size_with_simes_in_closed_form():
    """Simes: 1 − delta^(1/k) <= alpha iff k >= log(delta) / log(1 − alpha), n = 2k."""
    for alpha in (0.01, 0.05, 0.1):
        k = math.ceil(math.log(0.1) / math.log(1 - alpha))
        assert min_calib_size(alpha, "simes", 0.1) == 2 * k

"""Pin ood_bench.stats: hand-worked cases, the brute-force definitions, the library functions it
must agree with, and the simulations of docs/statistics.md (small sizes here; larger ones slow)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from ood_bench.errors import ScoreError
from ood_bench.metrics import ood_metrics
from ood_bench.stats import (
    auroc_ci,
    average_ranks,
    bayesian_signed_rank,
    bootstrap_ci,
    bootstrap_distribution,
    cd_diagram,
    compare_with_reference,
    critical_difference,
    delong,
    delong_test,
    friedman,
    holm,
    intervals,
    nemenyi_pvalues,
    nemenyi_q,
    paired_bootstrap,
    rank_table,
    tpr_at_fpr,
)
from ood_bench.stats.intervals import point_estimate, resampled_metric
from ood_bench.stats.ranking import cliques
from ood_bench.stats.simulation import (
    bootstrap_coverage,
    bootstrap_type1,
    delong_bruteforce,
    delong_coverage,
    delong_type1,
    true_metric,
    variance_agreement,
)
from tests.conftest import ROOT

# --------------------------------------------------------------------------- DeLong


def test_delong_hand_worked():
    # ID [0, 1], OOD [1, 2]: pairs (1>0)=1, (1=1)=1/2, (2>0)=1, (2>1)=1 → AUROC 3.5/4.
    # placements: OOD [3/4, 1], ID [1, 3/4]; each has sample variance 1/32, so
    # var = (1/32)/2 + (1/32)/2 = 1/32.
    auroc, cov = delong([0.0, 1.0], [1.0, 2.0])
    assert auroc[0] == 0.875
    assert cov[0, 0] == pytest.approx(1 / 32, abs=1e-15)


def test_delong_auroc_is_the_metrics_auroc_ties_included():
    rng = np.random.default_rng(1)
    s_id = np.round(rng.normal(size=300), 1)
    s_ood = np.round(rng.normal(0.7, 1, size=200), 1)
    assert delong(s_id, s_ood)[0][0] == pytest.approx(ood_metrics(s_id, s_ood)["auroc"], abs=1e-12)
    assert auroc_ci(s_id, s_ood).auroc == pytest.approx(ood_metrics(s_id, s_ood)["auroc"])


def test_delong_covariance_equals_the_bruteforce_placements():
    rng = np.random.default_rng(2)
    s_id, s_ood = np.round(rng.normal(size=(3, 37)), 1), np.round(rng.normal(1, 1, (3, 23)), 1)
    a_fast, c_fast = delong(s_id, s_ood)
    a_slow, c_slow = delong_bruteforce(s_id, s_ood)
    np.testing.assert_allclose(a_fast, a_slow, rtol=0, atol=1e-14)
    np.testing.assert_allclose(c_fast, c_slow, rtol=0, atol=1e-15)
    assert c_fast[0, 1] != 0  # a real cross-covariance, not a diagonal by construction
    worst_abs, worst_rel = variance_agreement(fixtures=100, seed=3)
    assert worst_abs < 1e-14 and worst_rel < 1e-12


def test_delong_batches_agree_with_single_runs():
    rng = np.random.default_rng(4)
    s_id, s_ood = rng.normal(size=(5, 2, 50)), rng.normal(1, 1, (5, 2, 40))
    auroc, cov = delong(s_id, s_ood)
    for b in range(5):
        a1, c1 = delong(s_id[b], s_ood[b])
        np.testing.assert_allclose(auroc[b], a1)
        np.testing.assert_allclose(cov[b], c1)


def test_delong_rejects_bad_input():
    with pytest.raises(ScoreError, match="at least 2"):
        delong([0.0], [1.0, 2.0])
    with pytest.raises(ScoreError, match="NaN"):
        delong([0.0, np.nan], [1.0, 2.0])
    with pytest.raises(ScoreError, match="same samples"):
        delong_test([0, 1, 2], [3, 4], [0, 1], [3, 4])


def test_auroc_ci_perfect_separation_and_logit():
    ci = auroc_ci([0.0, 1.0, 2.0], [3.0, 4.0])
    assert (ci.auroc, ci.se, ci.low, ci.high) == (1.0, 0.0, 1.0, 1.0)
    rng = np.random.default_rng(5)
    s_id, s_ood = rng.normal(size=200), rng.normal(3, 1, 200)
    wald, logit = auroc_ci(s_id, s_ood, method="wald"), auroc_ci(s_id, s_ood, method="logit")
    assert logit.low < logit.auroc < logit.high < 1
    assert logit.se == wald.se and logit.low != wald.low
    assert auroc_ci(s_id, s_ood) == logit  # the default
    with pytest.raises(ValueError, match="wald"):
        auroc_ci(s_id, s_ood, method="exact")


@pytest.mark.parametrize("method", ["logit", "wald"])
@pytest.mark.parametrize("delta", [1.0, 2.0])
def test_delong_ci_covers_the_binormal_auroc_in_95_percent_of_2000_draws(delta, method):
    coverage = delong_coverage(2000, n_id=100, n_ood=100, delta=delta, method=method, seed=0)
    assert 0.935 <= coverage <= 0.965, coverage


def test_wald_under_covers_near_auroc_1_and_logit_does_not():
    # why auroc_ci defaults to the logit interval: AUROC 0.983 on 100 + 100 samples
    assert delong_coverage(2000, 100, 100, 3.0, method="wald", seed=0) < 0.92
    assert 0.935 <= delong_coverage(2000, 100, 100, 3.0, method="logit", seed=0) <= 0.965


def test_delong_paired_test_type1_error_at_most_6_percent_and_it_has_power():
    assert delong_type1(draws=2000, n_id=100, n_ood=100, delta=1.0, rho=0.5, seed=0) <= 0.06
    # a test that never rejects would pass the line above: under a real difference it rejects
    rng = np.random.default_rng(6)
    s_id, s_ood = rng.normal(size=(2, 300)), rng.normal(1, 1, (2, 300))
    s_ood[1] -= 0.5  # detector b separates less
    r = delong_test(s_id[0], s_ood[0], s_id[1], s_ood[1])
    assert r.diff > 0 and r.p_value < 1e-3 and r.low > 0


def test_delong_test_of_a_detector_with_itself():
    rng = np.random.default_rng(7)
    s_id, s_ood = rng.normal(size=50), rng.normal(1, 1, 40)
    r = delong_test(s_id, s_ood, s_id, s_ood)
    assert (r.diff, r.p_value) == (0.0, 1.0)


# --------------------------------------------------------------------------- bootstrap


def test_tpr_at_fpr_hand_worked():
    # ID (negatives) [0, 1, 2, 3], OOD [1.5, 2.5, 4]: at FPR ≤ 1/4 the threshold may flag only
    # ID 3, so the OOD above 2 count: 2.5 and 4 → 2/3; at FPR 0, only 4 → 1/3.
    scores = np.array([0, 1, 2, 3, 1.5, 2.5, 4.0])
    positive = np.array([0, 0, 0, 0, 1, 1, 1])
    assert tpr_at_fpr(scores, positive, 0.25) == pytest.approx(2 / 3)
    assert tpr_at_fpr(scores, positive, 0.0) == pytest.approx(1 / 3)
    assert tpr_at_fpr(scores, positive, 1.0) == 1.0


@pytest.mark.parametrize("n_id,n_ood", [(20, 20), (100, 60), (37, 101), (3, 2)])
@pytest.mark.parametrize("ties", [False, True])
def test_vectorised_statistic_equals_the_metrics_definition(n_id, n_ood, ties):
    rng = np.random.default_rng([n_id, n_ood, ties])
    s_id, s_ood = rng.normal(size=n_id), rng.normal(1, 1, n_ood)
    if ties:
        s_id, s_ood = np.round(s_id), np.round(s_ood)
    i_id = rng.integers(0, n_id, (40, n_id))
    i_ood = rng.integers(0, n_ood, (40, n_ood))
    for metric, fpr in [("fpr95_id", 0.05), ("fpr95_ood", 0.05), ("tpr_at_fpr", 0.05),
                        ("tpr_at_fpr", 0.1), ("tpr_at_fpr", 0.0), ("tpr_at_fpr", 1.0)]:  # fmt: skip
        fast = resampled_metric(s_id[i_id][:, None], s_ood[i_ood][:, None], metric, fpr)[:, 0]
        pairs = zip(i_id, i_ood, strict=True)
        slow = [point_estimate(s_id[a], s_ood[b], metric, fpr) for a, b in pairs]
        np.testing.assert_array_equal(fast, slow, err_msg=metric)


def test_point_estimates_are_the_metrics_values():
    rng = np.random.default_rng(8)
    s_id, s_ood = rng.normal(size=200), rng.normal(1.5, 1, 150)
    m = ood_metrics(s_id, s_ood)
    assert point_estimate(s_id, s_ood, "fpr95_id") == m["fpr95_id"]
    assert point_estimate(s_id, s_ood, "fpr95_ood") == m["fpr95_ood"]
    with pytest.raises(ValueError, match="fpr95_id"):
        point_estimate(s_id, s_ood, "auroc")


def test_bootstrap_is_seeded_and_independent_of_the_chunk_size(monkeypatch):
    rng = np.random.default_rng(9)
    s_id, s_ood = rng.normal(size=300), rng.normal(1.5, 1, 200)
    ci = bootstrap_ci(s_id, s_ood, "fpr95_id", n_resamples=300, seed=4)
    assert ci.n_resamples == 300 and ci.seed == 4 and ci.low <= ci.estimate <= ci.high
    assert ci.as_dict()["n_resamples"] == 300
    full = bootstrap_distribution(s_id, s_ood, "fpr95_ood", 300, seed=4)
    monkeypatch.setattr(intervals, "CHUNK_ELEMENTS", 1000)  # 3 resamples per chunk
    np.testing.assert_array_equal(bootstrap_distribution(s_id, s_ood, "fpr95_ood", 300, 4), full)
    assert bootstrap_ci(s_id, s_ood, "fpr95_id", n_resamples=300, seed=4) == ci
    assert bootstrap_ci(s_id, s_ood, "fpr95_id", n_resamples=300, seed=5) != ci


def test_bootstrap_rejects_unknown_metrics_and_counts():
    with pytest.raises(ValueError, match="tpr_at_fpr"):
        bootstrap_distribution([0, 1], [2, 3], "aupr_in")
    with pytest.raises(ValueError, match="at least 1"):
        bootstrap_distribution([0, 1], [2, 3], "fpr95_id", n_resamples=0)


@pytest.mark.parametrize("metric", ["fpr95_id", "fpr95_ood", "tpr_at_fpr"])
def test_bootstrap_ci_covers_the_binormal_value(metric):
    # looser band than DeLong's: 150 draws only (Monte-Carlo s.e. 1.8 points) and a percentile
    # interval of an order statistic, a little liberal at this size
    coverage = bootstrap_coverage(150, 300, 300, 2.0, metric, n_resamples=300, seed=1)
    assert 0.88 <= coverage <= 0.99, coverage


def test_paired_bootstrap_identical_different_and_mismatched():
    rng = np.random.default_rng(10)
    s_id, s_ood = rng.normal(size=(2, 400)), rng.normal(1.5, 1, (2, 400))
    same = paired_bootstrap(s_id[0], s_ood[0], s_id[0], s_ood[0], n_resamples=200)
    assert (same.diff, same.low, same.high, same.p_value) == (0.0, 0.0, 0.0, 1.0)
    worse = s_ood[1] - 1.0
    r = paired_bootstrap(s_id[0], s_ood[0], s_id[1], worse, "fpr95_id", n_resamples=500)
    assert r.diff < 0 and r.high < 0 and r.p_value == pytest.approx(1 / 501)
    assert r.n_resamples == 500 and r.method == "paired_bootstrap"
    with pytest.raises(ScoreError, match="same samples"):
        paired_bootstrap(s_id[0], s_ood[0], s_id[1][:-1], s_ood[1])


# --------------------------------------------------------------------------- Holm, one vs all


def test_holm_hand_worked():
    # sorted p 0.01, 0.02, 0.03, 0.5 → ×4, ×3, ×2, ×1 = 0.04, 0.06, 0.06 (monotone), 0.5
    np.testing.assert_allclose(holm([0.03, 0.5, 0.01, 0.02]), [0.06, 0.5, 0.04, 0.06])
    np.testing.assert_allclose(holm([0.4, 0.9]), [0.8, 0.9])
    assert holm([0.6, 0.7]).max() == 1.0


def test_holm_agrees_with_statsmodels():
    multitest = pytest.importorskip("statsmodels.stats.multitest")
    p = np.random.default_rng(12).uniform(size=30) ** 3
    np.testing.assert_allclose(holm(p), multitest.multipletests(p, method="holm")[1])


def test_compare_with_reference_picks_the_best_and_corrects():
    rng = np.random.default_rng(13)
    s_id = rng.normal(size=500)
    common = rng.normal(size=500)
    scores = {
        "best": (s_id, common + 2.0),
        "tied": (np.exp(s_id), np.exp(common + 2.0)),  # a monotone transform: the same ranks
        "worse": (s_id, common + 1.0),
    }
    df = compare_with_reference(scores, metric="auroc")
    assert set(df["reference"]) == {"best"} and list(df["detector"]) == ["tied", "worse"]
    assert df.set_index("detector")["different"].to_dict() == {"tied": False, "worse": True}
    assert (df["p_holm"] >= df["p_value"]).all()
    fpr = compare_with_reference(scores, metric="fpr95_id", n_resamples=300)
    assert fpr["reference"].iloc[0] == "best" and fpr["n_resamples"].iloc[0] == 300
    with pytest.raises(KeyError, match="nope"):
        compare_with_reference(scores, reference="nope")


# --------------------------------------------------------------------------- rankings


def test_friedman_matches_scipy_and_ranks_hand_worked():
    table = pd.DataFrame(
        {"a": [0.9, 0.8, 0.95, 0.7], "b": [0.8, 0.85, 0.9, 0.6], "c": [0.7, 0.6, 0.9, 0.5]}
    )
    # ranks per row (1 = highest): a 1,2,1,1  b 2,1,2.5,2  c 3,3,2.5,3
    assert average_ranks(table).to_dict() == {"a": 1.25, "b": 1.875, "c": 2.875}
    f = friedman(table)
    chi2, p = stats.friedmanchisquare(table["a"], table["b"], table["c"])
    assert (f.statistic, f.p_value) == (pytest.approx(chi2), pytest.approx(p))
    n, k = 4, 3
    assert f.iman_davenport == pytest.approx((n - 1) * chi2 / (n * (k - 1) - chi2))
    assert average_ranks(table, higher_is_better=False).index[0] == "c"
    with pytest.raises(ValueError, match="at least 3"):
        friedman(table[["a", "b"]])


def test_nemenyi_q_reproduces_demsars_table_and_example():
    # Demšar (2006), Table 5(a), alpha = 0.05, k = 2..10
    table = [1.960, 2.343, 2.569, 2.728, 2.850, 2.949, 3.031, 3.102, 3.164]
    assert [nemenyi_q(k) for k in range(2, 11)] == pytest.approx(table, abs=2e-3)
    # Demšar's worked example: k = 4 classifiers, N = 14 data sets → CD = 1.25
    assert critical_difference(4, 14) == pytest.approx(1.25, abs=5e-3)


def test_nemenyi_pvalues_are_alpha_at_the_critical_difference():
    cd = critical_difference(5, 20)
    ranks = pd.Series([1.0, 1.0 + cd, 2.0, 4.0, 5.0], index=list("abcde"))
    p = nemenyi_pvalues(ranks, 20)
    assert p.loc["a", "b"] == pytest.approx(0.05, abs=1e-6)
    assert p.loc["a", "c"] > 0.05 and p.loc["a", "e"] < 0.05 and p.loc["a", "a"] == 1.0


def test_nemenyi_agrees_with_scikit_posthocs():
    sp = pytest.importorskip("scikit_posthocs")
    rng = np.random.default_rng(14)
    data = rng.normal(size=(12, 5)) + np.arange(5) * 0.5
    ours = nemenyi_pvalues(average_ranks(pd.DataFrame(data)), 12).sort_index().sort_index(axis=1)
    theirs = sp.posthoc_nemenyi_friedman(data)
    np.testing.assert_allclose(ours.to_numpy(), theirs.to_numpy(), atol=1e-6)


def test_cliques_and_cd_diagram():
    ranks = pd.Series({"a": 1.0, "b": 1.5, "c": 2.2, "d": 3.9, "e": 4.4})
    assert cliques(ranks, 1.3) == [(0, 2), (3, 4)]
    assert cliques(ranks, 0.1) == []
    fig = cd_diagram(ranks, 1.3, title="digits")
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert "CD = 1.30" in texts and "a (1.00)" in texts and "(4.40) e" in texts
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_rank_table_averages_seeds_and_drops_incomplete_blocks(caplog):
    rows = pd.DataFrame(
        [
            {
                "benchmark": b,
                "ood_dataset": o,
                "detector": d,
                "seed": s,
                "metric": "auroc",
                "value": v + s * 0.01,
            }
            for b, o in [("digits", "noise"), ("mnist", "fashion")]
            for d, v in [("x", 0.9), ("y", 0.8), ("z", 0.7)]
            for s in (0, 1)
        ]  # fmt: skip
        + [
            {
                "benchmark": "cifar",
                "ood_dataset": "svhn",
                "detector": "x",
                "seed": 0,
                "metric": "auroc",
                "value": 0.5,
            }
        ]  # fmt: skip
    )
    t = rank_table(rows, "auroc")
    assert list(t.index) == [("digits", "noise"), ("mnist", "fashion")]
    assert t.loc[("digits", "noise"), "x"] == pytest.approx(0.905)
    assert "lack a detector" in caplog.text
    by_seed = rank_table(rows, "auroc", average_seeds=False)
    assert len(by_seed) == 4
    with pytest.raises(ValueError, match="fpr95_id"):
        rank_table(rows, "fpr95_id")


def test_bayesian_signed_rank_orientation():
    pytest.importorskip("baycomp")
    rng = np.random.default_rng(15)
    y = rng.uniform(0.8, 0.9, size=15)
    x = y + 0.05
    p = bayesian_signed_rank(x, y, rope=0.01, nsamples=2000)
    assert p["p_x"] > 0.9 and p["p_y"] < 0.05
    assert sum(p.values()) == pytest.approx(1.0)
    # for a lower-is-better metric (FPR95) the larger values lose
    assert bayesian_signed_rank(x, y, 0.01, higher_is_better=False, nsamples=2000)["p_y"] > 0.9


# --------------------------------------------------------------------------- slow simulations


@pytest.mark.slow
@pytest.mark.parametrize(
    "n,delta,method",
    [(1000, 1.0, "wald"), (1000, 2.5, "wald"), (1000, 1.0, "logit"), (1000, 2.5, "logit"),
     (1000, 3.0, "logit"), (300, 3.0, "logit")],
)  # fmt: skip
def test_delong_coverage_larger_samples(n, delta, method):
    coverage = delong_coverage(draws=2000, n_id=n, n_ood=n, delta=delta, method=method, seed=1)
    assert 0.935 <= coverage <= 0.965, coverage


@pytest.mark.slow
def test_delong_type1_larger_samples():
    assert delong_type1(draws=2000, n_id=1000, n_ood=500, delta=2.0, rho=0.8, seed=1) <= 0.06


@pytest.mark.slow
@pytest.mark.parametrize("metric", ["fpr95_id", "fpr95_ood"])
def test_paired_bootstrap_type1(metric):
    assert bootstrap_type1(300, 500, 500, 2.0, 0.5, metric, n_resamples=500, seed=2) <= 0.08


def test_true_metrics_of_the_binormal_model():
    assert true_metric("auroc", 0.0) == 0.5
    assert true_metric("fpr95_id", 0.0) == pytest.approx(0.95)
    assert true_metric("tpr_at_fpr", 0.0, 0.05) == pytest.approx(0.05)


# --------------------------------------------------------------------------- committed figures

SIMULATIONS = ROOT / "results" / "stats" / "simulations.csv"
BEGIN = "<!-- stats-simulations: ood-bench simulations --out results/stats/simulations.csv --summary -->\n"  # noqa: E501
END = "<!-- /stats-simulations -->"


def test_committed_simulations_hold_and_come_from_committed_code():
    df = pd.read_csv(SIMULATIONS)
    assert df["git_sha"].nunique() == 1 and "+dirty" not in df["git_sha"].iloc[0]
    by = dict(tuple(df.groupby("simulation")))
    assert set(by) == {"delong_coverage", "delong_type1", "variance_agreement",
                       "bootstrap_coverage", "bootstrap_type1"}  # fmt: skip
    cov = by["delong_coverage"]
    assert (cov["draws"] == 2000).all()
    # the bar, for the default interval wherever a normal interval can hold
    logit = cov[(cov["method"] == "logit") & (cov["truth"] < 0.99)]
    assert logit["value"].between(0.935, 0.965).all(), logit
    # type-I ≤ 6 % in 11 of 12 settings; the 12th (6.15 %) is not significantly above 5 %
    # (docs/statistics.md gives its re-runs), so: none significantly above 6 %, the mean at 5 %
    t1 = by["delong_type1"]
    assert (t1["draws"] == 2000).all() and (t1["mc_low"] <= 0.06).all()
    assert (t1["value"] <= 0.06).sum() >= len(t1) - 1 and t1["value"].mean() <= 0.055
    assert by["variance_agreement"]["value"].iloc[0] < 1e-12


def test_docs_quote_the_committed_simulations():
    from ood_bench.cli.simulations import summary

    page = (ROOT / "docs" / "statistics.md").read_text()
    assert BEGIN in page and END in page
    quoted = page.split(BEGIN)[1].split(END)[0]
    assert quoted == summary(pd.read_csv(SIMULATIONS)), (
        "docs/statistics.md's simulation block differs from results/stats/simulations.csv: paste "
        "the output of ood-bench simulations --out results/stats/simulations.csv --summary"
    )

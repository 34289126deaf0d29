"""Novelty detection: the count bound's guarantee, clustering metrics, configs, scenarios, runner.

The control tests fail if a scenario without a new class declares one.
"""

from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from scipy import stats

from ood_bench import novelty as nv
from ood_bench.config import build
from ood_bench.errors import ConfigError
from ood_bench.novelty.simulation import (
    conformal_rejections,
    fragmented_declarations,
    null_declarations,
)
from ood_bench.results import METRICS, read_results
from tests.conftest import CONF, FAST_TRAIN, run_module

ROOT = CONF.parent


# the count bound ----------------------------------------------------------------------------


def test_beta_binomial_quantile_is_valid_and_binomial_is_not():
    """Conformal p-values share the calibration set: the count of false rejections is
    Beta-binomial, wider than Binomial(m, alpha), whose quantile would break the level."""
    rng = np.random.default_rng(0)
    n_calib, m, alpha, level, reps = 100, 200, 0.1, 0.05, 3000
    v = conformal_rejections(rng, n_calib, m, alpha, reps)
    q = int(nv.false_rejection_quantile(m, alpha, n_calib, level))
    se = np.sqrt(level * (1 - level) / reps)
    assert (v > q).mean() <= level + 3 * se
    q_binom = int(stats.binom.ppf(1 - level, m, alpha))
    assert (v > q_binom).mean() > 2 * level  # the naive bound fails badly


def test_false_rejection_bound_covers_with_outliers():
    """j* bounds the false rejections when the batch also holds (rejected) outliers."""
    rng = np.random.default_rng(1)
    n_calib, m_id, n_out, alpha, level, reps = 150, 120, 80, 0.1, 0.05, 1500
    v = conformal_rejections(rng, n_calib, m_id, alpha, reps)
    j = np.array(
        [nv.false_rejection_bound(m_id + n_out, int(x) + n_out, alpha, n_calib, level) for x in v]
    )
    assert (v > j).mean() <= level + 3 * np.sqrt(level * (1 - level) / reps)
    # and it is informative: far fewer than all rejections
    assert np.median(j) < 0.5 * np.median(v + n_out)


def test_quantile_and_bisection_match_scipy_and_brute_force():
    rng = np.random.default_rng(4)
    for _ in range(60):
        m, n = int(rng.integers(5, 300)), int(rng.integers(20, 300))
        r = int(rng.integers(0, m + 1))
        alpha, level = float(rng.choice([0.01, 0.05, 0.1])), float(rng.choice([0.05, 0.001]))
        k = nv.n_rejectable(alpha, n)
        q = nv.false_rejection_quantile(m, alpha, n, level)
        assert q == (stats.betabinom.ppf(1 - level, m, k, n - k + 1) if k else 0)
        j = np.arange(r + 1)
        ok = j <= nv.false_rejection_quantile(m - r + j, alpha, n, level)
        assert nv.false_rejection_bound(m, r, alpha, n, level) == j[ok].max()


def test_excess_pvalue_is_super_uniform_and_k_zero_rejects_nothing():
    rng = np.random.default_rng(2)
    v = conformal_rejections(rng, 60, 100, 0.05, 2000)
    p = np.array([nv.excess_pvalue(100, int(x), 0.05, 60) for x in v])
    assert (p <= 0.05).mean() <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / 2000)
    assert nv.n_rejectable(0.05, 10) == 0  # p >= 1/11 > 0.05: nothing can be rejected
    assert int(nv.false_rejection_quantile(50, 0.05, 10, 0.05)) == 0
    assert nv.false_rejection_bound(50, 0, 0.05, 100, 0.05) == 0


# certification of fragmented classes --------------------------------------------------------
def test_union_certification_keeps_the_level_under_the_null():
    """ID-only batches, conformal p-values with a fresh calibration set each time, every
    rejection put in some candidate cluster, fragmented at random: the union certification
    declares in at most `level` of the batches (and close to it: the bound is not vacuous)."""
    reps, level = 4000, 0.05
    nd = nv.NoveltyDetector("t", alpha=0.05, level=level, criteria={"certify": "union"})
    rate = null_declarations(nd, np.random.default_rng(11), 200, 400, reps).mean()
    assert rate <= level + 3 * np.sqrt(level * (1 - level) / reps)
    assert rate >= level / 4  # the test can fail: the level is nearly reached


def test_union_certification_finds_a_fragmented_class_the_per_cluster_rule_misses():
    """A new class split into fragments each smaller than j*: certify=any never declares it,
    certify=union always does."""
    found = {
        mode: fragmented_declarations(
            nv.NoveltyDetector(mode, criteria={"certify": mode}),
            np.random.default_rng(12),
            500,
            1000,
            300,
            200,
        ).mean()
        for mode in ("union", "any", "each")
    }
    assert found == {"union": 1.0, "any": 0.0, "each": 0.0}


# clustering and its metrics ------------------------------------------------------------------
def test_cluster_accuracy_uses_the_best_matching():
    y = np.array([0, 0, 1, 1, 2, 2])
    assert nv.cluster_accuracy(y, np.array([5, 5, 3, 3, 9, 9])) == 1.0
    assert nv.cluster_accuracy(y, np.array([5, 5, 3, 3, -1, -1])) == pytest.approx(4 / 6)
    assert nv.cluster_accuracy(y, np.array([1, 1, 1, 1, 1, 1])) == pytest.approx(2 / 6)
    s = nv.clustering_scores(y, np.array([2, 2, 0, 0, 1, 1]))
    assert s == {"cluster_acc": 1.0, "nmi": pytest.approx(1.0), "ari": pytest.approx(1.0)}


@pytest.mark.parametrize(
    "kw",
    [
        {"method": "hdbscan", "min_cluster_size": 10},
        {"method": "gmm", "select": "bic", "k_max": 6},
        {"method": "kmeans", "select": "silhouette", "k_max": 6},
        {"method": "kmeans", "select": "bic", "k_max": 6},
    ],
)
def test_clusterers_find_separated_blobs(kw):
    rng = np.random.default_rng(3)
    centres = np.array([[0, 0, 0], [5, 0, 0], [0, 5, 0]], dtype=float)
    y = np.repeat(np.arange(3), 40)
    z = centres[y] + 0.3 * rng.standard_normal((120, 3))
    labels = nv.Clusterer(**kw)(z)
    assert nv.clustering_scores(y, labels)["ari"] > 0.9


def test_true_classes_of_digits_open():
    from sklearn.datasets import load_digits

    from ood_bench.data.digits import build_digits

    bench = build_digits("digits_open", [0, 1, 2, 3, 4, 5], [6, 7, 8, 9], seed=0)
    y = nv.true_classes(bench.ood_set("digits_6_7_8_9"))
    t = load_digits().target
    assert len(y) == 714 and np.array_equal(y, t[t >= 6])
    assert nv.true_classes(bench.ood_set("uniform_noise")) is None


# configs -------------------------------------------------------------------------------------
def compose_novelty(*overrides: str):
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        return compose(config_name="novelty", overrides=list(overrides))


@pytest.mark.parametrize("option", sorted(p.stem for p in (CONF / "novelty").glob("*.yaml")))
def test_novelty_options_instantiate(option):
    cfg = compose_novelty(f"novelty={option}")
    nd = build(cfg.novelty, "novelty")
    assert isinstance(nd, nv.NoveltyDetector) and nd.name == option


def test_scenarios_load_and_foreign_benchmarks_skip_with_a_message(open_prep):
    from ood_bench.run_novelty import skip_reason

    cfg = compose_novelty()
    files = {p.stem for p in (CONF / "novelty" / "scenario").glob("*.yaml")}
    assert set(cfg.scenarios) == files
    for name, sc_cfg in cfg.scenarios.items():
        sc = nv.Scenario(name=name, **sc_cfg)
        reason = skip_reason(sc, open_prep.bench)
        if name in ("mnist_split", "cifar10_split"):
            assert reason and f"benchmark={name}" in reason, reason
        elif name == "cross_domain":  # digits_open has no fashionmnist set
            assert reason and "fashionmnist" in reason, reason
        else:
            assert reason is None, (name, reason)


def test_bad_novelty_settings_are_config_errors():

    with pytest.raises(ConfigError, match="clustering.method"):
        nv.NoveltyDetector("x", clustering={"method": "dbscan"})
    with pytest.raises(ConfigError, match="criteria"):
        nv.NoveltyDetector("x", criteria={"min_sizes": 3})
    with pytest.raises(ConfigError, match="level"):
        nv.NoveltyDetector("x", level=1.5)


# on the digits_open features -----------------------------------------------------------------
@pytest.fixture(scope="module")
def open_overrides(cache_dir):
    return ("benchmark=digits_open", FAST_TRAIN, f"cache_dir={cache_dir}")


@pytest.fixture(scope="module")
def open_prep(open_overrides):
    from ood_bench.pipeline import prepare

    return prepare(compose_novelty(*open_overrides))


@pytest.fixture(scope="module")
def open_setup(open_prep, open_overrides):
    """The default method (novelty=hdbscan) fitted on stat_maha_cauchy, and the per-set arrays."""
    from ood_bench.run_novelty import fit_detector

    cfg = compose_novelty(*open_overrides)
    det = build(cfg.detector, "detector")
    fit_detector(det, open_prep)
    nd = build(cfg.novelty, "novelty").fit(det, open_prep.fit, open_prep.calib)
    pool = nv.Sample.concat([nd.sample(open_prep.calib), nd.sample(open_prep.test)])
    near = open_prep.ood["digits_6_7_8_9"]
    new = nd.sample(near, nv.NEW, nv.true_classes(near.source))
    noise = nv.Sample.concat(
        [nd.sample(open_prep.ood[s], nv.NUISANCE) for s in ("uniform_noise", "gaussian_noise")]
    )
    return cfg, nd, pool, new, noise


def _batch_trials(setup, scenario, n_trials, seed=0):
    cfg, nd, pool, new, noise = setup
    sc = nv.Scenario(name=scenario, **cfg.scenarios[scenario])
    empty = pool.take(np.empty(0, dtype=np.int64))
    rng = np.random.default_rng(seed)
    new_s = new if sc.has_new_class else empty
    nuisance = noise if sc.nuisance_sets else empty
    return sc, [
        nv.run_batch_trial(nd, sc, pool, new_s, nuisance, cfg.n_calib, rng, t)[0]
        for t in range(n_trials)
    ]


@pytest.mark.parametrize("scenario", ["control_id", "control_noise"])
def test_control_scenario_declares_no_new_class(open_setup, scenario):
    """Fails if a control (no new class: ID only, or ID + noise) declares a new class."""
    sc, trials = _batch_trials(open_setup, scenario, 25)
    declared = [t.trial for t in trials if t.declared]
    assert not declared, f"{scenario} declared a new class in trials {declared}"
    assert nv.summarise(trials, sc)["novelty_false_alarm"] == 0.0


def test_digits_open_finds_the_new_classes(open_setup):
    sc, trials = _batch_trials(open_setup, "digits_open", 8)
    s = nv.summarise(trials, sc)
    assert s["novelty_decision_acc"] == 1.0
    assert 2 <= s["n_new_est"] <= 6 and s["n_new_true"] == 4
    assert s["cluster_acc"] > 0.5 and s["nmi"] > 0.45 and s["ari"] > 0.35
    assert s["outlier_bound_coverage"] == 1.0


def test_detect_explains_its_decision(open_setup, open_prep):
    _, nd, pool, _, _ = open_setup
    nd.calibrate(nd.sample(open_prep.calib))
    res = nd.detect(open_prep.ood["digits_6_7_8_9"])
    assert res.new_class and res.n_new >= 1
    assert len(res.labels) == res.n_rejected == len(res.rejected)
    assert res.true_lower == res.n_rejected - res.false_bound
    assert "NEW CLASS" in res.summary()
    assert all(
        c.is_new == (not c.known and c.large and c.compact and c.typical) for c in res.clusters
    )


def test_domain_option_decides_whether_another_domain_is_a_new_class(open_setup):
    """Noise is low-level atypical: not a new class with domain=same (the default), declared
    with domain=any; a scenario of another domain is a control only under same."""
    _, nd, *_ = open_setup
    assert nd.domain == "same"
    try:
        nd.domain = "any"
        sc, trials = _batch_trials(open_setup, "control_noise", 6)
        assert sum(t.declared for t in trials) >= 5
    finally:
        nd.domain = "same"
    cross = nv.Scenario(name="x", new_sets=["fashionmnist"], other_domain=True)
    assert not cross.is_novel("same") and cross.is_novel("any")
    assert nv.Scenario(name="y", new_sets=["near"]).is_novel("same")
    with pytest.raises(ConfigError, match="domain"):
        nv.NoveltyDetector("x", domain="other")


def test_assignment_moves_unclustered_rejections_to_the_nearest_new_class(open_setup):
    """After the decision the unclustered new-class samples join a declared class (never a
    known class's cluster), which raises ACC; the decision is unchanged."""
    cfg, nd, pool, new, noise = open_setup
    sc = nv.Scenario(name="digits_open", **cfg.scenarios["digits_open"])
    out = {}
    for assign in (False, True):
        nd.assign_unclustered = assign
        rng = np.random.default_rng(5)
        empty = pool.take(np.empty(0, dtype=np.int64))
        out[assign] = [
            nv.run_batch_trial(nd, sc, pool, new, empty, cfg.n_calib, rng, t) for t in range(4)
        ]
    nd.assign_unclustered = True
    for (tr0, res0, _), (tr1, res1, _) in zip(out[False], out[True], strict=True):
        assert tr0.declared == tr1.declared and res0.n_new == res1.n_new
        moved = (res0.labels < 0) & (res1.labels >= 0)
        assert moved.any() and set(res1.labels[moved]) <= set(res1.new_clusters)
        assert np.array_equal(res0.labels[res0.labels >= 0], res1.labels[res0.labels >= 0])
    acc = {k: np.mean([tr.scores["cluster_acc"] for tr, _, _ in v]) for k, v in out.items()}
    assert acc[True] > acc[False]


def test_stream_alarms_after_the_change_only(open_setup):
    cfg, nd, pool, new, _ = open_setup
    sc = nv.Scenario(name="stream", **cfg.scenarios["stream"])
    rng = np.random.default_rng(0)
    trials = [nv.run_stream_trial(nd, sc, pool, new, cfg.n_calib, rng, t) for t in range(6)]
    s = nv.summarise(trials, sc)
    assert s["stream_false_alarm"] == 0.0
    assert s["stream_detect_rate"] >= 0.5
    assert 0 < s["stream_delay"] < 120


# the runner and the report -------------------------------------------------------------------
def test_run_novelty_writes_tidy_rows_and_the_report(open_prep, open_overrides, tmp_path):
    out = tmp_path / "run"
    run_module(
        "-m",
        "ood_bench.run_novelty",
        *open_overrides,
        "trials=3",
        "novelty/scenario@scenarios=[digits_open,mnist_split,stream,control_id,control_noise]",
        f"hydra.run.dir={out}",
        cwd=ROOT,
    )
    df = read_results(out / "metrics.csv")
    assert (df["status"] == "ok").all()
    assert set(df["detector"]) == {"stat_maha_cauchy+hdbscan"}
    assert (df["calib_source"] == "train").all()  # the harness trained this digits_cnn
    emitted = set(df["metric"])
    undocumented = emitted - set(METRICS) - set(nv.NOVELTY_METRICS)
    assert not undocumented, f"metrics without an entry: {undocumented}"
    scen = df[df["ood_group"] == "novelty"]
    assert set(scen["ood_dataset"]) == {"digits_open", "stream", "control_id", "control_noise"}
    acc = scen.set_index(["ood_dataset", "metric"])["value"]
    assert acc[("control_id", "novelty_false_alarm")] == 0.0
    assert acc[("control_noise", "novelty_false_alarm")] == 0.0
    with gzip.open(out / "novelty_trials.csv.gz", "rt") as f:
        assert len(pd.read_csv(f)) == 12  # 4 scenarios × 3 trials
    assert (out / "novelty_samples.csv.gz").is_file()

    rep = tmp_path / "report"
    run_module(
        "-m", "ood_bench.cli", "novelty-report", str(out), "--out", str(rep), "--quiet", cwd=ROOT
    )
    text = (rep / "novelty.md").read_text()
    assert "control_noise" in text and "digits_open" in text
    for ext in ("png", "pdf"):
        assert (rep / f"novelty_digits_open_stat_maha_cauchy_hdbscan_digits_open.{ext}").is_file()


@pytest.mark.slow
def test_control_false_alarm_rate_over_many_trials(open_setup):
    """The controls' false-alarm rate stays at or below the level over 200 trials each."""
    level = open_setup[1].level
    for scenario in ("control_id", "control_noise"):
        _, trials = _batch_trials(open_setup, scenario, 200, seed=7)
        k = sum(t.declared for t in trials)
        assert k <= stats.binom.ppf(0.99, 200, level), (scenario, k)

"""The statistical detector's parts: the registry of statistics, the typed options, and the
smallest fit set each statistic declares (issue 26, items 10 and 15)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import yaml

from ood_bench.detectors.stat import (
    REGISTRY,
    LayerStatistic,
    StatDetector,
    StatOptions,
    register,
    registered,
)
from ood_bench.detectors.stat.layers import layer_array
from ood_bench.detectors.stat.statistics import DistanceStatistic
from ood_bench.errors import ConfigError
from ood_bench.features import Features
from ood_bench.metrics import ood_metrics
from tests.conftest import CONF

PRESETS = {p.stem: yaml.safe_load(p.read_text()) for p in (CONF / "detector").glob("stat_*.yaml")}


def subset(f: Features, idx: np.ndarray) -> Features:
    return Features(
        f.logits[idx], f.penultimate[idx], f.labels[idx], {k: v[idx] for k, v in f.taps.items()}
    )


def option_for(name: str) -> dict:
    """The option that selects statistic ``name``: ``statistic`` or ``output_test``."""
    return {"output_test": name} if REGISTRY[name].output else {"statistic": name}


# the registry ----------------------------------------------------------------------------------


def test_every_preset_names_registered_statistics():
    for stem, cfg in PRESETS.items():
        assert cfg["statistic"] in registered(output=False), stem
        assert cfg.get("output_test") in (None, *registered(output=True)), stem


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_registered_statistic_is_reachable_and_detects_noise(name, digits_features):
    """Each registered statistic is selected by some preset or by its option, fits, and tells
    uniform noise from ID test digits. A newly registered statistic is picked up here."""
    f = digits_features
    in_presets = [s for s, c in PRESETS.items() if name in (c["statistic"], c.get("output_test"))]
    det = StatDetector("r", **option_for(name)).fit(f["fit"], f["calib"])
    assert isinstance(det.statistics_[-1], REGISTRY[name]), in_presets
    auc = ood_metrics(det.score(f["test"]), det.score(f["uniform_noise"]))["auroc"]
    assert auc > 0.75, (name, auc)
    p = det.pvalues(f["test"])
    assert ((p > 0) & (p <= 1)).all()


def test_unknown_statistic_lists_the_registered_ones_with_a_did_you_mean():
    with pytest.raises(ConfigError) as err:
        StatDetector("x", statistic="mahalanobsi")
    msg = str(err.value)
    assert "detector.statistic='mahalanobsi'" in msg and "did you mean 'mahalanobis'" in msg
    assert all(repr(n) in msg for n in registered(output=False)), msg
    with pytest.raises(ConfigError, match=r"output_test='energie'.*did you mean 'energy'"):
        StatDetector("x", output_test="energie")
    with pytest.raises(ConfigError, match=r"'knn'.*registered statistic"):  # wrong family
        StatDetector("x", output_test="knn")


def test_a_new_statistic_is_one_registered_class(digits_features):
    """How to add a statistic (docs/statistical-detector.md): one class, registered by name,
    is at once an option value (and reached by the tests above)."""

    @register("l1")
    class L1Statistic(DistanceStatistic):
        def _fit_model(self, z, pred, num_classes):
            self.median_ = np.median(z, axis=0)

        def distance(self, z, pred, exclude_self=False):
            return np.abs(z - self.median_).sum(1)

    try:
        assert "l1" in registered() and isinstance(REGISTRY["l1"](), LayerStatistic)
        f = digits_features
        det = StatDetector("l1", statistic="l1").fit(f["fit"], f["calib"])
        assert all(isinstance(s, L1Statistic) for s in det.statistics_)
        assert ood_metrics(det.score(f["test"]), det.score(f["uniform_noise"]))["auroc"] > 0.6
    finally:
        del REGISTRY["l1"]
    with pytest.raises(ValueError, match="registered twice"):
        register("knn")(L1Statistic)


# the options -----------------------------------------------------------------------------------


def test_options_are_frozen_and_checked_by_check_types():
    opts = StatOptions(layers=["block1"])
    assert opts.layers == ("block1",)
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.k = 3  # type: ignore[misc]
    with pytest.raises(ConfigError, match=r"detector\.k=0: k-NN needs k >= 1"):
        dataclasses.replace(opts, k=0)  # replace validates too
    # the same message as any other option's wrong type (ood_bench.config.check_types)
    with pytest.raises(
        ConfigError,
        match=r"detector\.k='ten' is a str, but ood_bench\.detectors\.stat\.StatDetector "
        r"expects k to be int\. Fix: give detector\.k a value of that type \(its default: "
        r"detector\.k=10\)",
    ):
        StatDetector("x", k="ten")
    with pytest.raises(ConfigError, match=r"include_logits='yes' is a str.*bool"):
        StatDetector("x", include_logits="yes")
    with pytest.raises(ConfigError, match=r"detector\.reduction='median' is not one of"):
        StatDetector("x", reduction="median")
    with pytest.raises(ConfigError, match=r"detector\.kk is not an option.*ean detector\.k\?"):
        StatDetector("x", kk=3)


def test_with_options_gives_a_new_validated_detector(digits_features):
    det = StatDetector("x", statistic="euclidean").fit_reference(digits_features["fit"])
    other = det.with_options(center="global")
    assert other.options.center == "global" and other.options.statistic == "euclidean"
    assert other.keys_ == [] and det.keys_  # a fresh, unfitted detector; the first untouched
    with pytest.raises(ConfigError, match="center"):
        det.with_options(center="median")


# the smallest fit set (issue 26, item 10) ------------------------------------------------------


@pytest.mark.parametrize("option", sorted(PRESETS))
def test_a_one_sample_fit_set_is_refused_naming_fit_max_and_the_minimum(option, digits_features):
    """Before: fit_max=1 gave status ok and AUROC 0.5 on every OOD set (every p-value equal)."""
    # stat_selected: selection and protocol are the selection's, not StatDetector options
    skip = ("_target_", "name", "selection", "protocol")
    cfg = {k: v for k, v in PRESETS[option].items() if k not in skip}
    det = StatDetector(option, **cfg)
    with pytest.raises(ConfigError) as err:
        det.fit(subset(digits_features["fit"], np.arange(1)), digits_features["calib"])
    msg = str(err.value)
    assert "the fit set has 1 sample(s)" in msg and "needs at least" in msg, msg
    assert "benchmark.fit_max" in msg, msg


@pytest.mark.filterwarnings("ignore:Only one sample available")  # Ledoit-Wolf below the minimum
@pytest.mark.parametrize(
    ("options", "minimum"),
    [
        ({"statistic": "channel", "tail": "two-sided"}, 3),
        ({"statistic": "channel", "tail": "right"}, 2),
        ({"statistic": "mahalanobis", "center": "global"}, 2),
        ({"statistic": "euclidean", "center": "global", "output_test": "energy"}, 2),
        ({"statistic": "knn", "k": 4}, 5),
    ],
)
def test_the_declared_minimum_is_exact(options, minimum, digits_features):
    """One sample fewer than the minimum gives the same layer p-value to every sample (or no
    reference at all); the minimum itself gives a statistic that varies."""
    f = digits_features
    idx = np.arange(minimum)
    det = StatDetector("m", calibrate=False, **options)
    with pytest.raises(ConfigError, match=f"needs at least {minimum}"):
        det.fit_reference(subset(f["fit"], idx[:-1]))
    for stat in det._new_statistics():  # why: the statistic itself, fitted without the check
        z = f["fit"].taps["block3.max"].double().numpy()
        if stat.output:
            z = f["fit"].logits.double().numpy()
        pred = f["fit"].predictions()
        zt = z[:50] if not stat.output else f["test"].logits.double().numpy()[:50]
        if stat.name == "knn":
            with pytest.raises(ValueError, match="n_neighbors"):
                stat.fit(z[idx[:-1]], pred[idx[:-1]], 10)
        else:
            stat.fit(z[idx[:-1]], pred[idx[:-1]], 10)
            p = np.clip(stat.pvalues(zt, pred[:50]), 0, stat.p_ceil)
            assert np.unique(p).size == 1, (stat.name, np.unique(p))
    det.fit_reference(subset(f["fit"], idx))
    assert np.unique(det.statistic(f["test"])).size > 1


def test_a_class_mean_of_one_sample_is_refused_naming_the_class(digits_features):
    """DROOD's class means: a predicted class with one fit sample has a mean equal to it, a
    reference distance of 0 (before: fit_max=10 on mnist_fashion gave fpr95_id 1.0)."""
    f = digits_features["fit"]
    pred = f.predictions()
    idx = np.concatenate([np.flatnonzero(pred == c)[: (1 if c == 3 else 5)] for c in range(10)])
    small = subset(f, idx)
    with pytest.raises(ConfigError) as err:
        StatDetector("d", statistic="euclidean", calibrate=False).fit_reference(small)
    msg = str(err.value)
    assert "1 predicted class(es) have fewer than 2 fit samples (class 3 (1))" in msg, msg
    assert "benchmark.fit_max" in msg and "detector.center=global" in msg, msg
    StatDetector("d", statistic="euclidean", center="global", calibrate=False).fit_reference(small)
    # a class with no fit sample keeps the documented fallback: the global mean
    no3 = subset(f, idx[pred[idx] != 3])
    det = StatDetector("d", statistic="euclidean", calibrate=False).fit_reference(no3)
    np.testing.assert_allclose(
        det.statistics_[0].means_[3], layer_array(no3, det.keys_[0]).mean(0), rtol=1e-12
    )


# k of the k-NN statistic (issue 26, item 15) ---------------------------------------------------


def test_knn_k_is_checked_at_construction_and_against_the_fit_set(digits_features):
    """Before: k=0 failed with scikit-learn's "Expected n_neighbors > 0" when scoring, after the
    whole extraction; k >= the fit set failed with "Expected n_neighbors <= n_samples_fit, but
    n_neighbors = 1079, n_samples_fit = 1078" for k=1078 — off by one from the k the user set,
    because each fit sample's own reference distance leaves the sample out and asks for k + 1
    neighbours. Now: k >= 1 when the detector is built, k <= n_fit − 1 when it is fitted, in
    the user's terms."""
    with pytest.raises(ConfigError, match=r"detector\.k=0: k-NN needs k >= 1"):
        StatDetector("knn", statistic="knn", k=0)
    with pytest.raises(ConfigError, match=r"detector\.k=-3"):
        StatDetector("knn", statistic="knn", k=-3)
    fit = subset(digits_features["fit"], np.arange(30))
    with pytest.raises(ConfigError) as err:
        StatDetector("knn", statistic="knn", k=30, calibrate=False).fit_reference(fit)
    msg = str(err.value)
    assert "the fit set has 30 sample(s), but the knn statistic needs at least 31" in msg, msg
    assert "k=30 needs k + 1 = 31 fit samples" in msg and "detector.k <= 29" in msg, msg
    det = StatDetector("knn", statistic="knn", k=29, calibrate=False).fit_reference(fit)
    assert np.isfinite(det.statistic(digits_features["test"])).all()


def test_extra_tests_add_library_evidence_and_stay_calibrated(digits_features):
    """extra_tests=[pood_rmd, pood_knn]: two more p-value columns in the combination, fitted on
    fit only; the conformal step keeps the p-values on the grid of the calib set."""
    from ood_bench.detectors.stat import StatDetector

    f = digits_features
    base = StatDetector("b", statistic="mahalanobis", output_test="energy").fit(
        f["fit"], f["calib"]
    )
    plus = base.with_options(extra_tests=["pood_rmd", "pood_knn"]).fit(f["fit"], f["calib"])
    assert [e.name for e in plus.extras_] == ["pood_rmd", "pood_knn"]
    n_cols = base.layer_pvalues(f["test"]).shape[1]
    assert plus.layer_pvalues(f["test"]).shape[1] == n_cols + 2
    assert not np.array_equal(plus.statistic(f["test"]), base.statistic(f["test"]))
    p = plus.pvalues(f["test"])
    n = len(f["calib"])
    assert p.min() >= 1 / (n + 1) and np.allclose(p * (n + 1), np.round(p * (n + 1)))
    assert plus.params()["extra_tests"] == ["pood_rmd", "pood_knn"]


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ("pood_nope", "no option of the detector group"),
        ("stat_masf", "a statistical preset"),
        ("pood_odin", "runs the network"),
        ("../x", "invalid extra test"),
    ],
)
def test_extra_tests_refuse_what_they_cannot_use(digits_features, extra, match):
    from ood_bench.detectors.stat import StatDetector

    with pytest.raises(ConfigError, match=match):
        StatDetector("b", extra_tests=[extra]).fit(digits_features["fit"], digits_features["calib"])


# the design space the selection searches (issue 29) ------------------------------------------


def test_reduction_both_tests_the_max_and_the_mean_of_every_pooled_layer(digits_features):
    f = digits_features["fit"]
    pooled = {k.rpartition(".")[0] for k in f.taps if k.endswith((".max", ".mean"))}
    flat = [k for k in f.taps if not k.endswith((".max", ".mean"))]
    det = StatDetector("b", statistic="mahalanobis", reduction="both").fit_reference(f)
    assert len(det.keys_) == 2 * len(pooled) + len(flat)
    assert {f"{p}.{r}" for p in pooled for r in ("max", "mean")} <= set(det.keys_)
    only = StatDetector("b", statistic="mahalanobis", reduction="both", layers=[sorted(pooled)[0]])
    assert only.fit_reference(f).keys_ == [f"{sorted(pooled)[0]}.max", f"{sorted(pooled)[0]}.mean"]


@pytest.mark.parametrize("statistic", ["mahalanobis", "euclidean"])
def test_normalize_makes_a_class_mean_distance_blind_to_the_norm(statistic, digits_features):
    """Mahalanobis++: with normalize each layer vector is scaled to unit norm first, so scaling
    a sample's features changes nothing; without it the distance grows with the norm."""
    f, t = digits_features["fit"], digits_features["test"]
    rng = np.random.default_rng(0)
    # powers of two: the scaled features and their norms are exact, so are the p-values
    scale = torch.from_numpy(2.0 ** rng.integers(-2, 3, len(t))).float()[:, None]
    scaled = Features(t.logits, t.penultimate, t.labels, {k: v * scale for k, v in t.taps.items()})
    for normalize, same in ((True, True), (False, False)):
        det = StatDetector("n", statistic=statistic, normalize=normalize).fit_reference(f)
        assert np.allclose(det.layer_pvalues(t), det.layer_pvalues(scaled)) == same

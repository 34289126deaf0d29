"""The statistical detector: its conformal guarantee is tested, not assumed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from ood_bench.config import build
from ood_bench.detectors.stat import StatDetector, layer_keys
from ood_bench.errors import ConfigError
from ood_bench.features import Features
from ood_bench.metrics import ood_metrics
from ood_bench.pvalues import conformal_pvalues
from tests.conftest import CONF

PRESETS = sorted(p.stem for p in (CONF / "detector").glob("stat_*.yaml"))


def preset(option: str, **changes) -> StatDetector:
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose(config_name="config", overrides=[f"detector={option}"])
    det = build(cfg.detector, "detector")
    return det.with_options(**changes) if changes else det


def subset(f: Features, idx: np.ndarray) -> Features:
    return Features(
        f.logits[idx], f.penultimate[idx], f.labels[idx], {k: v[idx] for k, v in f.taps.items()}
    )


def pool_of(feats) -> Features:
    a, b = feats["calib"], feats["test"]
    return Features(
        torch.cat([a.logits, b.logits]),
        torch.cat([a.penultimate, b.penultimate]),
        torch.cat([a.labels, b.labels]),
        {k: torch.cat([a.taps[k], b.taps[k]]) for k in a.taps},
    )


def realised_fpr(det: StatDetector, feats, alpha: float, redraws: int, seed: int = 0):
    """Redraw the calib/test partition of the held-out ID pool; FPR at alpha per redraw.

    The statistic does not depend on the calibration, so it is computed once for the pool; the
    first redraw also goes through ``calibrate``/``pvalues`` to check both paths agree.
    """
    pool = pool_of(feats)
    n_calib = len(feats["calib"])
    det.fit_reference(feats["fit"])
    t, pred = det.statistic(pool), pool.logits.argmax(1).numpy()
    rng = np.random.default_rng(seed)
    out = []
    for r in range(redraws):
        perm = rng.permutation(len(pool))
        cal, test = perm[:n_calib], perm[n_calib:]
        det.calibrate_statistic(t[cal], pred[cal])
        p = det.pvalues_of_statistic(t[test], pred[test])
        if r == 0:
            np.testing.assert_allclose(
                p, det.calibrate(subset(pool, cal)).pvalues(subset(pool, test)), rtol=1e-9
            )
        out.append(np.mean(p <= alpha))
    return np.array(out), n_calib, len(pool) - n_calib


def within_binomial_error(fpr: np.ndarray, alpha: float, n_calib: int, n_test: int) -> bool:
    """Mean realised FPR over redraws vs the exact conformal level floor(alpha(n+1))/(n+1).

    One redraw's FPR spreads with the test sample (1/n_test) and the calibration quantile
    (1/n_calib); redraws share one pool, so the mean is only credited with a 3-sigma band of a
    single redraw divided by sqrt(redraws / 10) (conservative for dependent redraws)."""
    target = np.floor(alpha * (n_calib + 1)) / (n_calib + 1)
    sd = np.sqrt(target * (1 - target) * (1 / n_test + 1 / n_calib))
    band = 3 * sd / np.sqrt(max(len(fpr) / 10, 1))
    return bool(abs(fpr.mean() - target) <= band)


@pytest.mark.parametrize(
    "option", ["stat_masf", "stat_drood", "stat_maha_cauchy", "stat_maha_energy"]
)
def test_conformal_guarantee_holds_over_redraws(option, digits_features):
    fpr, n_calib, n_test = realised_fpr(preset(option), digits_features, 0.05, 200)
    assert within_binomial_error(fpr, 0.05, n_calib, n_test), (fpr.mean(), fpr.std())
    assert fpr.mean() <= 0.05 + 0.01


@pytest.mark.parametrize("option", ["stat_masf", "stat_drood", "stat_maha_cauchy"])
def test_guarantee_check_fails_without_calibration(option, digits_features):
    """Skipping the conformal step (the combiner's own p-value, layers taken as independent and
    the backbone's training data as the reference) misses alpha: the check above catches it."""
    fpr, n_calib, n_test = realised_fpr(preset(option, calibrate=False), digits_features, 0.05, 200)
    assert not within_binomial_error(fpr, 0.05, n_calib, n_test), fpr.mean()


def test_class_conditional_calibration_holds_per_class(digits_features):
    # no fallback: a redraw with < 19 calib samples in a class must stay class-conditional
    det = preset("stat_knn_classcond", mondrian_fallback="none")
    pool = pool_of(digits_features)
    pred = pool.logits.argmax(1).numpy()
    rng = np.random.default_rng(1)
    det.fit_reference(digits_features["fit"])
    per_class = []
    for _ in range(30):
        perm = rng.permutation(len(pool))
        det.calibrate(subset(pool, perm[:300]))
        test = perm[300:]
        p = det.pvalues(subset(pool, test))
        per_class.append([np.mean(p[pred[test] == c] <= 0.1) for c in range(10)])
    per_class = np.array(per_class).mean(0)
    assert per_class.max() <= 0.1 + 0.05, per_class  # ~30 calib per class: coarse but valid


@pytest.mark.parametrize("option", PRESETS)
def test_presets_detect_far_ood(option, digits_features):
    det = preset(option).fit(digits_features["fit"], digits_features["calib"])
    s_id = det.score(digits_features["test"])
    for name in ("uniform_noise", "sklearn_photos"):
        auc = ood_metrics(s_id, det.score(digits_features[name]))["auroc"]
        assert auc > 0.75, (option, name, auc)
    p = det.pvalues(digits_features["test"])
    assert ((p > 0) & (p <= 1)).all()
    # score and calibrated p-value tell the same story: p is non-increasing in the score
    # (within a class for class-conditional calibration)
    if not det.options.class_conditional:
        order = np.argsort(s_id)
        assert (np.diff(p[order]) <= 1e-12).all()


def test_calibration_conditional_correction_is_more_conservative(digits_features):
    plain = preset("stat_masf").fit(digits_features["fit"], digits_features["calib"])
    corrected = preset("stat_masf", correction="dkw").fit(
        digits_features["fit"], digits_features["calib"]
    )
    p0, p1 = plain.pvalues(digits_features["test"]), corrected.pvalues(digits_features["test"])
    assert (p1 >= p0 - 1e-12).all() and (p1 > p0).any()


def test_tails_and_reductions_differ(digits_features):
    f = digits_features
    p = {
        t: preset("stat_masf", tail=t).fit_reference(f["fit"]).layer_pvalues(f["uniform_noise"])
        for t in ("right", "left", "two-sided")
    }
    assert not np.allclose(p["right"], p["left"])
    keys_max = layer_keys(f["fit"], "max", None)
    keys_mean = layer_keys(f["fit"], "mean", None)
    assert keys_max == ["block1.max", "block2.max", "block3.max", "fc1"]
    assert keys_mean == ["block1.mean", "block2.mean", "block3.mean", "fc1"]


def test_bad_options_are_config_errors(digits_features):
    with pytest.raises(ConfigError, match="statistic='nope'.*channel"):
        StatDetector("x", statistic="nope")
    with pytest.raises(ConfigError, match="across='median'"):
        StatDetector("x", across="median")
    with pytest.raises(ConfigError, match=r"layers \['conv9'\].*block1"):
        StatDetector("x", layers=["conv9"]).fit(digits_features["fit"], digits_features["calib"])
    with pytest.raises(ConfigError, match="calib split"):
        StatDetector("x").fit(digits_features["fit"], None)


@pytest.fixture(scope="module")
def open_features(cache_dir):
    """digits_open: ID 0–5, near OOD 6–9."""
    from ood_bench.backbones import get_backbone
    from ood_bench.data.digits import build_digits
    from ood_bench.features import FeatureExtractor

    bench = build_digits(
        "digits_open",
        id_classes=[0, 1, 2, 3, 4, 5],
        near_classes=[6, 7, 8, 9],
        far_sets=["uniform_noise"],
        seed=0,
    )
    bb = get_backbone("digits_cnn", bench, cache_dir, seed=0, train={"epochs": 15})
    ex = FeatureExtractor(bb, cache_dir)
    feats = {s: ex(bench.split(s)) for s in ("fit", "calib", "test")}
    feats["near"] = ex(bench.ood_set("digits_6_7_8_9"))
    return feats


def test_class_references_fix_masf_on_unseen_classes(open_features):
    """A pooled channel reference makes confident ID samples look extreme and unseen classes
    look typical (AUROC below chance); per-class references recover the near-OOD signal."""
    f = open_features
    auc = {}
    for ref in ("pooled", "class"):
        det = preset("stat_masf", reference=ref).fit(f["fit"], f["calib"])
        auc[ref] = ood_metrics(det.score(f["test"]), det.score(f["near"]))["auroc"]
    assert auc["pooled"] < 0.6 and auc["class"] > 0.8, auc


# p_min and the Mondrian fallback (issue 17, item 5: no vacuous guarantee) ---------------------


def mondrian(counts: list[int], alpha: float = 0.05, fallback: str = "none", **kw) -> StatDetector:
    """A class-conditional detector calibrated on statistics 0..n_c−1 for each class c."""
    det = StatDetector("m", class_conditional=True, alpha=alpha, mondrian_fallback=fallback, **kw)
    det.num_classes_ = len(counts)
    t = np.concatenate([np.arange(n, dtype=float) for n in counts])
    pred = np.repeat(np.arange(len(counts)), counts)
    return det.calibrate_statistic(t, pred)


def test_p_min_per_class_is_exact():
    det = mondrian([19, 4, 0])
    assert det.calibration == "class_conditional"
    assert det.class_p_min() == {0: 1 / 20, 1: 1 / 5, 2: 1.0}
    assert det.p_min() == 1.0  # a class without calib samples is never rejected
    assert det.unreachable_classes(0.05) == [1, 2] and det.unreachable_classes(0.2) == [2]
    # attained: a statistic above every calib score of its class gets exactly p_min
    p = det.pvalues_of_statistic(np.array([1e9, 1e9, 1e9]), np.array([0, 1, 2]))
    np.testing.assert_array_equal(p, [1 / 20, 1 / 5, 1.0])


def test_p_min_marginal_and_corrected_are_exact():
    det = mondrian([19, 4, 0]).with_options(class_conditional=False)
    det.num_classes_ = 3
    det.calibrate_statistic(np.arange(23.0), np.zeros(23, dtype=int))
    assert det.class_p_min() == {0: 1 / 24, 1: 1 / 24, 2: 1 / 24} and det.p_min() == 1 / 24
    simes = mondrian([27, 27], alpha=0.5, correction="simes", delta=0.1)
    assert simes.p_min() == pytest.approx(1 - 0.1 ** (1 / 13))  # b_1 with k = 27 // 2
    p = simes.pvalues_of_statistic(np.array([1e9]), np.array([0]))
    assert p[0] == simes.p_min()
    dkw = mondrian([27], alpha=0.5, correction="dkw", delta=0.1)
    assert dkw.p_min() == pytest.approx(1 / 27 + np.sqrt(np.log(10) / 54))
    uncalibrated = StatDetector("u", calibrate=False)
    assert uncalibrated.p_min() is None and uncalibrated.unreachable_classes(0.05) is None


@pytest.mark.parametrize(
    ("n_short", "alpha", "correction", "falls_back"),
    [
        (19, 0.05, None, False),  # p_min = 1/20 = alpha: reachable
        (18, 0.05, None, True),  # 1/19 > alpha
        (99, 0.01, None, False),
        (98, 0.01, None, True),
        (44, 0.1, "simes", False),  # 1 − 0.1^(1/22) = 0.0994
        (43, 0.1, "simes", True),  # 1 − 0.1^(1/21) = 0.104
    ],
)
def test_fallback_triggers_exactly_when_p_min_exceeds_alpha(n_short, alpha, correction, falls_back):
    det = mondrian([1000, n_short], alpha, "marginal", correction=correction, delta=0.1)
    short_p_min = det._p_min_of(n_short)
    assert (short_p_min > alpha) == falls_back
    used = ("corrected" if correction else "marginal") if falls_back else "class_conditional"
    assert det.calibration == used
    if falls_back:  # every class marginal: the same p-value function for both classes
        assert det.class_p_min() == dict.fromkeys([0, 1], det._p_min_of(1000 + n_short))
        t = np.linspace(-5, 1e3, 50)
        np.testing.assert_array_equal(
            det.pvalues_of_statistic(t, np.zeros(50, int)),
            det.pvalues_of_statistic(t, np.ones(50, int)),
        )
    else:
        assert det.class_p_min()[1] == short_p_min <= alpha


def test_refuse_names_the_class_its_count_the_minimum_and_the_fix():
    with pytest.raises(ConfigError) as err:
        mondrian([200, 18, 30], 0.05, "refuse")
    msg = str(err.value)
    assert "class 1 (18 calib samples" in msg and "class 2" not in msg
    assert "needs >= 19 calib samples" in msg
    for fix in ("calib_fraction", "class_conditional=false", "mondrian_fallback=marginal"):
        assert fix in msg, (fix, msg)
    with pytest.raises(
        ConfigError, match=r"simes correction, so a class needs >= 90 calib samples"
    ):
        mondrian([200, 60], 0.05, "refuse", correction="simes")
    mondrian([200, 19], 0.05, "refuse")  # reachable: no error


def test_none_keeps_class_conditional_p_values_and_warns(caplog):
    with caplog.at_level("WARNING", logger="ood_bench.detectors.stat"):
        det = mondrian([200, 18], 0.05, "none")
    assert det.calibration == "class_conditional" and det.p_min() == 1 / 19
    assert "never rejected at alpha=0.05" in caplog.text and "class 1 (18" in caplog.text
    p = det.pvalues_of_statistic(np.full(2, 1e9), np.array([0, 1]))
    np.testing.assert_array_equal(p, [1 / 201, 1 / 19])


def test_fallback_option_and_alpha_are_checked():
    with pytest.raises(ConfigError, match="mondrian_fallback='pooled'.*marginal"):
        StatDetector("x", mondrian_fallback="pooled")
    with pytest.raises(ConfigError, match=r"alpha=1.5 must lie in \(0, 1\)"):
        StatDetector("x", alpha=1.5)


def test_fallback_makes_alpha_001_reachable_on_digits(digits_features, digits_bench):
    """~27 calib samples per class: class-conditional p-values never go below ~0.036, so at
    alpha = 0.01 nothing is ever rejected; the fallback (marginal, 1/(n+1) ≈ 0.0037) rejects."""
    from ood_bench.run import pvalue_rows

    f = digits_features
    far = [s.name for s in digits_bench.ood]
    n_calib = len(f["calib"])
    tpr = {}
    for fallback in ("none", "marginal"):
        det = preset("stat_knn_classcond", alpha=0.01, mondrian_fallback=fallback)
        det.fit(f["fit"], f["calib"])
        tpr[fallback] = {s: float(np.mean(det.pvalues(f[s]) <= 0.01)) for s in far}
        rows = {r["metric"]: r["value"] for r in pvalue_rows(det, {}, f["test"], f, digits_bench)}
        if fallback == "none":
            assert det.calibration == "class_conditional" and det.p_min() > 0.03
            assert det.unreachable_classes(0.01) == list(range(10))
            assert rows["unreachable_classes_0.01"] == 10 and rows["calib_class_conditional"] == 1
        else:
            assert det.calibration == "marginal" and det.p_min() == 1 / (n_calib + 1)
            assert rows["unreachable_classes_0.01"] == 0 and rows["calib_class_conditional"] == 0
        assert rows["p_min"] == det.p_min()
    assert all(v == 0 for v in tpr["none"].values()), tpr
    assert all(v > 0.3 for v in tpr["marginal"].values()), tpr
    with pytest.raises(ConfigError, match="needs >= 99 calib samples"):
        preset("stat_knn_classcond", alpha=0.01, mondrian_fallback="refuse").fit(
            f["fit"], f["calib"]
        )
    # at the preset's alpha = 0.05 every class reaches: still class-conditional
    det = preset("stat_knn_classcond").fit(f["fit"], f["calib"])
    assert det.calibration == "class_conditional" and det.p_min() <= 0.05


def test_fallback_keeps_the_type_i_error_on_digits(digits_features):
    """Null simulation on exchangeable ID data: redraws of the held-out pool into calib/test."""
    det = preset("stat_knn_classcond", alpha=0.01)
    fpr, n_calib, n_test = realised_fpr(det, digits_features, 0.01, 200)
    assert det.calibration == "marginal"
    assert within_binomial_error(fpr, 0.01, n_calib, n_test), (fpr.mean(), fpr.std())
    assert fpr.mean() <= 0.01


def test_fallback_is_marginal_for_all_classes_because_mixing_is_invalid():
    """Why the fallback calibrates *every* class marginally. A rare class (9 % of the data,
    60 calib samples < 99) with atypically high scores: all-marginal p-values keep
    P(p <= 0.01) = floor(0.01 (n+1)) / (n+1); marginal p-values for the rare class mixed with
    per-class ones for the others reject about twice as often (the rare class takes the whole
    marginal tail, the other classes their own). Fresh, independent data each redraw."""
    rng = np.random.default_rng(0)
    alpha, n, m, redraws = 0.01, 660, 2000, 1000
    share, shift = np.array([0.455, 0.455, 0.09]), np.array([0.0, 0.0, 3.0])

    def draw(size: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.choice(3, size=size, p=share)
        return rng.normal(shift[y], 1.0), y

    det = StatDetector("null", class_conditional=True, alpha=alpha)
    det.num_classes_ = 3
    fpr_fallback, fpr_mixed = [], []
    for _ in range(redraws):
        (tc, yc), (tt, yt) = draw(n), draw(m)
        det.calibrate_statistic(tc, yc)
        assert det.calibration == "marginal"  # the rare class never reaches 99 samples here
        fpr_fallback.append(np.mean(det.pvalues_of_statistic(tt, yt) <= alpha))
        p = conformal_pvalues(np.sort(tc), tt)  # marginal, kept for the rare class only
        for c in (0, 1):
            p[yt == c] = conformal_pvalues(np.sort(tc[yc == c]), tt[yt == c])
        fpr_mixed.append(np.mean(p <= alpha))
    target = np.floor(alpha * (n + 1)) / (n + 1)
    k = target * (n + 1)  # conditional rate given calib ~ Beta(k, n + 1 − k)
    var = k * (n + 1 - k) / ((n + 1) ** 2 * (n + 2)) + target / m
    se = np.sqrt(var / redraws)
    assert abs(np.mean(fpr_fallback) - target) <= 4 * se, (np.mean(fpr_fallback), target, se)
    assert np.mean(fpr_mixed) > alpha + 10 * se, np.mean(fpr_mixed)


def test_output_test_adds_the_energy_pvalue_of_the_logits(digits_features):
    """``output_test=energy``: one more column, the right-tail empirical p-value of −logsumexp
    of the logits against the fit samples'; the layer columns are unchanged."""
    from scipy.special import logsumexp

    fit, test = digits_features["fit"], digits_features["test"]
    base = preset("stat_maha_energy", output_test=None).fit(fit, digits_features["calib"])
    det = preset("stat_maha_energy").fit(fit, digits_features["calib"])
    assert det.keys_ == [*base.keys_, "logits"]
    p, p0 = det.layer_pvalues(test), base.layer_pvalues(test)
    np.testing.assert_allclose(p[:, :-1], p0)
    e_fit = -logsumexp(fit.logits.double().numpy(), axis=1)
    e_test = -logsumexp(test.logits.double().numpy(), axis=1)
    expect = (1 + (e_fit[None, :] >= e_test[:, None]).sum(1)) / (len(e_fit) + 1)
    np.testing.assert_allclose(p[:, -1], np.clip(expect, 0, 1 - 1 / (len(e_fit) + 1)))
    with pytest.raises(ConfigError, match="output_test"):
        StatDetector("x", statistic="mahalanobis", output_test="softmax")


def test_global_center_measures_distance_to_one_mean(digits_features):
    fit = digits_features["fit"]
    det = preset("stat_maha_energy", center="global", output_test=None).fit_reference(fit)
    means = det.statistics_[0].means_
    assert np.allclose(means, means[0])  # every class uses the global mean
    own = preset("stat_maha_energy", output_test=None).fit_reference(fit).statistics_[0].means_
    assert not np.allclose(own, own[0])
    with pytest.raises(ConfigError, match="center"):
        StatDetector("x", statistic="mahalanobis", center="median")

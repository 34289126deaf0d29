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
from tests.conftest import CONF

PRESETS = sorted(p.stem for p in (CONF / "detector").glob("stat_*.yaml"))


def preset(option: str, **changes) -> StatDetector:
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose(config_name="config", overrides=[f"detector={option}"])
    det = build(cfg.detector, "detector")
    det.cfg.update(changes)
    return det


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


@pytest.mark.parametrize("option", ["stat_masf", "stat_drood", "stat_maha_cauchy"])
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
    det = preset("stat_knn_classcond")
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
    if not det.cfg["class_conditional"]:
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

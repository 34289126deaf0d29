"""The calibration layer (ood_bench.calibration): conformal p-values for any detector."""

from __future__ import annotations

import numpy as np
import pytest

from ood_bench.calibration import (
    CALIBRATIONS,
    CalibratedDetector,
    ConformalCalibrator,
    split_calib,
    with_calibration,
)
from ood_bench.config import build, compose
from ood_bench.detectors.base import Detector
from ood_bench.detectors.stat import StatDetector
from ood_bench.errors import ConfigError
from ood_bench.features import Features
from ood_bench.metrics import ALPHAS
from tests.conftest import FAST_TRAIN


def test_marginal_pvalues_are_valid_on_average():
    """Null simulation: ID test exchangeable with calib, realised FPR at alpha <= alpha (in the
    binomial band of 4,000 draws x 50 test points)."""
    rng = np.random.default_rng(0)
    n, m, draws = 99, 50, 4000
    hits = {a: 0 for a in ALPHAS}
    for _ in range(draws):
        cal = ConformalCalibrator(num_classes=1).fit(rng.normal(size=n), np.zeros(n, int))
        p = cal.pvalues(rng.normal(size=m), np.zeros(m, int))
        for a in ALPHAS:
            hits[a] += int((p <= a).sum())
    for a in ALPHAS:
        rate = hits[a] / (draws * m)
        exact = np.floor(a * (n + 1)) / (n + 1)  # P(p <= a) for continuous scores
        assert abs(rate - exact) < 4 * np.sqrt(exact * (1 - exact) / draws), (a, rate)


def test_corrected_pvalues_are_never_smaller():
    rng = np.random.default_rng(1)
    s, pred = rng.normal(size=300), rng.integers(0, 3, 300)
    x = rng.normal(size=200) + 1
    plain = ConformalCalibrator.from_option("marginal", num_classes=3).fit(s, pred)
    corr = ConformalCalibrator.from_option("corrected", num_classes=3).fit(s, pred)
    assert corr.calibration == "corrected" and plain.calibration == "marginal"
    assert (corr.pvalues(x, pred[:200]) >= plain.pvalues(x, pred[:200])).all()
    assert corr.class_p_min()[0] > plain.class_p_min()[0] == pytest.approx(1 / 301)


def test_class_conditional_uses_each_class_alone_and_falls_back():
    rng = np.random.default_rng(2)
    pred = np.repeat([0, 1], 100)
    s = np.concatenate([rng.normal(size=100), rng.normal(size=100) + 5])
    cal = ConformalCalibrator.from_option("class_conditional", num_classes=2).fit(s, pred)
    assert cal.calibration == "class_conditional"
    # a class-1 sample scored like class 1's bulk is ordinary for class 1
    assert cal.pvalues(np.array([5.0]), np.array([1]))[0] > 0.3
    assert cal.pvalues(np.array([5.0]), np.array([0]))[0] < 0.01
    short = ConformalCalibrator.from_option("class_conditional", num_classes=3, alpha=0.01)
    short.fit(s, pred)  # class 2 has no calibration sample: falls back to marginal for all
    assert short.fell_back_ and short.calibration == "marginal"
    refuse = ConformalCalibrator(class_conditional=True, num_classes=3, mondrian_fallback="refuse")
    with pytest.raises(ConfigError, match="cannot reach alpha"):
        refuse.fit(s, pred)


def test_stat_detector_and_the_layer_give_the_same_pvalues(digits_features):
    """One implementation: the statistical family's own conformal step equals the calibrator's
    on the same statistic (marginal, class-conditional, corrected)."""
    f = digits_features
    for kw in ({}, {"class_conditional": True, "alpha": 0.1}, {"correction": "simes"}):
        det = StatDetector("s", **kw).fit(f["fit"], f["calib"])
        cal = ConformalCalibrator(
            class_conditional=kw.get("class_conditional", False),
            correction=kw.get("correction"),
            alpha=kw.get("alpha", 0.05),
            num_classes=10,
        ).fit(det.statistic(f["calib"]), f["calib"].predictions())
        x = f["uniform_noise"]
        np.testing.assert_array_equal(
            det.pvalues(x), cal.pvalues(det.statistic(x), x.predictions())
        )
        assert det.calibration == cal.calibration
        assert det.class_p_min() == cal.class_p_min()


class _Recorder(Detector):
    """A score-only detector that learns from calib and records what it saw."""

    def __init__(self, reads_calib: bool):
        super().__init__("rec")
        self.reads_calib = reads_calib
        self.seen: Features | None = None

    def fit(self, fit, calib=None):
        self.seen = calib
        return self

    def _score(self, feats):
        return -feats.logits.max(1).values.numpy()


def test_a_detector_that_learns_from_calib_is_calibrated_on_the_other_half(digits_features):
    f = digits_features
    det = with_calibration(_Recorder(reads_calib=True), "marginal", seed=0)
    assert isinstance(det, CalibratedDetector) and det.gives_pvalues
    det.fit(f["fit"], f["calib"])
    n = len(f["calib"])
    assert len(det.inner.seen) == n // 2 and len(det.calibrator.calib_all_) == n - n // 2
    own, held = split_calib(f["calib"], 0)
    seen = {tuple(r) for r in own.logits.numpy().round(5)}
    assert not seen & {tuple(r) for r in held.logits.numpy().round(5)}
    whole = with_calibration(_Recorder(reads_calib=False), "marginal").fit(f["fit"], f["calib"])
    assert len(whole.inner.seen) == n and len(whole.calibrator.calib_all_) == n
    p = whole.pvalues(f["test"])
    assert p.min() >= 1 / (n + 1) and p.max() <= 1


def test_with_calibration_leaves_the_stat_family_and_none_alone():
    stat = StatDetector("s")
    assert with_calibration(stat, "class_conditional") is stat
    rec = _Recorder(False)
    assert with_calibration(rec, "none") is rec
    with pytest.raises(ConfigError, match="calibration='conformal' is not one of"):
        with_calibration(rec, "conformal")
    assert set(CALIBRATIONS) == {"marginal", "class_conditional", "corrected", "none"}


@pytest.mark.parametrize("option", ["marginal", "none"])
def test_every_job_writes_decision_metrics(option, cache_dir):
    """A pytorch-ood detector's job gets fpr_at / tpr_at / BH / p_min rows (calibration on)."""
    from ood_bench.run import evaluate

    cfg = compose(
        ["detector=pood_msp", f"calibration={option}", f"cache_dir={cache_dir}", FAST_TRAIN]
    )
    rows = {(r["metric"], r["ood_dataset"]): r["value"] for r in evaluate(cfg, {})}
    has = ("fpr_at_0.05", "") in rows
    assert has == (option == "marginal")
    if option == "marginal":
        assert rows[("calib_layer", "")] == 1 and rows[("p_min", "")] > 0
        assert ("bh_fdr_0.05", "uniform_noise") in rows and ("tpr_at_0.1", "uniform_noise") in rows
        assert 0 <= rows[("fpr_at_0.05", "")] <= 0.15


def test_detectors_that_read_calib_say_so():
    det = build(compose(["detector=pood_msp"]).detector, "detector")
    assert det.reads_calib is False
    from ood_bench.detectors.openood.adapter import OpenOODDetector

    assert OpenOODDetector("r", "react").reads_calib
    assert not OpenOODDetector("k", "knn").reads_calib

"""Detector direction (higher = more OOD) and score checks, on a trained digits backbone."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from ood_bench.config import build
from ood_bench.errors import ScoreError
from ood_bench.features import Features
from ood_bench.metrics import ood_metrics
from tests.conftest import CONF

DETECTORS = sorted(p.stem for p in (CONF / "detector").glob("*.yaml"))


def make_detector(option: str):
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose(config_name="config", overrides=[f"detector={option}"])
    return build(cfg.detector, "detector")


@pytest.mark.parametrize("option", DETECTORS)
def test_noise_scores_higher_than_id(option, digits_features):
    det = make_detector(option).fit(digits_features["fit"], digits_features["calib"])
    s_id = det.score(digits_features["test"], "test")
    for noise in ("uniform_noise", "gaussian_noise"):
        s_ood = det.score(digits_features[noise], noise)
        assert s_ood.mean() > s_id.mean(), f"{option}: {noise} scores lower than ID on average"
        assert ood_metrics(s_id, s_ood)["auroc"] > 0.6, f"{option} barely separates {noise}"


@pytest.mark.parametrize("option", DETECTORS)
def test_scores_are_deterministic(option, digits_features):
    f, c = digits_features["fit"], digits_features["calib"]
    a = make_detector(option).fit(f, c).score(digits_features["test"])
    b = make_detector(option).fit(f, c).score(digits_features["test"])
    np.testing.assert_allclose(a, b)


def test_nan_features_name_detector_and_set(digits_features):
    det = make_detector("pood_energy").fit(digits_features["fit"])
    t = digits_features["test"]
    bad = Features(t.logits.clone(), t.penultimate, t.labels, t.taps)
    bad.logits[3] = float("nan")
    with pytest.raises(ScoreError, match=r"pood_energy.*1 NaN/infinite.*my_set"):
        det.score(bad, "my_set")


def test_mahalanobis_fits_float32_even_from_float64(digits_features):
    f = digits_features["fit"]
    f64 = Features(f.logits.double(), f.penultimate.double(), f.labels, f.taps)
    det = make_detector("pood_mahalanobis").fit(f64)
    s = det.score(digits_features["test"])
    assert s.shape == (len(digits_features["test"]),) and np.isfinite(s).all()


def test_scoring_keeps_no_autograd_graph(digits_features):
    det = make_detector("pood_mahalanobis").fit(digits_features["fit"])
    t = digits_features["test"]
    x = Features(t.logits, t.penultimate.clone().requires_grad_(True), t.labels, t.taps)
    assert np.isfinite(det.score(x)).all()  # would raise on .numpy() of a graph-holding tensor
    assert torch.is_grad_enabled()

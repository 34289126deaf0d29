"""The statistical detector works on any nn.Module whose taps are discovered."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision

from ood_bench.backbones import Backbone, DigitsCNN, discover_taps
from ood_bench.data.base import tensor_set
from ood_bench.detectors.stat import StatDetector
from ood_bench.features import FeatureExtractor


def smooth_images(n: int, seed: int) -> np.ndarray:
    """Low-frequency random RGB images (32×32): a stand-in ID distribution."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 4, 4, generator=g)
    return torch.nn.functional.interpolate(low, size=32, mode="bilinear").numpy()


@pytest.fixture(scope="module")
def resnet_features(tmp_path_factory):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()  # random weights, small input
    taps, penultimate = discover_taps(model, torch.zeros(2, 3, 32, 32))
    bb = Backbone(
        "resnet18_random", model, "0" * 64, tmp_path_factory.mktemp("x"), taps, penultimate
    )
    ex = FeatureExtractor(bb, tmp_path_factory.mktemp("cache"), batch_size=128)
    sets = {
        "fit": smooth_images(300, 0),
        "calib": smooth_images(200, 1),
        "test": smooth_images(200, 2),
        "noise": np.random.default_rng(3).random((200, 3, 32, 32)).astype(np.float32),
    }
    feats = {k: ex(tensor_set(k, v, np.zeros(len(v)), {"test": "resnet"})) for k, v in sets.items()}
    return taps, penultimate, feats


def test_resnet18_taps_are_its_stages(resnet_features):
    taps, penultimate, feats = resnet_features
    assert taps == ["relu", "layer1", "layer2", "layer3", "layer4", "avgpool"]
    assert penultimate == "avgpool"
    assert feats["fit"].penultimate.shape == (300, 512)
    assert feats["fit"].taps["layer2.max"].shape == (300, 128)


def test_digits_cnn_discovery_matches_its_declared_blocks():
    taps, penultimate = discover_taps(DigitsCNN(), torch.zeros(2, 1, 8, 8))
    assert set(DigitsCNN.taps) <= set(taps) and penultimate == DigitsCNN.penultimate


@pytest.mark.parametrize("statistic", ["channel", "euclidean", "mahalanobis", "knn"])
def test_stat_detector_on_discovered_taps(resnet_features, statistic):
    _, _, f = resnet_features
    det = StatDetector("t", statistic=statistic).fit(f["fit"], f["calib"])
    assert len(det.keys_) == 6
    s_id, s_ood = det.score(f["test"]), det.score(f["noise"])
    assert np.isfinite(s_id).all() and np.isfinite(s_ood).all()
    p_id = det.pvalues(f["test"])
    assert abs(np.mean(p_id <= 0.1) - 0.1) < 0.07  # calib and test are exchangeable here
    assert s_ood.mean() > s_id.mean()  # white noise is far from smooth images, even at random

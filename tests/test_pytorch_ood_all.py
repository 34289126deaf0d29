"""Every pytorch-ood detector: configured, fed by its base class, right direction on digits.

The parametrisation runs over ``pytorch_ood.detector.__all__`` itself, so a library release with
a new detector fails here until it has a YAML (and, if it cannot apply, a stated reason).
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import pytorch_ood.detector as pood_det
import torch
import yaml
from hydra import compose, initialize_config_dir
from torch.utils.data import Subset

from ood_bench.config import build
from ood_bench.data.base import ImageSet
from ood_bench.detectors.pytorch_ood import (
    NOT_DETECTORS,
    REQUIREMENTS,
    NotApplicable,
    base_of,
    option_name,
)
from ood_bench.features import Features
from ood_bench.metrics import ood_metrics
from tests.conftest import CONF

NAMES = list(pood_det.__all__)
CLASSES = [n for n in NAMES if isinstance(getattr(pood_det, n), type)]
# not applicable to digits_cnn, and why (each message is pinned below)
NOT_APPLICABLE = {"MCM": "text embeddings", "MCD": "dropout", "WeightedEBO": "VOS"}
# hyperparameters without a library default, set in the YAML (and why, in its comment)
NO_LIBRARY_DEFAULT = {("DICE", "p"), ("ViM", "d"), ("WeightedEBO", "weights")}
NO_LIBRARY_DEFAULT |= {("MCM", "text_embeddings")}


def subset(f: Features, step: int) -> Features:
    """Every ``step``-th sample, images included (keeps the tests fast)."""
    idx = torch.arange(0, len(f), step)
    src = f.source
    assert src is not None
    sub = ImageSet(src.name, Subset(src.dataset, idx.tolist()), dict(src.spec), src.group)
    taps = {k: v[idx] for k, v in f.taps.items()}
    return Features(f.logits[idx], f.penultimate[idx], f.labels[idx], taps, f.meta, sub)


@pytest.fixture(scope="module")
def small(digits_features):
    """The fit split; ID test and the two noise sets: every 3rd sample (keeps scoring fast)."""
    out = {"fit": digits_features["fit"], "calib": digits_features["calib"]}
    for s in ("test", "uniform_noise", "gaussian_noise"):
        out[s] = subset(digits_features[s], 3)
    return out


# image-level detectors run the network (and per-sample gradients) over every image: they fit on
# a third of the fit split (Gram, NACUE fit from images) and score every 6th test / noise image
IMAGE_LEVEL = {"Gram", "NACUE", "GradNorm", "GradUncertainty", "MahalanobisODIN", "ODIN"}
IMAGE_LEVEL |= {"RankFeat"}


def make(option: str, *overrides: str):
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose(config_name="config", overrides=[f"detector={option}", *overrides])
    return build(cfg.detector, "detector")


def fitted(option: str, feats: dict, backbone, *overrides: str):
    det = make(option, *overrides)
    if "model" in det.needs:
        det.bind(backbone.model, "cpu")
    return det.fit(feats["fit"], feats["calib"])


@pytest.mark.parametrize("name", NAMES)
def test_every_library_export_is_configured(name):
    """A new pytorch-ood detector fails here until it has conf/detector/pood_<name>.yaml."""
    obj = getattr(pood_det, name)
    if not isinstance(obj, type):
        assert name in NOT_DETECTORS, f"{name} is not a class: say what it is in NOT_DETECTORS"
        return
    path = CONF / "detector" / f"{option_name(name)}.yaml"
    assert path.is_file(), f"pytorch-ood {name} has no option: add {path.name}"
    cfg = yaml.safe_load(path.read_text())
    assert cfg["cls"] == name and cfg["name"] == option_name(name)
    assert base_of(obj) in {
        "LogitsDetector",
        "FeaturesDetector",
        "FeatureMapsDetector",
        "StructuredDetector",
        "GradientDetector",
        "Detector",
    }
    sig = inspect.signature(obj.__init__).parameters
    for key, value in cfg["params"].items():
        assert key in sig, f"{path.name}: {key} is not an argument of {name}"
        default = sig[key].default
        if default is inspect.Parameter.empty:
            assert (name, key) in NO_LIBRARY_DEFAULT, f"{path.name}: {key} has no default"
        else:
            assert value == default, f"{path.name}: {key}={value}, library default {default}"
    assert "search" in cfg, f"{path.name}: say search: false"


def test_no_option_names_a_missing_class():
    for path in (CONF / "detector").glob("pood_*.yaml"):
        assert yaml.safe_load(path.read_text())["cls"] in CLASSES, path.name


@pytest.mark.parametrize("cls", CLASSES)
def test_detector_on_digits(cls, small, digits_backbone):
    """Finite float64 scores, noise above ID on average — or a clear reason why not."""
    option = option_name(cls)
    if cls in NOT_APPLICABLE:
        with pytest.raises(NotApplicable, match=NOT_APPLICABLE[cls]):
            fitted(option, small, digits_backbone)
        return
    feats = dict(small)
    if cls in IMAGE_LEVEL:
        feats = {k: subset(v, 3 if k == "fit" else 2) for k, v in small.items() if k != "calib"}
        feats["calib"] = small["calib"]
    det = fitted(option, feats, digits_backbone)
    s_id = det.score(feats["test"], "test")
    s_noise = np.concatenate([det.score(feats[n], n) for n in ("uniform_noise", "gaussian_noise")])
    assert s_id.dtype == np.float64 and np.isfinite(s_id).all() and np.isfinite(s_noise).all()
    assert s_noise.mean() > s_id.mean(), f"{option}: noise scores lower than ID on average"
    assert ood_metrics(s_id, s_noise)["auroc"] > 0.5, f"{option}: noise below chance"
    if det.kind in ("logits", "features", "maps_cached", "layers_cached"):
        assert det.forward_samples == 0, f"{option} should score cached features only"
    else:
        assert det.forward_samples >= len(feats["test"]) + len(s_noise)


def test_requirements_cover_not_applicable():
    assert set(NOT_APPLICABLE) <= set(REQUIREMENTS)


def test_weightedebo_with_given_weights_is_energy(small, digits_backbone):
    ones = "[" + ",".join(["1.0"] * 10) + "]"
    webo = fitted("pood_weightedebo", small, digits_backbone, f"detector.params.weights={ones}")
    energy = fitted("pood_energy", small, digits_backbone)
    np.testing.assert_allclose(webo.score(small["test"]), energy.score(small["test"]), rtol=1e-5)


def test_mcm_with_text_embeddings_runs(small, digits_backbone, tmp_path):
    """With embeddings (here: the head's class vectors, standing in for CLIP's) MCM applies."""
    path = tmp_path / "text.pt"
    torch.save(digits_backbone.model.head.weight.detach().clone(), path)
    det = fitted("pood_mcm", small, digits_backbone, f"detector.params.text_embeddings={path}")
    assert np.isfinite(det.score(small["test"])).all()


def test_spatial_method_on_flat_features_says_why(small, digits_backbone):
    with pytest.raises(NotApplicable, match="spatial feature maps"):
        fitted("pood_rankfeat", small, digits_backbone, "detector.features=penultimate")
    with pytest.raises(NotApplicable, match=r"needs feature maps N×C×H×W.*'head'"):
        fitted("pood_ash", small, digits_backbone, "detector.features=head")


def test_feature_maps_of_a_conv_tap_run_the_network(small, digits_backbone):
    det = fitted("pood_react", small, digits_backbone, "detector.features=block3")
    assert det.kind == "maps_model"
    s = det.score(small["test"])
    assert np.isfinite(s).all() and det.forward_samples > 0


def test_model_level_detector_is_deterministic(small, digits_backbone):
    """Gram holds out a random 10 % of the fit data: seeded, so two fits agree."""
    tiny = {**small, "fit": subset(small["fit"], 6), "test": subset(small["test"], 3)}
    one_tap = "detector.layers=[block3]"
    a = fitted("pood_gram", tiny, digits_backbone, one_tap).score(tiny["test"])
    torch.manual_seed(123)  # the global RNG state must not matter
    b = fitted("pood_gram", tiny, digits_backbone, one_tap).score(tiny["test"])
    np.testing.assert_array_equal(a, b)


def test_model_detector_without_model_says_bind(small):
    det = make("pood_odin")
    with pytest.raises(Exception, match="bind"):
        det.fit(small["fit"], small["calib"])

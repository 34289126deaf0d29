"""The known traps of pytorch-ood 0.4, each pinned: the adapter avoids every one of them."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from pytorch_ood.detector import GradNorm
from torch import nn

from ood_bench.backbones import DigitsCNN
from ood_bench.detectors.pytorch_ood import (
    PytorchOODDetector,
    poisoned,
    untie_modules,
)
from ood_bench.features import Features
from tests.test_pytorch_ood_all import fitted, make, subset


@pytest.fixture(scope="module")
def tiny(digits_features):
    return {
        "fit": subset(digits_features["fit"], 4),
        "calib": digits_features["calib"],
        "test": subset(digits_features["test"], 8),
    }


class AliasedCNN(DigitsCNN):
    """The same head module registered under two names (as some zoo models do)."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.classifier = self.head


class TiedCNN(DigitsCNN):
    """One parameter shared by two distinct modules (weight tying): harmless, pinned too."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.decoder = nn.Linear(128, kw.get("num_classes", 10))
        self.decoder.weight = self.head.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * (super().forward(x) + self.decoder.bias)


def clone_into(cls, backbone) -> nn.Module:
    model = cls(num_classes=10)
    model.load_state_dict(backbone.model.state_dict(), strict=False)
    return model.eval()


def test_library_alone_corrupts_a_model_with_an_aliased_module(digits_backbone):
    """The trap itself: after GradNorm, the aliased head's weight is a dead functorch tensor
    (deepcopy and .to() of the model then crash). If this starts failing, torch fixed
    functional_call on tied modules and the adapter's untying is no longer needed."""
    model = clone_into(AliasedCNN, digits_backbone)
    GradNorm(model).predict(torch.rand(4, 1, 8, 8))
    assert poisoned(model), "expected pytorch-ood GradNorm to corrupt the aliased model"
    with pytest.raises(Exception):  # noqa: B017 - the crash varies by torch version
        copy.deepcopy(model)


@pytest.mark.parametrize("option", ["pood_gradnorm", "pood_graduncertainty"])
@pytest.mark.parametrize("arch", [AliasedCNN, TiedCNN])
def test_gradient_detectors_leave_tied_models_intact(option, arch, tiny, digits_backbone):
    model = clone_into(arch, digits_backbone)
    det = make(option)
    det.bind(model, "cpu")
    det.fit(tiny["fit"], tiny["calib"])
    a = det.score(tiny["test"])
    b = det.score(tiny["test"])  # a poisoned copy would fail or drift on the second call
    np.testing.assert_allclose(a, b)
    assert not poisoned(model) and not poisoned(det._net)
    copy.deepcopy(model)  # still copyable
    if arch is AliasedCNN:  # untying is exact: same scores as the model without the alias
        plain = fitted(option, tiny, digits_backbone).score(tiny["test"])
        np.testing.assert_allclose(a, plain, rtol=1e-5)


def test_untie_keeps_forward_and_names_each_module_once(digits_backbone):
    model = clone_into(AliasedCNN, digits_backbone)
    x = torch.rand(3, 1, 8, 8)
    before = model(x)
    assert untie_modules(model) == ["classifier (= head)"]
    torch.testing.assert_close(model(x), before)
    assert model.classifier is model.head
    names = [n for n, _ in model.named_parameters(remove_duplicate=False)]
    assert len(names) == len(set(id(p) for p in model.parameters()))


def test_callers_model_is_never_moved_switched_or_held(tiny, digits_backbone, monkeypatch):
    """pytorch-ood's predict does not call eval(), and Detector.to() moves every module it
    holds: the adapter hands the library a private eval-mode copy instead."""
    model = clone_into(DigitsCNN, digits_backbone).train()  # caller left it in train mode
    moved: list[int] = []
    real_to = nn.Module.to

    def spy(self, *args, **kwargs):
        moved.append(id(self))
        return real_to(self, *args, **kwargs)

    monkeypatch.setattr(nn.Module, "to", spy)
    for option in ("pood_odin", "pood_vim", "pood_ash", "pood_rankfeat"):
        det = make(option)
        det.bind(model, "cpu")
        det.fit(tiny["fit"], tiny["calib"])
        assert np.isfinite(det.score(tiny["test"])).all()
        assert model.training, f"{option} switched the caller's model to eval"
        owned = {id(m) for m in model.modules()} | {id(p) for p in model.parameters()}
        assert not owned & set(moved), f"{option} moved the caller's model"
        held = {id(v) for v in vars(det.impl).values()}
        assert not owned & held, f"{option} handed the caller's model to pytorch-ood"
        if det._net is not None:
            assert not det._net.training


def test_eval_mode_copy_gives_eval_scores(tiny, digits_backbone):
    """A model with dropout, bound in train mode, scores as in eval mode (deterministic)."""

    class DropCNN(DigitsCNN):
        def __init__(self, **kw):
            super().__init__(**kw)
            self.fc1 = nn.Sequential(*self.fc1, nn.Dropout(0.5))

    model = clone_into(DropCNN, digits_backbone)
    model.load_state_dict(digits_backbone.model.state_dict())
    scores = []
    for mode in (True, False):
        det = make("pood_odin")
        det.bind(model.train(mode), "cpu")
        scores.append(det.fit(tiny["fit"]).score(tiny["test"]))
    np.testing.assert_allclose(scores[0], scores[1], rtol=1e-6)
    # and MC dropout applies to it (it samples dropout itself, on its copy)
    mcd = make("pood_mcd", "detector.params.samples=5")
    mcd.bind(model.train(False), "cpu")
    s = mcd.fit(tiny["fit"]).score(tiny["test"])
    assert np.isfinite(s).all() and s.std() > 0 and not model.training


@pytest.mark.parametrize("option", ["pood_msp", "pood_vim", "pood_react", "pood_multimahalanobis"])
def test_non_gradient_detectors_score_without_autograd(option, tiny, digits_backbone):
    det = fitted(option, tiny, digits_backbone)
    seen: list[bool] = []
    name = {
        "logits": "predict_logits",
        "features": "predict_features",
        "maps_cached": "predict_feature_maps",
        "layers_cached": "predict_structured",
    }[det.kind]
    real = getattr(det.impl, name)

    def spy(*args):
        seen.append(torch.is_grad_enabled())
        return real(*args)

    setattr(det.impl, name, spy)
    t = tiny["test"]
    grad = Features(
        t.logits.clone().requires_grad_(True),
        t.penultimate.clone().requires_grad_(True),
        t.labels,
        {k: v.clone().requires_grad_(True) for k, v in t.taps.items()},
    )
    assert np.isfinite(det.score(grad)).all()
    assert seen == [False] and torch.is_grad_enabled()


@pytest.mark.parametrize(
    "option", ["pood_mahalanobis", "pood_rmd", "pood_multimahalanobis", "pood_vim", "pood_gmm"]
)
def test_float64_features_are_fed_as_float32(option, digits_features, digits_backbone):
    f = digits_features["fit"]
    f64 = Features(
        f.logits.double(),
        f.penultimate.double(),
        f.labels,
        {k: v.double() for k, v in f.taps.items()},
        source=f.source,
    )
    det = fitted(option, {"fit": f64, "calib": None}, digits_backbone)
    s = det.score(digits_features["test"])
    assert s.dtype == np.float64 and np.isfinite(s).all()


def test_scores_come_back_float64_whatever_the_library_returns(tiny, digits_backbone):
    dtypes = {}
    for option in ("pood_gmm", "pood_mahalanobis"):  # float64 and float32 inside the library
        det = fitted(option, tiny, digits_backbone)
        with torch.no_grad():
            dtypes[option] = det.impl.predict_features(det._inputs(tiny["test"])).dtype
        assert det.score(tiny["test"]).dtype == np.float64
    assert dtypes == {"pood_gmm": torch.float64, "pood_mahalanobis": torch.float32}


def test_search_uses_gridsearch_on_cached_features(tiny, digits_features, digits_backbone):
    det = make("pood_vim", "detector.search=true")
    assert "ood_validation" in det.needs and det.search_space is None  # the library's grid
    det = make("pood_vim", "detector.search=true", "+detector.search_space={d:[16,64]}")
    det.bind(digits_backbone.model, "cpu")
    det.tune(digits_features["calib"], digits_features["uniform_noise"])
    det.fit(tiny["fit"], tiny["calib"])
    assert det.best_params is not None and det.best_params["d"] in (16, 64)
    assert det.forward_samples == 0 and det.params()["searched"] == det.best_params
    assert np.isfinite(det.score(tiny["test"])).all()


def test_search_on_images_runs_the_model(tiny, digits_features, digits_backbone):
    det = make("pood_odin", "detector.search=true", "+detector.search_space={eps:[0.0,0.0014]}")
    det.bind(digits_backbone.model, "cpu")
    val_ood = subset(digits_features["gaussian_noise"], 5)
    det.tune(subset(digits_features["calib"], 3), val_ood)
    det.fit(tiny["fit"])
    assert det.best_params["eps"] in (0.0, 0.0014) and det.forward_samples > 0


def test_search_without_a_space_says_so():
    with pytest.raises(Exception, match="empty hyperparameter_space.*ViM"):
        make("pood_mahalanobis", "detector.search=true")


def test_feature_detector_needs_no_model_but_head_detector_does():
    assert make("pood_knn").needs == {"features"}
    assert make("pood_vim").needs == {"features", "model"}
    assert make("pood_react").needs == {"features", "model"}
    assert isinstance(make("pood_msp"), PytorchOODDetector)


@pytest.mark.parametrize("option", ["pood_vim", "pood_dice"])
def test_bias_free_head_is_a_zero_bias(option):
    """ViM and DICE read the head's bias; a head without one (CifarCNN's) is given zeros, and the
    scores equal those of the same network with an explicit zero bias."""
    from torch.utils.data import TensorDataset

    from ood_bench.api import detector, extract
    from ood_bench.backbones import CifarCNN

    torch.manual_seed(0)
    model = CifarCNN(num_classes=4, widths=(8, 16, 32), stem=8).eval()
    data = TensorDataset(torch.randn(96, 3, 32, 32), torch.arange(96) % 4)
    feats = extract(model, data)
    det = detector(option)  # ViM: d from the rule (half of the 32-d features)
    det.bind(model)
    scores = det.fit(feats).score(feats)
    assert np.isfinite(scores).all()

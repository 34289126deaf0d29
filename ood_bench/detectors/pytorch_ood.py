"""Adapter for pytorch-ood detectors, scoring cached features (no extra forward pass).

The detector's base class decides what it is fed: ``LogitsDetector`` → logits through
``fit_logits``/``predict_logits``; ``FeaturesDetector`` → penultimate features (or a named tap)
through ``fit_features``/``predict_features``. Library methods are called positionally because
argument names differ between classes, and always under ``torch.no_grad()`` (``predict`` would
otherwise keep autograd graphs). pytorch-ood's scores are already higher = more OOD.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from ood_bench.detectors.base import Detector
from ood_bench.errors import ConfigError
from ood_bench.features import Features

log = logging.getLogger(__name__)


def _pood_classes() -> dict[str, type]:
    import pytorch_ood.detector as det

    return {n: getattr(det, n) for n in det.__all__ if isinstance(getattr(det, n), type)}


class PytorchOODDetector(Detector):
    """One pytorch-ood detector class on cached logits or features.

    ``cls``: class name in ``pytorch_ood.detector``; ``params``: its keyword arguments (the
    library's defaults are in each YAML); ``features``: ``"penultimate"`` or a tap key such as
    ``"block3.mean"`` for feature detectors.
    """

    library = "pytorch-ood"

    def __init__(
        self,
        name: str,
        cls: str,
        params: dict[str, Any] | None = None,
        features: str = "penultimate",
    ):
        super().__init__(name)
        from pytorch_ood.api import FeaturesDetector, LogitsDetector

        classes = _pood_classes()
        if cls not in classes:
            raise ConfigError(f"pytorch-ood has no detector {cls!r}; available: {sorted(classes)}")
        self.cls_name = cls
        self._params = dict(params or {})
        klass = classes[cls]
        if issubclass(klass, LogitsDetector):
            self.input = "logits"
        elif issubclass(klass, FeaturesDetector):
            self.input = "features"
        else:
            raise ConfigError(
                f"pytorch-ood's {cls} is a {klass.__mro__[1].__name__}, which the "
                "feature-level adapter cannot feed yet (it needs feature maps or "
                "the model)"
            )
        self.features_key = features
        try:
            self.impl = klass(None, **self._params)  # model=None: we feed representations
        except TypeError as e:
            raise ConfigError(f"bad hyperparameters for pytorch-ood {cls}: {e}") from e

    def _inputs(self, feats: Features) -> torch.Tensor:
        if self.input == "logits":
            return feats.logits.float()
        if self.features_key == "penultimate":
            return feats.penultimate.float()
        if self.features_key not in feats.taps:
            raise ConfigError(
                f"{self.name}: no tap {self.features_key!r}; "
                f"available: {['penultimate', *sorted(feats.taps)]}"
            )
        return feats.taps[self.features_key].float()  # Mahalanobis needs float32

    def fit(self, fit: Features, calib: Features | None = None) -> PytorchOODDetector:
        if getattr(self.impl, "requires_fit", False):
            with torch.no_grad():
                x, y = self._inputs(fit), fit.labels.long()
                if self.input == "logits":
                    self.impl.fit_logits(x, y)
                else:
                    self.impl.fit_features(x, y)
        return self

    def _score(self, feats: Features) -> np.ndarray:
        with torch.no_grad():
            x = self._inputs(feats)
            s = (
                self.impl.predict_logits(x)
                if self.input == "logits"
                else self.impl.predict_features(x)
            )
        return torch.as_tensor(s).detach().cpu().double().numpy()

    def params(self) -> dict[str, Any]:
        return {"cls": self.cls_name, **self._params}

"""The functional-data trajectory baseline (Dadalto, Alberge, Picot, Piantanida, "A Functional
Data Perspective and Baseline on Multi-Layer Out-of-Distribution Detection", NeurIPS 2023):
a multi-layer, training-free peer of MaSF.

Each layer ``l`` (every tap, spatially max-pooled, then the logits) maps a sample to one number,
the softmax-weighted projection on the ``fit`` class means ``mu_{l,c}`` (by label):
``s_l(x) = sum_c p_c(x) ||h_l|| cos(h_l, mu_{l,c})``, ``p = softmax(logits)``. The sample is the
trajectory ``s(x) = (s_1, ..., s_L)``; scaled by the per-layer maximum over the fit set
``m_l``, it is compared with the mean fit trajectory ``r = mean_fit(s / m)`` by the inner
product ``S(x) = <s(x) / m, r> / ||r||^2`` (higher = ID; :meth:`Trajectory._score` returns
``-S``). No hyperparameter beyond the layers (all taps by default).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import softmax

from ood_bench.detectors.base import Detector
from ood_bench.detectors.native.linear_head import as_numpy
from ood_bench.detectors.stat import layer_keys
from ood_bench.errors import ConfigError
from ood_bench.features import Features

EPS = 1e-7  # the authors' guard in the cosine's denominator


def projection_score(h: np.ndarray, mus: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """``sum_c p_c ||h|| cos(h, mu_c)`` for each row of ``h``."""
    hn = np.linalg.norm(h, axis=1, keepdims=True)
    cos = (h @ mus.T) / (hn @ np.linalg.norm(mus, axis=1, keepdims=True).T + EPS)
    return (hn * cos * probs).sum(1)


class Trajectory(Detector):
    """Layer-wise class-mean projections, aggregated by the inner product with the mean ID
    trajectory."""

    def __init__(self, name: str = "ob_trajectory", layers: list[str] | None = None):
        """``layers``: tapped layers to use (null: every tap), each max-pooled; the logits are
        always the last layer, as in the authors' code."""
        super().__init__(name)
        self.layers = list(layers) if layers else None
        self.keys: list[str] | None = None

    def _trajectories(self, feats: Features) -> np.ndarray:
        """N×L matrix of layer scores."""
        probs = softmax(as_numpy(feats.logits), axis=1)
        cols = []
        for key in self.keys:  # type: ignore[union-attr]
            h = as_numpy(feats.logits if key == "logits" else feats.taps[key])
            cols.append(projection_score(h, self.mus[key], probs))
        return np.stack(cols, axis=1)

    def fit(self, fit: Features, calib: Features | None = None) -> Trajectory:
        """Class means per layer (by the fit labels), the per-layer maxima and the mean
        trajectory."""
        self.keys = layer_keys(fit, "max", self.layers, include_logits=True)
        labels = fit.labels.cpu().numpy()
        num_classes = fit.logits.shape[1]
        missing = sorted(set(range(num_classes)) - set(labels.tolist()))
        if missing:
            raise ConfigError(
                f"{self.name}: the fit split has no sample of class(es) {missing}, so their "
                "means are undefined. Fix: a fit split holding every class"
            )
        self.mus = {}
        for key in self.keys:
            h = as_numpy(fit.logits if key == "logits" else fit.taps[key])
            self.mus[key] = np.stack([h[labels == c].mean(0) for c in range(num_classes)])
        train = self._trajectories(fit)
        self.max_traj = train.max(0)
        if np.any(self.max_traj == 0):
            raise ConfigError(
                f"{self.name}: a layer's fit scores have maximum 0 ({self.keys}); "
                "choose other layers (detector.layers)"
            )
        self.ref = (train / self.max_traj).mean(0)
        self.scale = float((self.ref**2).sum())
        return self

    def _score(self, feats: Features) -> np.ndarray:
        if self.keys is None:
            raise ConfigError(f"{self.name}: call fit before score")
        s = self._trajectories(feats) / self.max_traj
        return -(s @ self.ref) / self.scale

    def params(self) -> dict[str, Any]:
        return {"layers": self.layers}

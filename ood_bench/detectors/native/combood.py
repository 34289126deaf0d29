"""CombOOD (Rajasekaran, Sajol, Berglind, Mukhopadhyay, Das, "COMBOOD: A Semiparametric
Approach for Detecting Out-of-distribution Data for Image Classification", SDM 2024).

Two ID-likelihood surrogates are combined:

- *parametric*: the Mahalanobis distance ``m(x)`` of the XOOD *extreme* features (Berglind et
  al.: each layer's largest activation and negated smallest, and the largest and negated
  smallest logit), standardised and Yeo-Johnson power-transformed on the ``fit`` set, with the
  regularised inverse covariance ``(Cov + reg I)^-1`` (``reg = 1``) and mean 0;
- *non-parametric*: the squared Euclidean distance ``d_K(x)^2`` to the K-th nearest
  L2-normalised ``fit`` penultimate feature (K = 50, Sun et al. 2022).

The authors' combination ("square log probability", the one their ``test_ood.py`` reports) is
``log p(x) ≈ -sqrt(n) log d_K(x)^2 - m(x)^2`` with ``n`` the penultimate dimension; this class
returns its negative (higher = more OOD).

What is fed: the cached taps and logits. XOOD hooks the *input* of every ReLU/GELU; the cache
holds each tap's output, channel-wise max-pooled (``<layer>.max``) or flat, so the extreme
features here are: per pooled tap its global maximum (the max of the channel maxima; its minimum
is not cached), per flat tap its maximum and negated minimum, plus the two logit extremes.
Columns constant over the fit set (e.g. the minimum after a ReLU) are dropped.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from sklearn.neighbors import NearestNeighbors
from sklearn.preprocessing import PowerTransformer, StandardScaler

from ood_bench.detectors.base import Detector
from ood_bench.detectors.native.linear_head import as_numpy
from ood_bench.errors import ConfigError
from ood_bench.features import Features

log = logging.getLogger(__name__)

NORM_EPS = 1e-10  # the authors' normalizer adds it after dividing by the norm
D_FLOOR = 1e-300  # keeps log d_K^2 finite for a sample that duplicates a fit feature


def extreme_features(feats: Features) -> tuple[np.ndarray, list[str]]:
    """The XOOD extreme features available from the cache (see the module docstring) and their
    names: logits' max and -min first, then per tap in network order."""
    logits = as_numpy(feats.logits)
    cols, names = [logits.max(1), -logits.min(1)], ["Max_out", "Min_out"]
    for key, t in feats.taps.items():
        base, _, red = key.rpartition(".")
        x = as_numpy(t)
        if red == "max" and base:
            cols.append(x.max(1))
            names.append(f"Max_{base}")
        elif red in ("max", "mean") and base:
            continue  # a mean-pooled copy: no extreme is recoverable from it
        else:
            cols += [x.max(1), -x.min(1)]
            names += [f"Max_{key}", f"Min_{key}"]
    return np.stack(cols, axis=1), names


def unit_normalise(z: np.ndarray) -> np.ndarray:
    """The authors' ``x / ||x|| + 1e-10``."""
    return z / np.linalg.norm(z, axis=-1, keepdims=True) + NORM_EPS


class CombOOD(Detector):
    """CombOOD: ``sqrt(n) log d_K^2 + m^2`` (higher = more OOD), ``d_K`` the K-th nearest
    normalised penultimate distance and ``m`` the Mahalanobis distance of the extreme
    features."""

    def __init__(self, name: str = "ob_combood", k: int = 50, reg: float = 1.0):
        """``k``: the neighbour whose distance is used (authors: 50); ``reg``: the ridge added
        to the covariance of the transformed extreme features (authors: 1)."""
        super().__init__(name)
        if k < 1 or reg < 0:
            raise ConfigError(f"{name}: k={k}, reg={reg}: need k >= 1 and reg >= 0 (50, 1)")
        self.k, self.reg = int(k), float(reg)
        self.keep: np.ndarray | None = None

    def fit(self, fit: Features, calib: Features | None = None) -> CombOOD:
        """Scaler, power transform and inverse covariance of the extreme features; the k-NN
        index of the normalised penultimate features."""
        x, names = extreme_features(fit)
        self.keep = x.std(0) > 0
        dropped = [n for n, k in zip(names, self.keep, strict=True) if not k]
        if dropped:
            log.info(
                "%s: extreme features constant over the fit set, dropped: %s", self.name, dropped
            )
        self.names = [n for n, k in zip(names, self.keep, strict=True) if k]
        x = x[:, self.keep]
        self.scaler = StandardScaler().fit(x)
        self.power = PowerTransformer().fit(self.scaler.transform(x))
        xt = self.power.transform(self.scaler.transform(x))
        cov = np.atleast_2d(np.cov(xt, rowvar=False))
        self.precision = np.linalg.inv(cov + self.reg * np.identity(xt.shape[1]))
        z = unit_normalise(as_numpy(fit.penultimate))
        if len(z) < self.k:
            raise ConfigError(f"{self.name}: {len(z)} fit samples for k={self.k}")
        self.n = z.shape[1]
        self.nn = NearestNeighbors(n_neighbors=self.k).fit(z)
        return self

    def parts(self, feats: Features) -> tuple[np.ndarray, np.ndarray]:
        """``m(x)`` and ``d_K(x)^2`` of each sample."""
        if self.keep is None:
            raise ConfigError(f"{self.name}: call fit before score")
        x, _ = extreme_features(feats)
        xt = self.power.transform(self.scaler.transform(x[:, self.keep]))
        maha = np.sqrt(np.maximum(np.einsum("nd,de,ne->n", xt, self.precision, xt), 0.0))
        dist, _ = self.nn.kneighbors(unit_normalise(as_numpy(feats.penultimate)))
        return maha, dist[:, -1] ** 2

    def _score(self, feats: Features) -> np.ndarray:
        maha, d2 = self.parts(feats)
        return np.sqrt(self.n) * np.log(np.maximum(d2, D_FLOOR)) + maha**2

    def params(self) -> dict[str, Any]:
        return {"k": self.k, "reg": self.reg}

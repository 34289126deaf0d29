"""Mahalanobis++ and RMDS++ (Mueller & Hein, ICML 2025): the class-conditional Gaussian with a
shared covariance (Lee et al. 2018) and its relative version (Ren et al. 2021), fitted on
L2-normalised penultimate features.

With ``x̂ = x / ||x||``, class means ``μ_c`` of the normalised fit features (true labels) and the
shared covariance ``Σ`` of the class-centred ones (maximum likelihood, divided by N; pseudo-inverse
as sklearn's ``EmpiricalCovariance``)::

    d_c(x) = (x̂ - μ_c)ᵀ Σ⁺ (x̂ - μ_c)
    Mahalanobis++:  s(x) = min_c d_c(x)
    RMDS++:         s(x) = min_c d_c(x) - d_0(x)   (d_0: one Gaussian on all normalised features)

higher = more OOD (the authors' ``conf`` is ``-s``). The normalisation removes the feature norm,
which varies strongly and carries little class information, so the Gaussian fits the ID data
better; the score is invariant to any positive rescaling of a feature vector.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import scipy.linalg

from ood_bench.detectors.base import Detector
from ood_bench.errors import ConfigError
from ood_bench.features import Features

log = logging.getLogger(__name__)

EPS_NORM = 1e-12  # a zero feature vector stays zero instead of dividing by 0


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` divided by their Euclidean norm."""
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), EPS_NORM)


def shared_precision(centred: np.ndarray) -> np.ndarray:
    """Pseudo-inverse of the maximum-likelihood covariance of ``centred`` (re-centred, / N), as
    sklearn's ``EmpiricalCovariance(assume_centered=False).precision_``."""
    c = centred - centred.mean(0, keepdims=True)
    return scipy.linalg.pinvh(c.T @ c / len(c))


def mahalanobis_sq(x: np.ndarray, mean: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """``(x - mean)ᵀ P (x - mean)`` per row."""
    d = x - mean
    return ((d @ precision) * d).sum(1)


class MahalanobisPP(Detector):
    """Mahalanobis++ (``relative=False``) or RMDS++ (``relative=True``) on the L2-normalised
    penultimate features; ``normalise=False`` gives back the plain Mahalanobis / RMDS of the
    same code path (for the ablation the paper makes)."""

    def __init__(self, name: str, relative: bool = False, normalise: bool = True):
        """``relative``: subtract the class-agnostic Gaussian's distance (RMDS++);
        ``normalise``: L2-normalise the features first (the ++ of the paper)."""
        super().__init__(name)
        self.relative = bool(relative)
        self.normalise = bool(normalise)

    def _prep(self, feats: Features) -> np.ndarray:
        """Penultimate features as float64, L2-normalised when ``normalise``."""
        x = feats.penultimate.detach().double().cpu().numpy()
        return l2_normalise(x) if self.normalise else x

    def fit(self, fit: Features, calib: Features | None = None) -> MahalanobisPP:
        """Class means (true labels) and shared precision; the global Gaussian for RMDS++."""
        x = self._prep(fit)
        y = fit.labels.cpu().numpy().astype(int)
        classes = np.unique(y)
        if len(classes) < 2:
            raise ConfigError(
                f"{self.name}: the fit split has {len(classes)} class(es); class-conditional "
                "Gaussians need at least 2. Fix: fit on labelled ID training data."
            )
        self.means = np.stack([x[y == c].mean(0) for c in classes])
        centred = np.concatenate([x[y == c] - self.means[i] for i, c in enumerate(classes)])
        self.precision = shared_precision(centred)
        if self.relative:
            self.global_mean = x.mean(0)
            self.global_precision = shared_precision(x - self.global_mean)
        return self

    def class_distances(self, feats: Features) -> np.ndarray:
        """N×C squared Mahalanobis distances to each class mean."""
        x = self._prep(feats)
        return np.stack([mahalanobis_sq(x, m, self.precision) for m in self.means], axis=1)

    def _score(self, feats: Features) -> np.ndarray:
        """``min_c d_c`` (minus ``d_0`` for RMDS++): higher = more OOD."""
        s = self.class_distances(feats).min(1)
        if self.relative:
            s = s - mahalanobis_sq(self._prep(feats), self.global_mean, self.global_precision)
        return s

    def params(self) -> dict[str, Any]:
        """``relative`` and ``normalise``."""
        return {"relative": self.relative, "normalise": self.normalise}

    def reference_nbytes(self) -> int:
        """Means and precision matrices."""
        arrays = [self.means, self.precision]
        if self.relative:
            arrays += [self.global_mean, self.global_precision]
        return int(sum(a.nbytes for a in arrays))

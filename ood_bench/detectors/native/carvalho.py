"""OpenPCS-Class, the feature-space method of Carvalho, Vellasco and Amaral (IJCNN 2023, "Out-of-
Distribution Detection in Deep Learning Models: A Feature Space-Based Approach"), as established
from public material (see docs/detectors-native-b.md for what could and could not be).

One probabilistic PCA (Tipping & Bishop: ``n_components`` principal axes plus isotropic noise,
sklearn's ``PCA.score_samples``) is fitted per class on the ``fit`` penultimate features of that
class (by label); a sample's ID score is its best class log-likelihood
``S(x) = max_c log N(x; mu_c, W_c W_c^T + sigma_c^2 I)`` and :meth:`OpenPCSClass._score`
returns ``-S`` (higher = more OOD). This is OpenPCS (Oliveira et al., 2021) made class-wise.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from sklearn.decomposition import PCA

from ood_bench.detectors.base import Detector
from ood_bench.detectors.native.linear_head import as_numpy
from ood_bench.errors import ConfigError
from ood_bench.features import Features

log = logging.getLogger(__name__)


class OpenPCSClass(Detector):
    """Per-class probabilistic PCA on the penultimate features; the best class log-likelihood."""

    def __init__(self, name: str = "ob_carvalho", n_components: int = 400):
        """``n_components``: principal axes per class (the authors' code: 400, on 768-d ViT
        features); capped at ``min(D, r) - 1``, ``r`` the smallest rank of a class's centred fit
        features, so that residual variance is left for the isotropic noise (else the class
        covariance is singular)."""
        super().__init__(name)
        if n_components < 1:
            raise ConfigError(f"{name}: n_components={n_components} must be >= 1 (authors: 400)")
        self.n_components = int(n_components)
        self.pcas: list[PCA] = []
        self.used: int | None = None

    def fit(self, fit: Features, calib: Features | None = None) -> OpenPCSClass:
        """One PCA per class present among the fit labels."""
        z = as_numpy(fit.penultimate)
        labels = fit.labels.cpu().numpy()
        classes = np.unique(labels)
        # the PPCA noise variance is the mean variance left beyond n_components: it must be > 0
        # or the class covariance is singular (a dead ReLU unit, fewer samples than dimensions)
        ranks = {
            int(c): int(np.linalg.matrix_rank(z[labels == c] - z[labels == c].mean(0)))
            for c in classes
        }
        smallest = min(ranks.values())
        used = min(self.n_components, z.shape[1] - 1, smallest - 1)
        if used < 1:
            raise ConfigError(
                f"{self.name}: the fit features of a class span {smallest} dimension(s): too few "
                "for a PCA with residual variance. Fix: a larger fit split"
            )
        if used < self.n_components:
            log.info(
                "%s: n_components %d capped to %d (%d-d features, smallest class rank %d)",
                self.name,
                self.n_components,
                used,
                z.shape[1],
                smallest,
            )
        self.used = used
        self.pcas = [PCA(n_components=used).fit(z[labels == c]) for c in classes]
        return self

    def _score(self, feats: Features) -> np.ndarray:
        if not self.pcas:
            raise ConfigError(f"{self.name}: call fit before score")
        z = as_numpy(feats.penultimate)
        return -np.max([p.score_samples(z) for p in self.pcas], axis=0)

    def params(self) -> dict[str, Any]:
        return {"n_components": self.n_components}

    def recorded_params(self) -> dict[str, float]:
        return {"n_components": float(self.used)} if self.used is not None else {}

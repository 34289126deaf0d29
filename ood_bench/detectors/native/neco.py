"""NECO (Ammar et al., ICLR 2024): NEural-Collapse-based OOD detection.

Under neural collapse the ID penultimate features concentrate on the low-dimensional subspace
spanned by the class means, and OOD features become nearly orthogonal to it. With ``z`` the
features standardised by the fit set's mean and standard deviation and ``P_d`` the projection on
the first ``d`` principal components of the standardised fit features::

    NECO(x) = ||P_d z|| / ||z||  ∈ [0, 1]          (higher = ID)
    score(x) = -NECO(x) · (max_c logit_c(x) if max_logit else 1)   (higher = more OOD)

The authors multiply by the maximum logit for every backbone but ResNets (ViT, Swin, DeiT...):
``max_logit`` switches it. ``dim=None`` picks ``d`` as the number of components that explain
``explained_variance`` of the fit features' variance (90 %, the rule of the OpenOOD port in
mueller-mp/maha-norm); the paper tunes ``d`` per backbone instead (e.g. 100 to 400 on ImageNet).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from ood_bench.detectors.base import Detector
from ood_bench.errors import ConfigError
from ood_bench.features import Features

log = logging.getLogger(__name__)


def components_for(eigenvalues: np.ndarray, ratio: float) -> int:
    """The fewest leading components whose eigenvalues (sorted, descending) sum to at least
    ``ratio`` of the total."""
    cum = np.cumsum(eigenvalues) / eigenvalues.sum()
    return int(min(np.searchsorted(cum, ratio) + 1, len(eigenvalues)))


class NECO(Detector):
    """NECO on the penultimate features (see the module docstring)."""

    def __init__(
        self,
        name: str,
        dim: int | None = None,
        explained_variance: float = 0.9,
        max_logit: bool = False,
    ):
        """``dim``: principal subspace dimension (None: by ``explained_variance``);
        ``max_logit``: multiply by the maximum logit (the authors' setting for non-ResNets)."""
        super().__init__(name)
        if dim is not None and int(dim) < 1:
            raise ConfigError(f"{name}: dim must be >= 1 or null, got {dim}")
        if not 0.0 < float(explained_variance) <= 1.0:
            raise ConfigError(
                f"{name}: explained_variance must be in (0, 1], got {explained_variance}"
            )
        self.dim = None if dim is None else int(dim)
        self.explained_variance = float(explained_variance)
        self.max_logit = bool(max_logit)

    def _standardise(self, feats: Features) -> np.ndarray:
        """Features standardised by the fit set's mean and std (sklearn's StandardScaler)."""
        return (feats.penultimate.detach().double().cpu().numpy() - self.mean) / self.scale

    def fit(self, fit: Features, calib: Features | None = None) -> NECO:
        """Standardisation and PCA of the fit features; the subspace dimension."""
        x = fit.penultimate.detach().double().cpu().numpy()
        self.mean = x.mean(0)
        sd = x.std(0)
        self.scale = np.where(sd < 10 * np.finfo(np.float64).eps, 1.0, sd)  # constant: kept as is
        z = (x - self.mean) / self.scale
        self.z_mean = z.mean(0)  # ~0; PCA centres on it
        evals, evecs = np.linalg.eigh(np.cov(z - self.z_mean, rowvar=False, bias=False))
        order = np.argsort(evals)[::-1]
        evals, evecs = np.clip(evals[order], 0.0, None), evecs[:, order]
        d = self.dim or components_for(evals, self.explained_variance)
        if d > z.shape[1]:
            raise ConfigError(
                f"{self.name}: dim={d} exceeds the feature dimension {z.shape[1]}. Fix: a "
                "smaller dim, or null to choose it by explained_variance."
            )
        self.d_ = d
        self.components = evecs[:, :d]
        log.info("%s: principal subspace of dimension %d of %d", self.name, d, z.shape[1])
        return self

    def ratio(self, feats: Features) -> np.ndarray:
        """``||P_d z|| / ||z||`` per sample, in [0, 1] (higher = ID)."""
        z = self._standardise(feats)
        proj = (z - self.z_mean) @ self.components
        return np.linalg.norm(proj, axis=1) / np.maximum(np.linalg.norm(z, axis=1), 1e-300)

    def _score(self, feats: Features) -> np.ndarray:
        """``-NECO`` (times the maximum logit when ``max_logit``): higher = more OOD."""
        r = self.ratio(feats)
        if self.max_logit:
            r = r * feats.logits.detach().double().cpu().numpy().max(1)
        return -r

    def params(self) -> dict[str, Any]:
        """``dim``, ``explained_variance``, ``max_logit``."""
        return {
            "dim": self.dim,
            "explained_variance": self.explained_variance,
            "max_logit": self.max_logit,
        }

    def recorded_params(self) -> dict[str, float]:
        """The subspace dimension the detector ran with."""
        return {"dim": float(self.d_)} if hasattr(self, "d_") else {}

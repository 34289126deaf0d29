"""Kernel PCA OOD detection: CoP and CoRP (Fang et al., NeurIPS 2024, "Kernel PCA for
Out-of-Distribution Detection").

The penultimate features are mapped explicitly by a kernel's feature map, PCA is fitted on the
mapped ID fit features, and the OOD score is the reconstruction error in the mapped space:

- CoP (cosine kernel): ``φ(x) = x / ||x||``;
- CoRP (cosine-Gaussian kernel): ``φ(x) = sqrt(2/M) cos(W x/||x|| + u)``, random Fourier features
  of the Gaussian kernel ``exp(-γ ||a - b||²)`` on the normalised features, ``W ~ N(0, 2γ I)``
  (M×D), ``u ~ U[0, 2π)^M``.

With ``μ`` the mean of the mapped fit features and ``U_q`` the first ``q`` eigenvectors of their
scatter matrix (``q``: the fewest whose eigenvalues reach ``explained_variance`` of the total)::

    score(x) = || (φ(x) - μ) - U_q U_qᵀ (φ(x) - μ) ||    (higher = more OOD)

Paper defaults (CIFAR-10, ResNet-18): CoP ``explained_variance=0.85``; CoRP
``explained_variance=0.8``, ``gamma=2``, ``M=2048``. The Fourier features are drawn with
``numpy.random.RandomState(seed)`` (normal, then uniform), the authors' order.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import numpy as np

from ood_bench.detectors.base import Detector
from ood_bench.detectors.native.neco import components_for
from ood_bench.errors import ConfigError
from ood_bench.features import Features

log = logging.getLogger(__name__)

KERNELS = ("cosine", "cosine_rff")
NORM_EPS = 1e-10  # the authors' guard in the L2 normalisation


def principal_axes(f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (descending) and eigenvectors of the scatter matrix ``fᵀf`` of centred rows
    ``f``: from the thin SVD of ``f`` when it has fewer rows than columns (CoRP's M = 2048 random
    features on a small fit set), else from ``eigh(fᵀf)``; the subspaces are the same."""
    if f.shape[0] < f.shape[1]:
        _, s, vt = np.linalg.svd(f, full_matrices=False)
        return s**2, vt.T
    evals, evecs = np.linalg.eigh(f.T @ f)
    order = np.argsort(evals)[::-1]
    return np.clip(evals[order], 0.0, None), evecs[:, order]


class KernelPCA(Detector):
    """CoP (``kernel="cosine"``) or CoRP (``kernel="cosine_rff"``) on the penultimate features."""

    def __init__(
        self,
        name: str,
        kernel: Literal["cosine", "cosine_rff"] = "cosine",
        explained_variance: float = 0.85,
        gamma: float = 2.0,
        n_features: int = 2048,
        seed: int = 0,
    ):
        """``kernel``: ``cosine`` (CoP) or ``cosine_rff`` (CoRP); ``explained_variance`` chooses
        the number of principal components q; ``gamma`` and ``n_features`` (M) are CoRP's
        Gaussian kernel and number of random Fourier features; ``seed`` draws them."""
        super().__init__(name)
        if kernel not in KERNELS:
            raise ConfigError(f"{name}: kernel must be one of {KERNELS}, got {kernel!r}")
        if not 0.0 < float(explained_variance) <= 1.0:
            raise ConfigError(
                f"{name}: explained_variance must be in (0, 1], got {explained_variance}"
            )
        if float(gamma) <= 0 or int(n_features) < 1:
            raise ConfigError(
                f"{name}: gamma must be > 0 and n_features >= 1, got {gamma}, {n_features}"
            )
        self.kernel = kernel
        self.explained_variance = float(explained_variance)
        self.gamma = float(gamma)
        self.n_features = int(n_features)
        self.seed = int(seed)

    def feature_map(self, feats: Features) -> np.ndarray:
        """The kernel's explicit feature map of the penultimate features."""
        x = feats.penultimate.detach().double().cpu().numpy()
        x = x / (np.linalg.norm(x, axis=1, keepdims=True) + NORM_EPS)
        if self.kernel == "cosine_rff":
            x = np.sqrt(2.0 / self.n_features) * np.cos(x @ self.rff_w.T + self.rff_u)
        return x

    def fit(self, fit: Features, calib: Features | None = None) -> KernelPCA:
        """Random features (CoRP), the mapped fit mean and the principal subspace."""
        if self.kernel == "cosine_rff":
            rng = np.random.RandomState(self.seed)
            dim = fit.penultimate.shape[1]
            self.rff_w = np.sqrt(2 * self.gamma) * rng.normal(size=(self.n_features, dim))
            self.rff_u = 2 * np.pi * rng.rand(self.n_features)
        f = self.feature_map(fit)
        self.mu = f.mean(0)
        f = f - self.mu
        evals, evecs = principal_axes(f)
        self.q_ = components_for(evals, self.explained_variance)
        self.basis = evecs[:, : self.q_]
        log.info("%s: q = %d of %d mapped dimensions", self.name, self.q_, f.shape[1])
        return self

    def _score(self, feats: Features) -> np.ndarray:
        """Reconstruction error of the centred mapped features: higher = more OOD."""
        f = self.feature_map(feats) - self.mu
        return np.linalg.norm(f - (f @ self.basis) @ self.basis.T, axis=1)

    def params(self) -> dict[str, Any]:
        """The kernel and its hyperparameters."""
        out: dict[str, Any] = {"kernel": self.kernel, "explained_variance": self.explained_variance}
        if self.kernel == "cosine_rff":
            out.update(gamma=self.gamma, n_features=self.n_features, seed=self.seed)
        return out

    def recorded_params(self) -> dict[str, float]:
        """The number of principal components the detector ran with."""
        return {"q": float(self.q_)} if hasattr(self, "q_") else {}

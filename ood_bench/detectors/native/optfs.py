"""OptFS (Zhao et al., "Towards Optimal Feature-Shaping Methods for Out-of-Distribution
Detection", ICLR 2024): a piecewise-constant feature-shaping function in closed form.

The range of the ``fit`` penultimate values ``[q_0.001, q_0.999)`` (quantiles over all
entries) is cut into ``n_bins`` equal intervals ``B_k``; the shaping function is constant on
each, ``theta(z) = theta_k`` for ``z`` in ``B_k`` and 0 outside the range, with the closed-form
optimum ``theta_k ∝ mean_fit sum_j w_{c,j} z_j 1[z_j in B_k]`` (``c`` the predicted class, ``w``
the last linear layer), normalised to ``||theta|| = 1000``. A feature ``z`` is shaped entrywise
to ``z'_j = theta(z_j) z_j`` and scored by

- ``vanilla`` (the authors' default, "Ours (V)"): ``w_c · z'`` (c predicted from the unshaped
  logits), or
- ``energy``: ``logsumexp(W z' + b)``.

Higher = ID in the paper; :meth:`OptFS._score` returns the negative (higher = more OOD). Fed
cached penultimate features and logits, plus the head's weight and bias read once at fit.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
from scipy.special import logsumexp

from ood_bench.detectors.base import Detector
from ood_bench.detectors.native.linear_head import as_numpy, read_head
from ood_bench.errors import ConfigError
from ood_bench.features import Features

SCORES = ("vanilla", "energy")


class OptFS(Detector):
    """OptFS: shape the penultimate features by the fitted piecewise-constant function, score
    the predicted class's logit contribution (or the energy) of the shaped feature."""

    needs: ClassVar[frozenset[str]] = frozenset({"features", "model"})

    def __init__(
        self,
        name: str = "ob_optfs",
        score: Literal["vanilla", "energy"] = "vanilla",
        n_bins: int = 100,
        quantile: float = 1e-3,
        norm: float = 1000.0,
    ):
        """``score``: vanilla (predicted-class logit of the shaped feature) or energy;
        ``n_bins`` equal intervals between the ``quantile`` and ``1 - quantile`` of the fit
        values (paper: 100, 0.001); ``norm``: the L2 norm of theta (authors: 1000)."""
        super().__init__(name)
        if score not in SCORES:
            raise ConfigError(f"{name}: score={score!r}; choose from {SCORES}")
        if n_bins < 1 or not 0.0 <= quantile < 0.5 or norm <= 0:
            raise ConfigError(
                f"{name}: n_bins={n_bins}, quantile={quantile}, norm={norm}: need n_bins >= 1, "
                "0 <= quantile < 0.5 and norm > 0 (paper: 100, 0.001, 1000)"
            )
        self.score_kind, self.n_bins = score, int(n_bins)
        self.quantile, self.norm = float(quantile), float(norm)
        self.edges: np.ndarray | None = None
        self.theta: np.ndarray | None = None

    def _bins(self, z: np.ndarray) -> np.ndarray:
        """The interval index of every entry of ``z`` (-1: outside every interval)."""
        k = np.searchsorted(self.edges, z, side="right") - 1  # type: ignore[arg-type]
        inside = (k >= 0) & (z < self.edges[np.clip(k, 0, None)] + self.width)  # type: ignore[index]
        return np.where(inside, k, -1)

    def fit(self, fit: Features, calib: Features | None = None) -> OptFS:
        """The interval grid from the fit values and the closed-form theta."""
        self.w, self.b = read_head(self.name, self.model, fit)
        z = as_numpy(fit.penultimate)
        pred = as_numpy(fit.logits).argmax(1)
        lo, hi = np.quantile(z, self.quantile), np.quantile(z, 1.0 - self.quantile)
        if not hi > lo:
            raise ConfigError(
                f"{self.name}: the fit features are constant between their {self.quantile} and "
                f"{1 - self.quantile} quantiles ({lo:.4g}); nothing to shape. Fix: lower quantile"
            )
        self.width = (hi - lo) / self.n_bins
        self.edges = np.arange(lo, hi, self.width)  # as the authors: n_bins (+1 by rounding)
        contrib = self.w[pred] * z  # per-entry contribution to the predicted logit
        k = self._bins(z)
        inside = k >= 0
        sums = np.bincount(k[inside], weights=contrib[inside], minlength=len(self.edges))
        lc = sums / len(z)  # mean over samples of the per-bin sum over entries
        self.theta = lc / np.linalg.norm(lc) * self.norm
        return self

    def shape(self, z: np.ndarray) -> np.ndarray:
        """``theta(z) * z`` entrywise (0 outside the fitted range)."""
        if self.theta is None:
            raise ConfigError(f"{self.name}: call fit before score")
        k = self._bins(z)
        return np.where(k >= 0, self.theta[np.clip(k, 0, None)], 0.0) * z

    def _score(self, feats: Features) -> np.ndarray:
        shaped = self.shape(as_numpy(feats.penultimate))
        if self.score_kind == "energy":
            return -logsumexp(shaped @ self.w.T + self.b, axis=1)
        pred = as_numpy(feats.logits).argmax(1)
        return -np.einsum("nd,nd->n", self.w[pred], shaped)

    def params(self) -> dict[str, Any]:
        return {
            "score": self.score_kind,
            "n_bins": self.n_bins,
            "quantile": self.quantile,
            "norm": self.norm,
        }

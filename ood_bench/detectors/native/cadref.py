"""CARef and CADRef (Ling et al., CVPR 2025): class-aware relative feature errors.

Both compare a sample's penultimate feature ``x`` with the mean ``mu_c`` of the ``fit`` features
the classifier predicts as its predicted class ``c``, relative to the feature's own size:

- **CARef**: ``S(x) = ||x - mu_c||_1 / ||x||_1``;
- **CADRef** decouples that error along the signs of the head's weights ``w_c`` of class ``c``:
  ``E+ = ||relu((x - mu_c) * sign(w_c))||_1 / ||x||_1`` (the part that raises the class logit) and
  ``E- = ||relu(-(x - mu_c) * sign(w_c))||_1 / ||x||_1`` (the part that lowers it), so that
  ``E+ + E- = CARef``; then ``S(x) = E+ / L(x) + E- / mean_fit L``, with ``L`` a logit score
  (energy ``logsumexp`` by default, as in the authors' code; max logit, MSP or GEN).

Higher = more OOD (the authors return ``-S``, higher = ID). Fed cached penultimate features and
logits; CADRef also reads the last ``nn.Linear``'s weight once (``needs`` the model).
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar, Literal

import numpy as np
from scipy.special import logsumexp, softmax

from ood_bench.detectors.base import Detector
from ood_bench.detectors.native.linear_head import as_numpy, read_head
from ood_bench.errors import ConfigError
from ood_bench.features import Features

log = logging.getLogger(__name__)

LOGIT_SCORES = ("energy", "maxlogit", "msp", "gen")


def logit_score(logits: np.ndarray, method: str, gamma: float = 0.1) -> np.ndarray:
    """The ID confidence ``L`` CADRef divides by: energy (logsumexp), max logit, MSP or GEN
    (Liu et al., CVPR 2023: ``1 / sum_top-M p^g (1-p)^g``, ``M = max(10, C // 10)``)."""
    if method == "energy":
        return logsumexp(logits, axis=1)
    if method == "maxlogit":
        return logits.max(axis=1)
    p = softmax(logits, axis=1)
    if method == "msp":
        return p.max(axis=1)
    m = max(10, logits.shape[1] // 10)
    top = np.sort(p, axis=1)[:, -m:]
    return 1.0 / np.sum(top**gamma * (1.0 - top) ** gamma, axis=1)


def class_means(z: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Mean of the features predicted as each class; a class no fit sample is predicted as
    takes the mean of all (the authors' code would give NaN there)."""
    means = np.tile(z.mean(0), (num_classes, 1))
    empty = []
    for c in range(num_classes):
        sel = pred == c
        if sel.any():
            means[c] = z[sel].mean(0)
        else:
            empty.append(c)
    if empty:
        log.warning("no fit sample is predicted as class(es) %s: they use the global mean", empty)
    return means


class CARef(Detector):
    """CARef: L1 distance to the predicted class's mean feature, relative to the feature's L1
    norm (higher = more OOD)."""

    def __init__(self, name: str = "ob_caref"):
        """No hyperparameters."""
        super().__init__(name)
        self.means: np.ndarray | None = None

    def fit(self, fit: Features, calib: Features | None = None) -> CARef:
        """Per predicted class, the mean penultimate feature of ``fit``."""
        logits = as_numpy(fit.logits)
        self.means = class_means(as_numpy(fit.penultimate), logits.argmax(1), logits.shape[1])
        return self

    def _diff(self, feats: Features) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Features, logits, predicted classes and the difference to the class mean."""
        if self.means is None:
            raise ConfigError(f"{self.name}: call fit before score")
        z, logits = as_numpy(feats.penultimate), as_numpy(feats.logits)
        pred = logits.argmax(1)
        return z, logits, pred, z - self.means[pred]

    def _score(self, feats: Features) -> np.ndarray:
        z, _, _, d = self._diff(feats)
        return np.abs(d).sum(1) / np.abs(z).sum(1)


class CADRef(CARef):
    """CADRef: CARef's relative error split by the sign of the predicted class's head weights,
    the logit-raising part divided by the sample's logit score, the other by its fit mean."""

    needs: ClassVar[frozenset[str]] = frozenset({"features", "model"})

    def __init__(
        self,
        name: str = "ob_cadref",
        logit_method: Literal["energy", "maxlogit", "msp", "gen"] = "energy",
    ):
        """``logit_method``: the logit score ``L`` (the authors' default: energy)."""
        super().__init__(name)
        if logit_method not in LOGIT_SCORES:
            raise ConfigError(f"{name}: logit_method={logit_method!r}; choose from {LOGIT_SCORES}")
        self.logit_method = logit_method
        self.sign: np.ndarray | None = None
        self.mean_logit_score: float | None = None

    def fit(self, fit: Features, calib: Features | None = None) -> CADRef:
        """Class means, the signs of the head's weights and the fit mean of the logit score."""
        super().fit(fit)
        w, _ = read_head(self.name, self.model, fit)
        self.sign = np.sign(w)
        self.mean_logit_score = float(logit_score(as_numpy(fit.logits), self.logit_method).mean())
        return self

    def errors(self, feats: Features) -> tuple[np.ndarray, np.ndarray]:
        """The decoupled relative errors ``E+`` and ``E-`` of each sample."""
        z, _, pred, d = self._diff(feats)
        signed = d * self.sign[pred]  # type: ignore[index]
        norm = np.abs(z).sum(1)
        return np.maximum(signed, 0).sum(1) / norm, np.maximum(-signed, 0).sum(1) / norm

    def _score(self, feats: Features) -> np.ndarray:
        e_pos, e_neg = self.errors(feats)
        ls = logit_score(as_numpy(feats.logits), self.logit_method)
        return e_pos / ls + e_neg / self.mean_logit_score  # type: ignore[operator]

    def params(self) -> dict[str, Any]:
        return {"logit_method": self.logit_method}

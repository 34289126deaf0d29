"""The detector protocol shared by native detectors and library adapters.

A detector is fitted on ID data and returns one score per sample, **higher = more OOD**.
*Feature* detectors (``needs = {"features"}``) work on cached :class:`Features` only; *model*
detectors also declare ``"model"`` and receive the frozen network through :meth:`Detector.bind`
before fitting, and read the images behind any :class:`Features` from ``feats.source`` (an
:class:`~ood_bench.data.base.ImageSet`, set by the extractor) — so both kinds share the
``fit(fit, calib)`` / ``score(feats)`` calls and the runner gives each what it declares.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from ood_bench.errors import ScoreError
from ood_bench.features import Features


def vim_principal_dim(feature_dim: int) -> int:
    """The principal-subspace dimension of ViM (Wang et al., CVPR 2022) for ``feature_dim``-d
    features, by the paper's rule: 1000 when D >= 1500 (ResNet-50, BiT: 2048), 512 when D = 768
    (ViT, DeiT, Swin), else D/2. OpenOOD's own settings follow it (ResNet-18's 512 -> 256,
    LeNet's 84 -> 42, ResNet-50 -> 1000 in its scripts; Residual's 512 is the ViT value); so do
    ViM's ``d``/``dim`` and Residual's ``dim`` here when left null."""
    d = int(feature_dim)
    return 1000 if d >= 1500 else 512 if d == 768 else max(1, d // 2)


class Detector(ABC):
    """Fit on ID features, score any features; higher score = more OOD.

    Capabilities are declared here, never probed: ``needs`` (``features``, ``model``,
    ``ood_validation``), ``gives_pvalues`` (then :meth:`pvalues`, :meth:`p_min` and
    :meth:`reference_nbytes` answer), ``calibration`` (how those p-values are calibrated),
    ``search_ood`` (the OOD set a detector that tunes on OOD data uses; None: the benchmark's
    first) and ``forward_samples`` (images the detector itself pushed through the network).
    """

    library: ClassVar[str] = "ood_bench"
    needs: ClassVar[frozenset[str]] = frozenset({"features"})
    gives_pvalues: ClassVar[bool] = False

    def __init__(self, name: str):
        """Name the detector; no model is bound until :meth:`bind`."""
        self.name = name
        self.model: nn.Module | None = None
        self.search_ood: str | None = None
        self.forward_samples = 0

    @property
    def calibration(self) -> str:
        """How the p-values are calibrated: ``none`` (no p-values), ``marginal`` (conformal on
        calib), or ``class_conditional`` / ``corrected`` (what a novelty count cannot use)."""
        return "none"

    def pvalues(self, feats: Features) -> np.ndarray:
        """Calibrated p-values (small = OOD) of detectors that declare ``gives_pvalues``."""
        raise NotImplementedError(f"{self.name} gives scores, not p-values")

    def class_p_min(self) -> dict[int, float] | None:
        """Per predicted class, the smallest p-value its calibration can give (p_min; a level
        below it never rejects a sample predicted as that class); None without calibrated
        p-values."""
        return None

    def p_min(self) -> float | None:
        """The binding smallest attainable p-value: the largest of :meth:`class_p_min` (the
        marginal 1/(n+1), corrected, for one calibration set); None without calibrated p-values."""
        per_class = self.class_p_min()
        return max(per_class.values()) if per_class else None

    def unreachable_classes(self, alpha: float) -> list[int] | None:
        """Predicted classes whose p_min exceeds ``alpha``: never rejected at that level."""
        per_class = self.class_p_min()
        if per_class is None:
            return None
        return [c for c, p in per_class.items() if p > alpha]

    def reference_nbytes(self) -> int | None:
        """Memory of the fitted references and calibration (None: not measured)."""
        return None

    def fit_reference(self, fit: Features) -> Detector:
        """Fit what the score needs from ``fit`` alone, without calibration data (a novelty
        trial recalibrates on fresh data); by default the plain :meth:`fit` without ``calib``."""
        return self.fit(fit, None)

    def bind(self, model: nn.Module, device: str | torch.device = "cpu") -> None:
        """Give a model detector the frozen network (feature detectors ignore it)."""
        self.model = model
        self.device = torch.device(device)

    def tune(self, val_id: Features, val_ood: Features) -> None:
        """Hyperparameter search on validation data; only detectors that declare
        ``"ood_validation"`` in ``needs`` are called (the runner flags their results)."""
        raise NotImplementedError(f"{self.name} does not tune on OOD data")

    @abstractmethod
    def fit(self, fit: Features, calib: Features | None = None) -> Detector:
        """Learn from ID ``fit`` features (``calib``: held-out ID data, for calibrated methods)."""

    @abstractmethod
    def _score(self, feats: Features) -> np.ndarray:
        """Raw scores, higher = more OOD."""

    def score(self, feats: Features, set_name: str = "") -> np.ndarray:
        """Scores as float64 of shape N, checked: a NaN or infinite score is an error."""
        s = np.asarray(self._score(feats), dtype=np.float64).reshape(-1)
        if s.shape[0] != len(feats):
            raise ScoreError(
                f"detector {self.name} returned {s.shape[0]} scores for "
                f"{len(feats)} samples of {set_name or 'a set'}"
            )
        bad = ~np.isfinite(s)
        if bad.any():
            raise ScoreError(
                f"detector {self.name} gave {int(bad.sum())} NaN/infinite score(s) out of {len(s)} "
                f"on {set_name or 'a set'}. Fix: check the features for NaN (a diverged "
                "checkpoint?) or the detector's hyperparameters (e.g. a temperature of 0)."
            )
        return s

    def params(self) -> dict[str, Any]:
        """Hyperparameters, for logs and results."""
        return {}

    def recorded_params(self) -> dict[str, float]:
        """Numeric hyperparameters the job's rows record as ``param_<name>`` (the value the
        detector ran with, e.g. a dimension chosen from the backbone's features by a rule);
        call after :meth:`fit`."""
        return {}

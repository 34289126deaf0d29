"""Conformal calibration of any detector's scores into p-values with a type-I error guarantee.

A detector's score (higher = more OOD) on held-out ID data (``calib``) makes its p-values valid
whatever the score (Bates et al., Ann. Statist. 2023): for an ID test sample exchangeable with
the calibration samples, ``P(p <= alpha) <= alpha``. :class:`ConformalCalibrator` holds that step
— marginal, class-conditional (Mondrian, by predicted class) and calibration-conditional
(Simes/DKW correction) — for the statistical family and for every other detector;
:class:`CalibratedDetector` puts it around a detector that gives scores only, so every job can
write decision metrics (``fpr_at_<a>``, ``tpr_at_<a>``, BH's FDR and power, ``p_min``).

The building blocks (conformal p-values, the correction, p_min) are in :mod:`ood_bench.pvalues`;
no OOD library calibrates its detectors (pytorch-ood and OpenOOD give raw scores), hence this
module.

Validity needs calibration samples the detector did not learn from. A detector that reads
``calib`` while fitting (``reads_calib``: pytorch-ood's ``fit_on=calib``, OpenOOD
postprocessors whose ``setup`` uses the validation loader) gets one half of it, and the
conformal step the other half (a seeded split; docs/statistical-detector.md#every-detector-a-test).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from ood_bench.conformal import CALIBRATIONS, FALLBACKS, ConformalCalibrator
from ood_bench.detectors.base import Detector
from ood_bench.errors import ConfigError
from ood_bench.features import Features

__all__ = [
    "CALIBRATIONS",
    "FALLBACKS",
    "CalibratedDetector",
    "ConformalCalibrator",
    "split_calib",
    "take",
    "with_calibration",
]

log = logging.getLogger(__name__)


def take(feats: Features, idx: np.ndarray) -> Features:
    """The rows ``idx`` of ``feats`` (and of its images, when it has them)."""
    ix = torch.as_tensor(np.asarray(idx, dtype=np.int64))
    source = feats.source
    if source is not None:
        source = source.subset(idx, f"{source.name}_part", {})
    return Features(
        feats.logits[ix],
        feats.penultimate[ix],
        feats.labels[ix],
        {k: v[ix] for k, v in feats.taps.items()},
        dict(feats.meta),
        source,
    )


def split_calib(calib: Features, seed: int) -> tuple[Features, Features]:
    """``calib`` cut in two disjoint halves by a seeded permutation: (for the detector, for the
    conformal step)."""
    n = len(calib)
    if n < 2:
        raise ConfigError(
            f"the calib split has {n} sample(s): a detector that learns from calib needs it cut "
            "in two (one half to fit, one to calibrate). Fix: more calibration data "
            "(benchmark.calib_fraction, calib_test_size) or calibration=none."
        )
    perm = np.random.default_rng(seed).permutation(n)
    half = n // 2
    return take(calib, np.sort(perm[:half])), take(calib, np.sort(perm[half:]))


class CalibratedDetector(Detector):
    """A score-only detector with conformal p-values on ``calib`` (see the module doc).

    Scores, hyperparameters and model needs are the wrapped detector's; ``pvalues``,
    ``p_min``, ``calibration`` come from a :class:`ConformalCalibrator`.
    """

    gives_pvalues = True

    def __init__(self, inner: Detector, calibrator: ConformalCalibrator, seed: int = 0) -> None:
        super().__init__(inner.name)
        if inner.gives_pvalues:
            raise ConfigError(f"{inner.name} gives its own p-values: it needs no wrapper")
        self.inner = inner
        self.calibrator = calibrator
        self.seed = seed
        self.library = inner.library  # type: ignore[misc]
        self.needs = inner.needs  # type: ignore[misc]
        self.calib_split_: str | None = None  # "whole" or "half" once fitted

    # the wrapped detector's side ----------------------------------------------------------
    @property
    def search_ood(self) -> str | None:  # type: ignore[override]
        return self.inner.search_ood

    @search_ood.setter
    def search_ood(self, value: str | None) -> None:
        if hasattr(self, "inner"):
            self.inner.search_ood = value

    @property
    def forward_samples(self) -> int:  # type: ignore[override]
        return self.inner.forward_samples

    @forward_samples.setter
    def forward_samples(self, value: int) -> None:
        if hasattr(self, "inner"):
            self.inner.forward_samples = value

    def bind(self, model: torch.nn.Module, device: str | torch.device = "cpu") -> None:
        """Bind the wrapped detector."""
        super().bind(model, device)
        self.inner.bind(model, device)

    def tune(self, val_id: Features, val_ood: Features) -> None:
        """The wrapped detector's search."""
        self.inner.tune(val_id, val_ood)

    def _score(self, feats: Features) -> np.ndarray:
        return self.inner.score(feats)

    def params(self) -> dict[str, Any]:
        return self.inner.params()

    def recorded_params(self) -> dict[str, float]:
        return self.inner.recorded_params()

    def reference_nbytes(self) -> int | None:
        inner = self.inner.reference_nbytes()
        return None if inner is None else inner + self.calibrator.nbytes

    # fitting and p-values -----------------------------------------------------------------
    def fit(self, fit: Features, calib: Features | None = None) -> CalibratedDetector:
        """Fit the wrapped detector, then calibrate its scores on held-out ID data (half of
        ``calib`` when the detector itself learns from ``calib``)."""
        if calib is None or len(calib) == 0:
            raise ConfigError(
                f"{self.name}: calibration={self.calibrator.calibration} needs a calib split "
                "(held-out ID data). Fix: calibration=none, or a benchmark with calib data."
            )
        if getattr(self.inner, "reads_calib", False):
            own, held = split_calib(calib, self.seed)
            self.calib_split_ = "half"
            log.info(
                "%s learns from calib: it fits on %d calib samples, the conformal step uses "
                "the other %d",
                self.name,
                len(own),
                len(held),
            )
        else:
            own, held = calib, calib
            self.calib_split_ = "whole"
        self.inner.fit(fit, own)
        self.calibrator.num_classes = max(self.calibrator.num_classes, held.logits.shape[1])
        self.calibrator.fit(self.inner.score(held, "calib"), held.predictions())
        return self

    def fit_reference(self, fit: Features) -> CalibratedDetector:
        """The wrapped detector fitted without calib (a novelty trial calibrates apart)."""
        self.inner.fit_reference(fit)
        return self

    def pvalues(self, feats: Features) -> np.ndarray:
        return self.calibrator.pvalues(self.inner.score(feats), feats.predictions())

    @property
    def calibration(self) -> str:  # type: ignore[override]
        return self.calibrator.calibration

    def class_p_min(self) -> dict[int, float] | None:
        return self.calibrator.class_p_min()


def with_calibration(
    detector: Detector, option: str, seed: int = 0, alpha: float = 0.05
) -> Detector:
    """``detector`` with conformal p-values by ``option`` (:data:`CALIBRATIONS`); unchanged when
    it gives its own p-values (the statistical family calibrates itself) or for ``none``."""
    calibrator = ConformalCalibrator.from_option(option, alpha=alpha, name=detector.name)
    if calibrator is None or detector.gives_pvalues:
        return detector
    return CalibratedDetector(detector, calibrator, seed)

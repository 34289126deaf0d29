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
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from ood_bench.detectors.base import Detector
from ood_bench.errors import ConfigError
from ood_bench.features import Features
from ood_bench.metrics import ALPHAS
from ood_bench.pvalues import (
    calibration_conditional,
    conformal_pvalues,
    min_calib_size,
    smallest_pvalue,
)

log = logging.getLogger(__name__)

# the ``calibration`` option of a job (conf/shared.yaml): how a score-only detector's scores
# become p-values
CALIBRATIONS = ("marginal", "class_conditional", "corrected", "none")
FALLBACKS = ("marginal", "refuse", "none")


def _first(items: list[Any], n: int = 5) -> str:
    """The first ``n`` items as text, with how many more there are."""
    shown = ", ".join(str(i) for i in items[:n])
    return shown + (f" and {len(items) - n} more" if len(items) > n else "")


@dataclass
class ConformalCalibrator:
    """Conformal p-values of scores (higher = more OOD) from calibration scores.

    ``class_conditional``: one calibration set per predicted class (Mondrian); when a class's
    samples cannot reach ``alpha`` (its p_min > alpha), ``mondrian_fallback`` says what happens:
    ``marginal`` calibrates every class marginally (a partial mix is not valid even marginally),
    ``refuse`` raises, ``none`` keeps the class (never rejected at alpha). ``correction``
    (``simes``/``dkw``, with ``delta``): the calibration-conditional correction. ``fix`` names
    the options a user changes, for the messages; ``verbose`` logs what the calibration reaches.
    """

    class_conditional: bool = False
    correction: Literal["simes", "dkw"] | None = None
    delta: float = 0.1
    alpha: float = 0.05
    mondrian_fallback: str = "marginal"
    num_classes: int = 0
    name: str = "detector"
    fix: str = "calibration=marginal"
    verbose: bool = True  # log what the calibration reaches (off for repeated trials)
    calib_all_: np.ndarray | None = field(default=None, init=False, repr=False)
    calib_by_class_: dict[int, np.ndarray] = field(default_factory=dict, init=False, repr=False)
    fell_back_: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        if self.mondrian_fallback not in FALLBACKS:
            raise ConfigError(
                f"mondrian_fallback={self.mondrian_fallback!r} is not one of "
                f"{', '.join(FALLBACKS)}. Fix: mondrian_fallback=marginal (the default)."
            )
        if self.correction not in (None, "simes", "dkw"):
            raise ConfigError(
                f"correction={self.correction!r} is not one of null, simes, dkw. Fix: "
                "correction=simes (Bates et al.'s recommendation) or null."
            )

    @classmethod
    def from_option(cls, option: str, **kwargs: Any) -> ConformalCalibrator | None:
        """The calibrator of a ``calibration`` option (None for ``none``); ``corrected`` is the
        marginal calibration with the Simes correction (delta 0.1)."""
        if option not in CALIBRATIONS:
            raise ConfigError(
                f"calibration={option!r} is not one of {', '.join(CALIBRATIONS)}. Fix: "
                "calibration=marginal (the default), class_conditional, corrected or none "
                "(docs/statistical-detector.md#every-detector-a-test)."
            )
        if option == "none":
            return None
        return cls(
            class_conditional=option == "class_conditional",
            correction="simes" if option == "corrected" else None,
            **kwargs,
        )

    # fitting ------------------------------------------------------------------------------
    def fit(self, scores: np.ndarray, pred: np.ndarray) -> ConformalCalibrator:
        """Store the calibration scores (per predicted class if asked); check what they reach."""
        t = np.asarray(scores, dtype=np.float64).reshape(-1)
        if len(t) == 0:
            raise ConfigError(f"{self.name}: the calib split is empty, nothing to calibrate on")
        pred = np.asarray(pred).reshape(-1)
        self.calib_all_ = np.sort(t)
        self.calib_by_class_ = {}
        self.fell_back_ = False
        if self.class_conditional:
            n_classes = max(self.num_classes, int(pred.max()) + 1 if len(pred) else 0)
            by_class = {c: np.sort(t[pred == c]) for c in range(n_classes)}
            short = [c for c, ref in by_class.items() if self.p_min_of(len(ref)) > self.alpha]
            if short:
                self._cannot_reach(short, {c: len(ref) for c, ref in by_class.items()})
            # all classes, not only the short ones: marginal p-values for some classes and
            # per-class ones for the others need not be valid even marginally
            self.fell_back_ = bool(short) and self.mondrian_fallback == "marginal"
            if not self.fell_back_:
                self.calib_by_class_ = by_class
        if not self.verbose:
            return self
        if self.calibration != "class_conditional" and self.p_min_of(len(t)) > self.alpha:
            log.warning(
                "%s: %d calib samples cannot reach alpha=%g (p_min %.3g; needs >= %d): nothing "
                "is ever rejected at that level. Fix: more calibration data or a larger alpha.",
                self.name,
                len(t),
                self.alpha,
                self.p_min_of(len(t)),
                min_calib_size(self.alpha, self.correction, self.delta),
            )
        self._log_p_min()
        return self

    def p_min_of(self, n: int) -> float:
        """Smallest p-value n calibration scores give, with this calibrator's correction."""
        return smallest_pvalue(n, self.correction, self.delta)

    def _cannot_reach(self, short: list[int], counts: dict[int, int]) -> None:
        """Classes ``short`` cannot reach alpha: raise (``refuse``) or warn what is done."""
        need = min_calib_size(self.alpha, self.correction, self.delta)
        shown = _first(
            [
                f"class {k} ({counts[k]} calib samples, p_min {self.p_min_of(counts[k]):.3g})"
                for k in short
            ]
        )
        rule = "1/(n+1)" + (f" after the {self.correction} correction" if self.correction else "")
        cause = (
            f"{self.name}: class-conditional calibration cannot reach alpha={self.alpha:g} for "
            f"{shown}: the smallest p-value of a class with n calib samples is {rule}, so a "
            f"class needs >= {need} calib samples predicted as it"
        )
        if self.mondrian_fallback == "refuse":
            raise ConfigError(
                f"{cause}, or its samples can never be rejected. Fix: more calibration data "
                "(benchmark.calib_fraction; benchmark.fractions.calib for the embedded digits "
                f"benchmarks), a larger alpha, {self.fix}, or mondrian_fallback=marginal (see "
                "docs/statistical-detector.md)."
            )
        if self.mondrian_fallback == "marginal":
            log.warning(
                "%s. Falling back to marginal calibration for all %d classes "
                "(mondrian_fallback=marginal): the per-class guarantee is lost, the marginal one "
                "holds.",
                cause,
                len(counts),
            )
        else:
            log.warning(
                "%s. Their samples are never rejected at alpha=%g (mondrian_fallback=none).",
                cause,
                self.alpha,
            )

    def _log_p_min(self) -> None:
        """Log p_min of the calibration in use and the classes each reported level misses."""
        per_class = self.class_p_min()
        if not per_class:
            return
        worst = max(per_class, key=per_class.__getitem__)
        levels = sorted({*ALPHAS, self.alpha})
        missed = {a: bad for a in levels if (bad := self.unreachable_classes(a) or [])}
        log.info(
            "%s: %s calibration, p_min %.4g%s%s",
            self.name,
            self.calibration.replace("_", "-"),
            per_class[worst],
            f" (class {worst})" if self.calibration == "class_conditional" else "",
            "".join(
                f"; alpha={a:g} never rejects {len(bad)} class(es): {_first(bad)}"
                for a, bad in missed.items()
            ),
        )

    # p-values -----------------------------------------------------------------------------
    @property
    def fitted(self) -> bool:
        """Whether :meth:`fit` has run."""
        return self.calib_all_ is not None

    def _check_fitted(self) -> np.ndarray:
        if self.calib_all_ is None:
            raise RuntimeError(f"{self.name}: calibrate (fit) before asking for p-values")
        return self.calib_all_

    def pvalues(self, scores: np.ndarray, pred: np.ndarray) -> np.ndarray:
        """Conformal p-values of ``scores`` (small = OOD), per predicted class when
        class-conditional."""
        calib_all = self._check_fitted()
        t = np.asarray(scores, dtype=np.float64).reshape(-1)
        if self.calibration != "class_conditional":
            return self._conformal(calib_all, t)
        pred = np.asarray(pred).reshape(-1)
        p = np.ones(len(t))
        for cls, ref in self.calib_by_class_.items():
            m = pred == cls
            if m.any() and len(ref):
                p[m] = self._conformal(ref, t[m])
        return p

    def _conformal(self, calib_sorted: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Conformal p-values against sorted calibration scores, corrected when asked."""
        p = conformal_pvalues(calib_sorted, t)
        if self.correction:
            p = calibration_conditional(p, len(calib_sorted), self.delta, self.correction)
        return p

    @property
    def calibration(self) -> str:
        """``class_conditional``, ``corrected`` or ``marginal`` (after a fallback: one of the
        last two)."""
        if self.class_conditional and not self.fell_back_:
            return "class_conditional"
        return "corrected" if self.correction else "marginal"

    def class_p_min(self) -> dict[int, float] | None:
        """Per predicted class, the smallest p-value of the calibration in use (None before
        :meth:`fit`)."""
        if self.calib_all_ is None:
            return None
        if self.calibration == "class_conditional":
            return {c: self.p_min_of(len(ref)) for c, ref in self.calib_by_class_.items()}
        return dict.fromkeys(range(self.num_classes), self.p_min_of(len(self.calib_all_)))

    def unreachable_classes(self, alpha: float) -> list[int] | None:
        """Predicted classes whose p_min exceeds ``alpha``."""
        per_class = self.class_p_min()
        return None if per_class is None else [c for c, p in per_class.items() if p > alpha]

    @property
    def nbytes(self) -> int:
        """Memory of the stored calibration scores."""
        return 0 if self.calib_all_ is None else int(self.calib_all_.nbytes)


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

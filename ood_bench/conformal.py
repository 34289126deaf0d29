"""The conformal step of :mod:`ood_bench.calibration`: :class:`ConformalCalibrator` turns
held-out ID scores into p-values with ``P(p <= alpha) <= alpha`` — marginal, class-conditional
(Mondrian, by predicted class) or calibration-conditional (Simes/DKW correction) — for the
statistical family and, through :class:`~ood_bench.calibration.CalibratedDetector`, for every
other detector (split from calibration.py to keep modules under 400 lines)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from ood_bench.errors import ConfigError
from ood_bench.metrics import ALPHAS
from ood_bench.pvalues import (
    calibration_conditional,
    conformal_pvalues,
    min_calib_size,
    smallest_pvalue,
)

log = logging.getLogger("ood_bench.calibration")  # the messages keep their logger

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
            self._fit_classes(t, pred)
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

    def _fit_classes(self, t: np.ndarray, pred: np.ndarray) -> None:
        """The per-class references (Mondrian), or the marginal fallback when a class's
        reference cannot reach alpha and the fallback says so."""
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

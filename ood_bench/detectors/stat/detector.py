"""The statistical detector: per-layer statistics, combined across layers, calibrated.

See :mod:`ood_bench.detectors.stat` for the method. The options are a :class:`StatOptions`;
the per-layer statistics come from the registry of :mod:`.statistics`; fitted state follows
scikit-learn's convention (trailing underscore, declared in ``__init__``).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from ood_bench.detectors.base import Detector
from ood_bench.detectors.stat.layers import first_items, layer_array, layer_keys
from ood_bench.detectors.stat.options import StatOptions
from ood_bench.detectors.stat.statistics import P_FLOOR, LayerStatistic, statistic_class
from ood_bench.errors import ConfigError
from ood_bench.features import Features
from ood_bench.metrics import ALPHAS
from ood_bench.pvalues import (
    EmpiricalReference,
    calibration_conditional,
    combine_pvalues,
    conformal_pvalues,
    min_calib_size,
    smallest_pvalue,
)

log = logging.getLogger(__name__)

FIT_SIZE_FIX = "benchmark.fit_max; benchmark.fractions.fit for the embedded digits benchmarks"


class StatDetector(Detector):
    """Configurable statistical detector (see the package docstring); presets in conf/detector/.

    Keyword arguments are the fields of :class:`StatOptions` (kept in :attr:`options`).
    """

    gives_pvalues = True

    def __init__(self, name: str, **options: Any):
        """Validate the options (:meth:`StatOptions.from_mapping`); nothing is fitted yet."""
        super().__init__(name)
        self.options = StatOptions.from_mapping(options)
        self.fell_back = False  # set by calibrate: class-conditional replaced by marginal
        # fitted state: fit_reference sets the first four, calibrate_statistic the last two
        self.keys_: list[str] = []
        self.statistics_: list[LayerStatistic] = []
        self.num_classes_: int | None = None
        self.step_refs_: list[EmpiricalReference] = []
        self.calib_all_: np.ndarray | None = None
        self.calib_by_class_: dict[int, np.ndarray] = {}

    def with_options(self, **changes: Any) -> StatDetector:
        """A new, unfitted detector of the same name with ``changes`` to the options
        (validated like the preset's own)."""
        return StatDetector(self.name, **{**self.options.as_dict(), **changes})

    @property
    def alpha(self) -> float:
        """The decision level: :meth:`decide`'s default, and what ``mondrian_fallback`` checks."""
        return float(self.options.alpha)

    # fitting ------------------------------------------------------------------------------
    def fit(self, fit: Features, calib: Features | None = None) -> StatDetector:
        """Build the layer references on ``fit``, then calibrate on ``calib``."""
        self.fit_reference(fit)
        if self.options.calibrate:
            if calib is None or len(calib) == 0:
                raise ConfigError(f"{self.name} needs a calib split for conformal calibration")
            self.calibrate(calib)
        return self

    def _new_statistics(self) -> list[LayerStatistic]:
        """Unfitted: the layer statistic and, with ``output_test``, the output test."""
        o = self.options
        out = [statistic_class(o.statistic).from_options(o)]
        if o.output_test:
            out.append(statistic_class(o.output_test, output=True).from_options(o))
        return out

    def check_fit_size(self, pred: np.ndarray, num_classes: int) -> None:
        """A ConfigError when the fit set (predicted classes ``pred``) is smaller than a
        statistic needs, overall or for a predicted class (:meth:`LayerStatistic.min_fit`)."""
        n, counts = len(pred), np.bincount(pred, minlength=num_classes)
        for stat in self._new_statistics():
            if n < (need := stat.min_fit()):
                k_fix = f", or detector.k <= {n - 1}" if stat.name == "knn" and n > 1 else ""
                raise ConfigError(
                    f"{self.name}: the fit set has {n} sample(s), but the {stat.name} statistic "
                    f"needs at least {need}: {stat.min_fit_why()}. Fix: a larger fit set "
                    f"({FIT_SIZE_FIX}){k_fix}."
                )
            per = stat.min_fit_per_class()
            short = [c for c in range(num_classes) if 0 < counts[c] < per]
            if short:
                shown = first_items([f"class {c} ({counts[c]})" for c in short])
                raise ConfigError(
                    f"{self.name}: {len(short)} predicted class(es) have fewer than {per} fit "
                    f"samples ({shown}), but the {stat.name} statistic needs at least {per} per "
                    f"class: {stat.min_fit_per_class_why()}. Fix: a larger fit set "
                    f"({FIT_SIZE_FIX}), or detector.center=global."
                )

    def fit_reference(self, fit: Features) -> StatDetector:
        """Fit one layer statistic per selected layer on ``fit`` (and, in ``successive`` mode,
        the references of the running statistic); no calibration."""
        o = self.options
        keys = layer_keys(fit, o.reduction, list(o.layers or []), o.include_logits)
        self.num_classes_ = fit.logits.shape[1]
        pred = fit.predictions()
        self.check_fit_size(pred, self.num_classes_)
        self.keys_ = keys
        self.statistics_ = [self._new_statistics()[0] for _ in keys]
        if o.output_test:  # one more column: the output layer's own statistic
            self.keys_.append("logits")
            self.statistics_.append(self._new_statistics()[-1])
        for key, stat in zip(self.keys_, self.statistics_, strict=True):
            stat.fit(layer_array(fit, key), pred, self.num_classes_)
        self.step_refs_ = self._fit_step_refs(fit) if o.across_mode == "successive" else []
        log.info(
            "%s: %d layer tests on %s (%s%s)",
            self.name,
            len(self.keys_),
            self.keys_,
            o.statistic,
            f"; output test {o.output_test} on logits" if o.output_test else "",
        )
        return self

    def _fit_step_refs(self, fit: Features) -> list[EmpiricalReference]:
        """Reference of the running statistic at each step of ``successive`` mode, from the
        fit samples themselves."""
        refs: list[EmpiricalReference] = []
        p_layers = self.layer_pvalues(fit)
        running = p_layers[:, 0]
        for j in range(1, p_layers.shape[1]):
            t = self._stat(np.stack([running, p_layers[:, j]], axis=1))
            ref = EmpiricalReference(t)
            refs.append(ref)
            running = np.clip(ref.pvalues(t, "right"), P_FLOOR, 1 - 1 / (ref.n + 1))
        return refs

    def calibrate(self, calib: Features) -> StatDetector:
        """Store the combined statistic of held-out ID samples (per predicted class if asked)."""
        return self.calibrate_statistic(self.statistic(calib), calib.predictions())

    def calibrate_statistic(self, t: np.ndarray, pred: np.ndarray) -> StatDetector:
        """:meth:`calibrate` from precomputed statistics (the statistic does not depend on the
        calibration, so redraws of the calib split need not recompute it). Class-conditional
        calibration checks that every class can reach ``alpha`` (see ``mondrian_fallback``)."""
        self.calib_all_ = np.sort(t)
        self.calib_by_class_ = {}
        self.fell_back = False
        if self.options.class_conditional:
            self._calibrate_by_class(t, pred)
        if self.calibration != "class_conditional" and self._p_min_of(len(t)) > self.alpha:
            log.warning(
                "%s: %d calib samples cannot reach alpha=%g (p_min %.3g; needs >= %d): nothing "
                "is ever rejected at that level. Fix: more calibration data or a larger alpha.",
                self.name,
                len(t),
                self.alpha,
                self._p_min_of(len(t)),
                min_calib_size(self.alpha, self.options.correction, self.options.delta),
            )
        self._log_p_min()
        return self

    def _calibrate_by_class(self, t: np.ndarray, pred: np.ndarray) -> None:
        """Class-conditional calibration, or the fallback when a class cannot reach alpha."""
        if self.num_classes_ is None:
            raise RuntimeError(f"{self.name} is not fitted: call fit_reference first")
        by_class = {c: np.sort(t[pred == c]) for c in range(self.num_classes_)}
        short = [c for c, ref in by_class.items() if self._p_min_of(len(ref)) > self.alpha]
        if short:
            self._cannot_reach(short, {c: len(ref) for c, ref in by_class.items()})
        # all classes, not only the short ones: marginal p-values for some classes and
        # per-class ones for the others need not be valid even marginally (docs page)
        self.fell_back = bool(short) and self.options.mondrian_fallback == "marginal"
        if not self.fell_back:
            self.calib_by_class_ = by_class

    def _p_min_of(self, n: int) -> float:
        """Smallest p-value n calibration scores give, with this detector's correction."""
        return smallest_pvalue(n, self.options.correction, self.options.delta)

    def _cannot_reach(self, short: list[int], counts: dict[int, int]) -> None:
        """Classes ``short`` cannot reach alpha: raise (``refuse``) or warn what is done."""
        o, alpha = self.options, self.alpha
        need = min_calib_size(alpha, o.correction, o.delta)
        shown = first_items(
            [
                f"class {k} ({counts[k]} calib samples, p_min {self._p_min_of(counts[k]):.3g})"
                for k in short
            ]
        )
        rule = "1/(n+1)" + (f" after the {o.correction} correction" if o.correction else "")
        cause = (
            f"{self.name}: class-conditional calibration cannot reach alpha={alpha:g} for {shown}: "
            f"the smallest p-value of a class with n calib samples is {rule}, so a class needs "
            f">= {need} calib samples predicted as it"
        )
        if o.mondrian_fallback == "refuse":
            raise ConfigError(
                f"{cause}, or its samples can never be rejected. Fix: more calibration data "
                "(benchmark.calib_fraction; benchmark.fractions.calib for the embedded digits "
                "benchmarks), a larger detector.alpha, detector.class_conditional=false, or "
                "detector.mondrian_fallback=marginal (see docs/statistical-detector.md)."
            )
        if o.mondrian_fallback == "marginal":
            log.warning(
                "%s. Falling back to marginal calibration for all %d classes "
                "(mondrian_fallback=marginal): the per-class guarantee is lost, the marginal one "
                "holds.",
                cause,
                self.num_classes_,
            )
        else:
            log.warning(
                "%s. Their samples are never rejected at alpha=%g (mondrian_fallback=none).",
                cause,
                alpha,
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
                f"; alpha={a:g} never rejects {len(bad)} class(es): {first_items(bad)}"
                for a, bad in missed.items()
            ),
        )

    # scoring ------------------------------------------------------------------------------
    def layer_pvalues(self, feats: Features) -> np.ndarray:
        """N × L matrix of per-layer p-values (columns in :attr:`keys_` order)."""
        pred = feats.predictions()
        cols = [
            np.clip(s.pvalues(layer_array(feats, k), pred), P_FLOOR, s.p_ceil)
            for k, s in zip(self.keys_, self.statistics_, strict=True)
        ]
        return np.stack(cols, axis=1)

    def _stat(self, p: np.ndarray) -> np.ndarray:
        """Across-layer statistic, higher = more OOD: −log of the combined p-value."""
        return -np.log(np.clip(combine_pvalues(p, self.options.across, axis=1), P_FLOOR, 1.0))

    def statistic(self, feats: Features) -> np.ndarray:
        """The combined, uncalibrated statistic (higher = more OOD)."""
        p = self.layer_pvalues(feats)
        if self.options.across_mode == "at_once" or p.shape[1] == 1:
            return self._stat(p)
        running = p[:, 0]
        t = -np.log(running)
        for j, ref in enumerate(self.step_refs_, start=1):
            t = self._stat(np.stack([running, p[:, j]], axis=1))
            running = np.clip(ref.pvalues(t, "right"), P_FLOOR, 1 - 1 / (ref.n + 1))
        return t

    def _score(self, feats: Features) -> np.ndarray:
        """The combined statistic (higher = more OOD)."""
        return self.statistic(feats)

    def pvalues(self, feats: Features) -> np.ndarray:
        """Calibrated p-values: P(ID sample's statistic ≥ this one); small = OOD."""
        return self.pvalues_of_statistic(self.statistic(feats), feats.predictions())

    def pvalues_of_statistic(self, t: np.ndarray, pred: np.ndarray) -> np.ndarray:
        """:meth:`pvalues` from precomputed statistics and predicted classes."""
        if not self.options.calibrate:
            return np.clip(np.exp(-t), 0.0, 1.0)  # the combiner's own p-value (no guarantee)
        if self.calib_all_ is None:
            raise RuntimeError(f"{self.name} is not calibrated: call fit or calibrate first")
        if not self.options.class_conditional or self.fell_back:
            return self._conformal(self.calib_all_, t)
        p = np.ones(len(t))
        for cls, calib in self.calib_by_class_.items():
            m = pred == cls
            if m.any() and len(calib):
                p[m] = self._conformal(calib, t[m])
        return p

    def _conformal(self, calib_sorted: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Conformal p-values of ``t`` against sorted calibration statistics, corrected when
        ``correction`` is set."""
        p = conformal_pvalues(calib_sorted, t)
        if self.options.correction:
            p = calibration_conditional(
                p, len(calib_sorted), self.options.delta, self.options.correction
            )
        return p

    def decide(self, feats: Features, alpha: float | None = None) -> np.ndarray:
        """True where the sample is declared OOD at level ``alpha``."""
        return self.pvalues(feats) <= (self.alpha if alpha is None else alpha)

    def params(self) -> dict[str, Any]:
        """The detector's options as plain values."""
        return self.options.as_dict()

    @property
    def calibration(self) -> str:
        """The calibration in use: ``marginal`` conformal p-values, or the class-conditional /
        corrected variant (``marginal``/``corrected`` after a ``mondrian_fallback``)."""
        o = self.options
        if not o.calibrate:
            return "none"
        if o.class_conditional and not self.fell_back:
            return "class_conditional"
        return "corrected" if o.correction else "marginal"

    def class_p_min(self) -> dict[int, float] | None:
        """Per predicted class, the smallest p-value of the calibration in use: 1/(n_c+1) per
        class (class-conditional), 1/(n+1) for all (marginal), corrected when ``correction`` is
        set; None before calibration or without it."""
        if not self.options.calibrate or self.calib_all_ is None:
            return None
        if self.calibration == "class_conditional":
            return {c: self._p_min_of(len(ref)) for c, ref in self.calib_by_class_.items()}
        return dict.fromkeys(range(self.num_classes_ or 0), self._p_min_of(len(self.calib_all_)))

    def reference_nbytes(self) -> int:
        """Memory held by the fitted references and calibration scores."""
        calib = 0 if self.calib_all_ is None else self.calib_all_.nbytes
        refs = sum(s.nbytes for s in self.statistics_) + sum(r.nbytes for r in self.step_refs_)
        return refs + calib

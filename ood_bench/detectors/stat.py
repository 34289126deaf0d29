"""The lab's statistical detector: hypothesis tests on a frozen network's layer activations.

For each tapped layer the pooled activations (channel-wise max or mean over space) give a layer
p-value, either

- *channel-wise*: an empirical p-value per channel against the ``fit`` reference, combined within
  the layer (Simes, Fisher, Cauchy, ...) — MaSF, Haroush et al. ICLR 2022; or
- *vector*: a distance of the layer vector to an ID reference (Euclidean to the predicted class
  mean as in DROOD, Kibinda-Moukengue et al. 2025; Mahalanobis, cosine, k-NN), turned into an
  empirical p-value against the distances of the ``fit`` samples.

Layer p-values are combined across layers (at once, or successively as in DROOD, re-referencing
the running statistic at each step), and the combined statistic is calibrated on the held-out
``calib`` split into a conformal p-value: marginal type-I error ≤ alpha whatever the dependence
between layers (Bates et al., Ann. Statist. 2023). Optional: calibration-conditional correction,
class-conditional (Mondrian) calibration.

n calibration scores cannot give a p-value below p_min = 1/(n+1) (corrected when ``correction``
is set): a class with too few calibration samples can never be rejected at alpha < p_min, a
vacuous guarantee. ``mondrian_fallback`` says what class-conditional calibration does then.

``score`` is the combined statistic (higher = more OOD, continuous, for AUROC); ``pvalues`` the
calibrated p-values (decide OOD when p ≤ alpha).
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import numpy as np

from ood_bench.detectors.base import Detector
from ood_bench.errors import ConfigError
from ood_bench.features import Features
from ood_bench.metrics import ALPHAS
from ood_bench.pvalues import (
    COMBINERS,
    TAILS,
    EmpiricalReference,
    calibration_conditional,
    combine_pvalues,
    conformal_pvalues,
    min_calib_size,
    smallest_pvalue,
)

log = logging.getLogger(__name__)

STATISTICS = ("channel", "euclidean", "mahalanobis", "cosine", "knn")
# Output-layer statistics on the logits, higher = more OOD: the negative free energy
# (-logsumexp, Liu et al. 2020) and the negative maximum logit (Hendrycks et al. 2022).
OUTPUT_TESTS = ("energy", "maxlogit")
P_FLOOR = 1e-300  # keeps -log(p) finite
MIN_CLASS_REF = 20  # fewer fit samples predicted as a class: that class uses the pooled reference
FALLBACKS = ("marginal", "refuse", "none")


def _first(items: list, k: int = 10) -> str:
    """The first ``k`` items, comma-separated, and how many more there are."""
    text = ", ".join(map(str, items[:k]))
    return text + (f" and {len(items) - k} more" if len(items) > k else "")


def layer_keys(
    feats: Features, reduction: str, layers: list[str] | None, include_logits: bool = False
) -> list[str]:
    """The feature keys to test, in network order: ``<layer>.<reduction>`` or a flat ``<layer>``."""
    found: dict[str, str] = {}
    for key in feats.taps:
        base, _, red = key.rpartition(".")
        if red in ("max", "mean") and base:
            if red == reduction:
                found[base] = key
        else:
            found.setdefault(key, key)
    if layers:
        missing = [name for name in layers if name not in found]
        if missing:
            raise ConfigError(f"layers {missing} are not tapped; tapped layers: {list(found)}")
        keys = [found[name] for name in layers]
    else:
        keys = list(found.values())
    if include_logits:
        keys.append("logits")
    if not keys:
        raise ConfigError("no tapped layers to test: the backbone declares no taps")
    return keys


def _get(feats: Features, key: str) -> np.ndarray:
    """Logits or cached tap ``key`` as a float64 numpy array."""
    t = feats.logits if key == "logits" else feats.taps[key]
    return t.detach().cpu().double().numpy()


class _LayerTest:
    """One layer's test: fitted on the ID reference, returns a p-value per sample."""

    def __init__(
        self,
        statistic: str,
        tail: str,
        within: str,
        k: int,
        reference: str = "pooled",
        center: str = "class",
    ):
        """``statistic``, ``tail``, ``within`` and ``k`` as in :class:`StatDetector`;
        ``reference``: one pooled channel reference or one per predicted class; ``center``:
        distances to the predicted class's mean or to the global mean (vector statistics)."""
        self.statistic, self.tail, self.within, self.k = statistic, tail, within, k
        self.reference, self.center = reference, center

    # distances ----------------------------------------------------------------------------
    def _distance(self, z: np.ndarray, pred: np.ndarray, exclude_self: bool = False) -> np.ndarray:
        """Each sample's distance to the ID reference: to its predicted class's mean (euclidean,
        cosine, mahalanobis) or to its k-th nearest normalised fit feature (knn;
        ``exclude_self`` skips the sample itself); for an output test on the logits, the
        energy or the negative maximum logit."""
        if self.statistic == "energy":
            from scipy.special import logsumexp

            return -logsumexp(z, axis=1)
        if self.statistic == "maxlogit":
            return -z.max(axis=1)
        if self.statistic == "euclidean":
            return np.linalg.norm(z - self.means[pred], axis=1)
        if self.statistic == "cosine":
            zn = z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
            mn = self.means / np.maximum(np.linalg.norm(self.means, axis=1, keepdims=True), 1e-12)
            return 1.0 - np.einsum("nd,nd->n", zn, mn[pred])
        if self.statistic == "mahalanobis":
            diff = z - self.means[pred]
            return np.sqrt(np.maximum(((diff @ self.precision) * diff).sum(1), 0))
        # knn: distance to the k-th nearest normalised fit feature
        zn = z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
        dist, _ = self.nn.kneighbors(zn, n_neighbors=self.k + int(exclude_self))
        return dist[:, -1]

    def fit(self, z: np.ndarray, pred: np.ndarray, num_classes: int) -> None:
        """Fit on ID features ``z`` with predicted classes ``pred``: channel-wise empirical
        references, or the distance model and the reference of the fit samples' distances."""
        if self.statistic == "channel":
            self.ref = EmpiricalReference(z)
            if self.reference == "class":  # one reference per predicted class (pooled fallback)
                self.class_refs = {
                    c: EmpiricalReference(z[pred == c])
                    for c in range(num_classes)
                    if (pred == c).sum() >= MIN_CLASS_REF
                }
            return
        if self.statistic == "knn":
            from sklearn.neighbors import NearestNeighbors

            zn = z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
            self.nn = NearestNeighbors(n_neighbors=self.k + 1).fit(zn)
            self.zn_bytes = zn.nbytes
        elif self.statistic not in OUTPUT_TESTS:
            # class means of the predicted classes (DROOD): the test side has no labels either
            self.means = np.stack(
                [
                    z[pred == c].mean(0)
                    if (pred == c).any() and self.center == "class"
                    else z.mean(0)
                    for c in range(num_classes)
                ]
            )
            if self.statistic == "mahalanobis":
                from sklearn.covariance import LedoitWolf

                centred = z - self.means[pred]
                self.precision = LedoitWolf(assume_centered=True).fit(centred).get_precision()
        self.ref = EmpiricalReference(self._distance(z, pred, exclude_self=True))

    def pvalues(self, z: np.ndarray, pred: np.ndarray) -> np.ndarray:
        """One p-value per sample: channel p-values combined with ``within``, or the right-tail
        p-value of its distance."""
        if self.statistic == "channel":
            p = self._channel_pvalues(z, pred)
            return combine_pvalues(p, self.within, axis=1)
        return self.ref.pvalues(self._distance(z, pred), "right")  # far from ID = large

    def _channel_pvalues(self, z: np.ndarray, pred: np.ndarray) -> np.ndarray:
        """N×C clipped channel-wise p-values, against the predicted class's reference when
        ``reference=class`` (the pooled one for classes without enough samples)."""
        if self.reference != "class":
            return np.clip(self.ref.pvalues(z, self.tail), P_FLOOR, self.p_ceil)
        p = np.empty_like(z, dtype=np.float64)
        for c in np.unique(pred):
            m = pred == c
            ref = self.class_refs.get(int(c), self.ref)
            p[m] = np.clip(ref.pvalues(z[m], self.tail), P_FLOOR, 1 - 1 / (ref.n + 1))
        return p

    @property
    def p_ceil(self) -> float:
        """Largest p-value passed to a combiner: 1 − 1/(n+1), the top of the empirical grid
        below 1. An empirical p-value of exactly 1 (a tie with the whole reference) would send
        Cauchy's tan((0.5 − p)π) and Stouffer's Φ⁻¹(1 − p) to −∞ and mask every other channel.
        Clipping only changes the statistic; the conformal step keeps the final p-value valid."""
        return 1.0 - 1.0 / (self.ref.n + 1)

    @property
    def nbytes(self) -> int:
        """Memory held by the fitted reference."""
        extra = sum(getattr(self, a).nbytes for a in ("means", "precision") if hasattr(self, a))
        extra += sum(r.nbytes for r in getattr(self, "class_refs", {}).values())
        return self.ref.nbytes + extra + getattr(self, "zn_bytes", 0)


class StatDetector(Detector):
    """Configurable statistical detector (see the module docstring); presets in conf/detector/.

    Parameters: ``reduction`` (``max``/``mean`` over space), ``statistic`` (one of
    :data:`STATISTICS`), ``tail`` (channel-wise test: ``right``/``left``/``two-sided``), ``within``
    (combination inside a layer), ``across`` (between layers) and ``across_mode``
    (``at_once``/``successive``), ``layers`` (tap names; ``None`` = all discovered taps),
    ``include_logits`` (the logits as one more layer, tested with ``statistic``),
    ``output_test`` (``energy``/``maxlogit``: one more p-value from an output-layer statistic of
    the logits, right tail against the fit samples'), ``calibrate`` (conformal step on
    ``calib``; only switch off to show why it is needed), ``class_conditional`` (Mondrian
    calibration per predicted class),
    ``correction`` (``None``/``simes``/``dkw``, calibration-conditional, with ``delta``), ``k``
    (k-NN), ``center`` (vector statistics: distance to the predicted ``class``'s mean, or to
    the ``global`` mean), ``alpha`` (the default decision level), ``mondrian_fallback``
    (when a predicted class's calibration samples cannot reach ``alpha``, i.e. its
    p_min > alpha: ``marginal`` calibrates every class marginally, ``refuse`` raises a
    ConfigError, ``none`` keeps the class-conditional p-values and warns).
    """

    gives_pvalues = True

    def __init__(
        self,
        name: str,
        reduction: Literal["max", "mean"] = "max",
        statistic: str = "channel",
        tail: str = "two-sided",
        within: str = "simes",
        across: str = "fisher",
        across_mode: Literal["at_once", "successive"] = "at_once",
        layers: list[str] | None = None,
        include_logits: bool = False,
        output_test: str | None = None,
        calibrate: bool = True,
        class_conditional: bool = False,
        correction: str | None = None,
        delta: float = 0.1,
        k: int = 10,
        alpha: float = 0.05,
        reference: Literal["pooled", "class"] = "pooled",
        center: Literal["class", "global"] = "class",
        mondrian_fallback: Literal["marginal", "refuse", "none"] = "marginal",
    ):
        """Validate the options and keep them in ``cfg``."""
        super().__init__(name)
        checks = {
            "reduction": (reduction, ("max", "mean")),
            "statistic": (statistic, STATISTICS),
            "tail": (tail, TAILS),
            "within": (within, COMBINERS),
            "across": (across, COMBINERS),
            "across_mode": (across_mode, ("at_once", "successive")),
            "correction": (correction, (None, "simes", "dkw")),
            "reference": (reference, ("pooled", "class")),
            "center": (center, ("class", "global")),
            "output_test": (output_test, (None, *OUTPUT_TESTS)),
            "mondrian_fallback": (mondrian_fallback, FALLBACKS),
        }
        for key, (value, allowed) in checks.items():
            if value not in allowed:
                raise ConfigError(f"{name}: {key}={value!r} is not one of {list(allowed)}")
        if not 0 < alpha < 1:
            raise ConfigError(f"{name}: alpha={alpha!r} must lie in (0, 1)")
        self.cfg = {
            "reduction": reduction,
            "statistic": statistic,
            "tail": tail,
            "within": within,
            "across": across,
            "across_mode": across_mode,
            "layers": list(layers) if layers else None,
            "include_logits": include_logits,
            "output_test": output_test,
            "calibrate": calibrate,
            "class_conditional": class_conditional,
            "correction": correction,
            "delta": delta,
            "k": k,
            "alpha": alpha,
            "reference": reference,
            "center": center,
            "mondrian_fallback": mondrian_fallback,
        }
        self.fell_back = False  # set by calibrate: class-conditional replaced by marginal

    @property
    def alpha(self) -> float:
        """The decision level: :meth:`decide`'s default, and what ``mondrian_fallback`` checks."""
        return float(self.cfg["alpha"])

    # fitting ------------------------------------------------------------------------------
    def fit(self, fit: Features, calib: Features | None = None) -> StatDetector:
        """Build the layer references on ``fit``, then calibrate on ``calib``."""
        self.fit_reference(fit)
        if self.cfg["calibrate"]:
            if calib is None or len(calib) == 0:
                raise ConfigError(f"{self.name} needs a calib split for conformal calibration")
            self.calibrate(calib)
        return self

    def fit_reference(self, fit: Features) -> StatDetector:
        """Fit one layer test per selected layer on ``fit`` (and, in ``successive`` mode, the
        references of the running statistic); no calibration."""
        c = self.cfg
        self.keys = layer_keys(fit, c["reduction"], c["layers"], c["include_logits"])
        self.num_classes = fit.logits.shape[1]
        pred = fit.predictions()
        self.tests = []
        for key in self.keys:
            test = _LayerTest(
                c["statistic"], c["tail"], c["within"], c["k"], c["reference"], c["center"]
            )
            test.fit(_get(fit, key), pred, self.num_classes)
            self.tests.append(test)
        if c["output_test"]:  # one more column: the output layer's own statistic
            test = _LayerTest(c["output_test"], "right", c["within"], c["k"])
            test.fit(_get(fit, "logits"), pred, self.num_classes)
            self.keys.append("logits")
            self.tests.append(test)
        if c["across_mode"] == "successive":
            # reference of the running statistic at each step, from the fit samples themselves
            self.step_refs: list[EmpiricalReference] = []
            p_layers = self.layer_pvalues(fit)
            running = p_layers[:, 0]
            for j in range(1, p_layers.shape[1]):
                t = self._stat(np.stack([running, p_layers[:, j]], axis=1))
                ref = EmpiricalReference(t)
                self.step_refs.append(ref)
                running = np.clip(ref.pvalues(t, "right"), P_FLOOR, 1 - 1 / (ref.n + 1))
        log.info(
            "%s: %d layer tests on %s (%s%s)",
            self.name,
            len(self.keys),
            self.keys,
            c["statistic"],
            f"; output test {c['output_test']} on logits" if c["output_test"] else "",
        )
        return self

    def calibrate(self, calib: Features) -> StatDetector:
        """Store the combined statistic of held-out ID samples (per predicted class if asked)."""
        return self.calibrate_statistic(self.statistic(calib), calib.predictions())

    def calibrate_statistic(self, t: np.ndarray, pred: np.ndarray) -> StatDetector:
        """:meth:`calibrate` from precomputed statistics (the statistic does not depend on the
        calibration, so redraws of the calib split need not recompute it). Class-conditional
        calibration checks that every class can reach ``alpha`` (see ``mondrian_fallback``)."""
        self.calib_all = np.sort(t)
        self.calib_by_class: dict[int, np.ndarray] = {}
        self.fell_back = False
        if self.cfg["class_conditional"]:
            by_class = {c: np.sort(t[pred == c]) for c in range(self.num_classes)}
            short = [c for c, ref in by_class.items() if self._p_min_of(len(ref)) > self.alpha]
            if short:
                self._cannot_reach(short, {c: len(ref) for c, ref in by_class.items()})
            # all classes, not only the short ones: marginal p-values for some classes and
            # per-class ones for the others need not be valid even marginally (docs page)
            self.fell_back = bool(short) and self.cfg["mondrian_fallback"] == "marginal"
            if not self.fell_back:
                self.calib_by_class = by_class
        if self.calibration != "class_conditional" and self._p_min_of(len(t)) > self.alpha:
            log.warning(
                "%s: %d calib samples cannot reach alpha=%g (p_min %.3g; needs >= %d): nothing "
                "is ever rejected at that level. Fix: more calibration data or a larger alpha.",
                self.name,
                len(t),
                self.alpha,
                self._p_min_of(len(t)),
                min_calib_size(self.alpha, self.cfg["correction"], self.cfg["delta"]),
            )
        self._log_p_min()
        return self

    def _p_min_of(self, n: int) -> float:
        """Smallest p-value n calibration scores give, with this detector's correction."""
        return smallest_pvalue(n, self.cfg["correction"], self.cfg["delta"])

    def _cannot_reach(self, short: list[int], counts: dict[int, int]) -> None:
        """Classes ``short`` cannot reach alpha: raise (``refuse``) or warn what is done."""
        c, alpha = self.cfg, self.alpha
        need = min_calib_size(alpha, c["correction"], c["delta"])
        shown = _first(
            [
                f"class {k} ({counts[k]} calib samples, p_min {self._p_min_of(counts[k]):.3g})"
                for k in short
            ]
        )
        rule = "1/(n+1)" + (f" after the {c['correction']} correction" if c["correction"] else "")
        cause = (
            f"{self.name}: class-conditional calibration cannot reach alpha={alpha:g} for {shown}: "
            f"the smallest p-value of a class with n calib samples is {rule}, so a class needs "
            f">= {need} calib samples predicted as it"
        )
        if c["mondrian_fallback"] == "refuse":
            raise ConfigError(
                f"{cause}, or its samples can never be rejected. Fix: more calibration data "
                "(benchmark.calib_fraction; benchmark.fractions.calib for the embedded digits "
                "benchmarks), a larger detector.alpha, detector.class_conditional=false, or "
                "detector.mondrian_fallback=marginal (see docs/statistical-detector.md)."
            )
        if c["mondrian_fallback"] == "marginal":
            log.warning(
                "%s. Falling back to marginal calibration for all %d classes "
                "(mondrian_fallback=marginal): the per-class guarantee is lost, the marginal one "
                "holds.",
                cause,
                self.num_classes,
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
                f"; alpha={a:g} never rejects {len(bad)} class(es): {_first(bad)}"
                for a, bad in missed.items()
            ),
        )

    # scoring ------------------------------------------------------------------------------
    def layer_pvalues(self, feats: Features) -> np.ndarray:
        """N × L matrix of per-layer p-values (columns in :attr:`keys` order)."""
        pred = feats.predictions()
        cols = [
            np.clip(t.pvalues(_get(feats, k), pred), P_FLOOR, t.p_ceil)
            for k, t in zip(self.keys, self.tests, strict=True)
        ]
        return np.stack(cols, axis=1)

    def _stat(self, p: np.ndarray) -> np.ndarray:
        """Across-layer statistic, higher = more OOD: −log of the combined p-value."""
        return -np.log(np.clip(combine_pvalues(p, self.cfg["across"], axis=1), P_FLOOR, 1.0))

    def statistic(self, feats: Features) -> np.ndarray:
        """The combined, uncalibrated statistic (higher = more OOD)."""
        p = self.layer_pvalues(feats)
        if self.cfg["across_mode"] == "at_once" or p.shape[1] == 1:
            return self._stat(p)
        running = p[:, 0]
        t = -np.log(running)
        for j, ref in enumerate(self.step_refs, start=1):
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
        if not self.cfg["calibrate"]:
            return np.clip(np.exp(-t), 0.0, 1.0)  # the combiner's own p-value (no guarantee)
        if not self.cfg["class_conditional"] or self.fell_back:
            return self._conformal(self.calib_all, t)
        p = np.ones(len(t))
        for cls in range(self.num_classes):
            m = pred == cls
            if m.any() and len(self.calib_by_class[cls]):
                p[m] = self._conformal(self.calib_by_class[cls], t[m])
        return p

    def _conformal(self, calib_sorted: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Conformal p-values of ``t`` against sorted calibration statistics, corrected when
        ``correction`` is set."""
        p = conformal_pvalues(calib_sorted, t)
        if self.cfg["correction"]:
            p = calibration_conditional(
                p, len(calib_sorted), self.cfg["delta"], self.cfg["correction"]
            )
        return p

    def decide(self, feats: Features, alpha: float | None = None) -> np.ndarray:
        """True where the sample is declared OOD at level ``alpha``."""
        return self.pvalues(feats) <= (self.alpha if alpha is None else alpha)

    def params(self) -> dict[str, Any]:
        """The detector's configuration (``cfg``)."""
        return dict(self.cfg)

    @property
    def calibration(self) -> str:
        """The calibration in use: ``marginal`` conformal p-values, or the class-conditional /
        corrected variant (``marginal``/``corrected`` after a ``mondrian_fallback``)."""
        c = self.cfg
        if not c["calibrate"]:
            return "none"
        if c["class_conditional"] and not self.fell_back:
            return "class_conditional"
        return "corrected" if c["correction"] else "marginal"

    def class_p_min(self) -> dict[int, float] | None:
        """Per predicted class, the smallest p-value of the calibration in use: 1/(n_c+1) per
        class (class-conditional), 1/(n+1) for all (marginal), corrected when ``correction`` is
        set; None before calibration or without it."""
        if not self.cfg["calibrate"] or not hasattr(self, "calib_all"):
            return None
        if self.calibration == "class_conditional":
            return {c: self._p_min_of(len(ref)) for c, ref in self.calib_by_class.items()}
        p = self._p_min_of(len(self.calib_all))
        return dict.fromkeys(range(self.num_classes), p)

    def reference_nbytes(self) -> int:
        """Memory held by the fitted references and calibration scores."""
        total = sum(t.nbytes for t in self.tests) + getattr(self, "calib_all", np.empty(0)).nbytes
        return total + sum(r.nbytes for r in getattr(self, "step_refs", []))

"""The per-layer statistics of the statistical detector: one small class per statistic.

A statistic is fitted on one layer's ID features (``fit`` split, with the backbone's predicted
classes) and returns one p-value per sample, small = unlike ID. Two families:

- :class:`ChannelStatistic`: an empirical p-value per channel, combined within the layer;
- :class:`DistanceStatistic` subclasses: a distance to an ID reference, turned into a right-tail
  empirical p-value against the fit samples' own distances (``euclidean``, ``cosine``,
  ``mahalanobis``, ``knn``; and the output tests ``energy``, ``maxlogit`` on the logits).

Each class is registered under its option value (``statistic: <name>`` or, for an output test,
``output_test: <name>``) with :func:`.registry.register`; fitted state follows scikit-learn's
convention (a trailing underscore, ``None`` until :meth:`LayerStatistic.fit`). Each statistic
declares the smallest fit set it can work with (:meth:`LayerStatistic.min_fit`, and per
predicted class where its reference is class-conditional): the detector refuses a smaller one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar

import numpy as np
from scipy.special import logsumexp

from ood_bench.detectors.stat.registry import register
from ood_bench.pvalues import EmpiricalReference, combine_pvalues

if TYPE_CHECKING:
    from ood_bench.detectors.stat.options import StatOptions

P_FLOOR = 1e-300  # keeps -log(p) finite
MIN_CLASS_REF = 20  # fewer fit samples predicted as a class: that class uses the pooled reference


def _normalise(z: np.ndarray) -> np.ndarray:
    """Rows scaled to unit Euclidean norm (a zero row stays near zero)."""
    return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)


class LayerStatistic(ABC):
    """One layer's test: fitted on the ID reference, returns a p-value per sample."""

    name: ClassVar[str]
    output: ClassVar[bool] = False
    ref_: EmpiricalReference | None

    def __init__(self) -> None:
        """Unfitted; :meth:`fit` sets the trailing-underscore state."""
        self.ref_ = None

    @classmethod
    def from_options(cls, opts: StatOptions) -> LayerStatistic:
        """The statistic with the detector options it uses (none by default)."""
        return cls()

    def min_fit(self) -> int:
        """Fewest fit samples that can give more than one p-value: with n reference values an
        empirical p-value lies on the grid 1/(n+1), ..., 1 and is clipped at 1 − 1/(n+1), so a
        one-sided p-value needs n ≥ 2."""
        return 2

    def min_fit_why(self) -> str:
        """Why :meth:`min_fit`, for the error message."""
        return (
            "with n fit samples its empirical p-values lie on the grid 1/(n+1), ..., n/(n+1), "
            "so fewer give the same p-value to every sample (AUROC 0.5)"
        )

    def min_fit_fix(self, n: int) -> str:
        """Another fix than a larger fit set for a fit set of ``n`` (``, or ...``; "": none)."""
        return ""

    def min_fit_per_class(self) -> int:
        """Fewest fit samples of a predicted class that has any (0: no per-class reference)."""
        return 0

    def min_fit_per_class_why(self) -> str:
        """Why :meth:`min_fit_per_class`, for the error message."""
        return ""

    @abstractmethod
    def fit(self, z: np.ndarray, pred: np.ndarray, num_classes: int) -> LayerStatistic:
        """Fit on ID features ``z`` (N × C, float64) with predicted classes ``pred``."""

    @abstractmethod
    def pvalues(self, z: np.ndarray, pred: np.ndarray) -> np.ndarray:
        """One p-value per sample (small = unlike the ID reference)."""

    @property
    def reference(self) -> EmpiricalReference:
        """The fitted reference; a clear error before :meth:`fit`."""
        if self.ref_ is None:
            raise RuntimeError(f"the {self.name} statistic is not fitted: call fit first")
        return self.ref_

    @property
    def p_ceil(self) -> float:
        """Largest p-value passed to a combiner: 1 − 1/(n+1), the top of the empirical grid
        below 1. An empirical p-value of exactly 1 (a tie with the whole reference) would send
        Cauchy's tan((0.5 − p)π) and Stouffer's Φ⁻¹(1 − p) to −∞ and mask every other channel.
        Clipping only changes the statistic; the conformal step keeps the final p-value valid."""
        return 1.0 - 1.0 / (self.reference.n + 1)

    @property
    def nbytes(self) -> int:
        """Memory held by the fitted reference and model."""
        return self.reference.nbytes + self._model_nbytes()

    def _model_nbytes(self) -> int:
        """Memory of what the statistic keeps besides its reference."""
        return 0


@register("channel")
class ChannelStatistic(LayerStatistic):
    """Empirical p-value of each channel against the fit samples' (pooled, or per predicted
    class with ``reference=class``), combined within the layer with ``within`` (MaSF)."""

    def __init__(self, tail: str = "two-sided", within: str = "simes", reference: str = "pooled"):
        """``tail``: which channel values are extreme; ``within``: the combination rule."""
        super().__init__()
        self.tail, self.within, self.reference_kind = tail, within, reference
        self.class_refs_: dict[int, EmpiricalReference] = {}

    @classmethod
    def from_options(cls, opts: StatOptions) -> ChannelStatistic:
        """Tail, within-layer combiner and reference kind from the detector options."""
        return cls(opts.tail, opts.within, opts.reference)

    def min_fit(self) -> int:
        """Two-sided, p = min(1, 2·min(right, left)) ≥ 2/(n+1) must fall below the clip
        1 − 1/(n+1): n ≥ 3; one-sided n ≥ 2."""
        return 3 if self.tail == "two-sided" else 2

    def fit(self, z: np.ndarray, pred: np.ndarray, num_classes: int) -> ChannelStatistic:
        """The pooled reference, and one per predicted class with at least
        :data:`MIN_CLASS_REF` fit samples when ``reference=class`` (others use the pooled one)."""
        self.ref_ = EmpiricalReference(z)
        self.class_refs_ = {}
        if self.reference_kind == "class":
            self.class_refs_ = {
                c: EmpiricalReference(z[pred == c])
                for c in range(num_classes)
                if (pred == c).sum() >= MIN_CLASS_REF
            }
        return self

    def pvalues(self, z: np.ndarray, pred: np.ndarray) -> np.ndarray:
        """Channel p-values combined with ``within``."""
        return combine_pvalues(self._channel_pvalues(z, pred), self.within, axis=1)

    def _channel_pvalues(self, z: np.ndarray, pred: np.ndarray) -> np.ndarray:
        """N×C clipped channel-wise p-values, against the predicted class's reference when
        ``reference=class`` (the pooled one for classes without enough samples)."""
        if self.reference_kind != "class":
            return np.clip(self.reference.pvalues(z, self.tail), P_FLOOR, self.p_ceil)
        p = np.empty_like(z, dtype=np.float64)
        for c in np.unique(pred):
            m = pred == c
            ref = self.class_refs_.get(int(c), self.reference)
            p[m] = np.clip(ref.pvalues(z[m], self.tail), P_FLOOR, 1 - 1 / (ref.n + 1))
        return p

    def _model_nbytes(self) -> int:
        """The per-class references."""
        return sum(r.nbytes for r in self.class_refs_.values())


class DistanceStatistic(LayerStatistic):
    """A distance to an ID reference (higher = farther from ID), as a right-tail empirical
    p-value against the distances of the fit samples."""

    def fit(self, z: np.ndarray, pred: np.ndarray, num_classes: int) -> DistanceStatistic:
        """Fit the distance model, then the reference of the fit samples' distances."""
        self._fit_model(z, pred, num_classes)
        self.ref_ = EmpiricalReference(self.distance(z, pred, exclude_self=True))
        return self

    def _fit_model(self, z: np.ndarray, pred: np.ndarray, num_classes: int) -> None:
        """What :meth:`distance` needs from the fit samples (nothing by default)."""

    @abstractmethod
    def distance(self, z: np.ndarray, pred: np.ndarray, exclude_self: bool = False) -> np.ndarray:
        """Each sample's distance (``exclude_self``: ``z`` are the fit samples themselves)."""

    def pvalues(self, z: np.ndarray, pred: np.ndarray) -> np.ndarray:
        """Right-tail p-value of each sample's distance: far from ID = large."""
        return self.reference.pvalues(self.distance(z, pred), "right")


class ClassMeanStatistic(DistanceStatistic):
    """A distance to the predicted class's mean of the fit features (DROOD; ``center=global``:
    to the mean of all fit features). The test side has no labels either, hence predicted."""

    def __init__(self, center: str = "class", normalize: bool = False):
        """``center``: ``class`` (the predicted class's mean) or ``global``; ``normalize``: scale
        every vector to unit L2 norm first (Mahalanobis++: the feature norm varies with the
        input's contrast and drives the distance more than its direction does)."""
        super().__init__()
        self.center, self.normalize = center, normalize
        self.means_: np.ndarray | None = None

    @classmethod
    def from_options(cls, opts: StatOptions) -> ClassMeanStatistic:
        """The ``center`` and ``normalize`` options."""
        return cls(opts.center, opts.normalize)

    def fit(self, z: np.ndarray, pred: np.ndarray, num_classes: int) -> ClassMeanStatistic:
        """:meth:`DistanceStatistic.fit` on the (normalised, with ``normalize``) vectors."""
        super().fit(_normalise(z) if self.normalize else z, pred, num_classes)
        return self

    def pvalues(self, z: np.ndarray, pred: np.ndarray) -> np.ndarray:
        """:meth:`DistanceStatistic.pvalues` of the (normalised) vectors."""
        return super().pvalues(_normalise(z) if self.normalize else z, pred)

    def min_fit_per_class(self) -> int:
        """2 with ``center=class`` (see :meth:`min_fit_per_class_why`), else 0."""
        return 2 if self.center == "class" else 0

    def min_fit_fix(self, n: int) -> str:
        """One mean for all: ``center=global``."""
        return ", or detector.center=global" if self.center == "class" else ""

    def min_fit_per_class_why(self) -> str:
        """A one-sample class mean."""
        return (
            "with center=class a class mean of one sample is that sample, whose own distance "
            "is then 0: its class's reference is degenerate (a class no fit sample is "
            "predicted as uses the global mean)"
        )

    def _fit_model(self, z: np.ndarray, pred: np.ndarray, num_classes: int) -> None:
        """The class means (the global mean for a class no fit sample is predicted as)."""
        self.means_ = np.stack(
            [
                z[pred == c].mean(0) if (pred == c).any() and self.center == "class" else z.mean(0)
                for c in range(num_classes)
            ]
        )

    @property
    def means(self) -> np.ndarray:
        """The fitted class means (one row per class)."""
        if self.means_ is None:
            raise RuntimeError(f"the {self.name} statistic is not fitted: call fit first")
        return self.means_

    def _model_nbytes(self) -> int:
        """The class means."""
        return self.means.nbytes


@register("euclidean")
class EuclideanStatistic(ClassMeanStatistic):
    """Euclidean distance to the predicted class's mean (DROOD)."""

    def distance(self, z: np.ndarray, pred: np.ndarray, exclude_self: bool = False) -> np.ndarray:
        """‖z − μ_pred‖."""
        return np.linalg.norm(z - self.means[pred], axis=1)


@register("cosine")
class CosineStatistic(ClassMeanStatistic):
    """Cosine distance to the predicted class's mean."""

    def distance(self, z: np.ndarray, pred: np.ndarray, exclude_self: bool = False) -> np.ndarray:
        """1 − cos(z, μ_pred)."""
        return 1.0 - np.einsum("nd,nd->n", _normalise(z), _normalise(self.means)[pred])


@register("mahalanobis")
class MahalanobisStatistic(ClassMeanStatistic):
    """Mahalanobis distance to the predicted class's mean with one tied, Ledoit–Wolf shrunk
    covariance (accounts for correlated channels, which Euclidean ignores)."""

    def __init__(self, center: str = "class", normalize: bool = False):
        """``center`` and ``normalize`` as in :class:`ClassMeanStatistic`."""
        super().__init__(center, normalize)
        self.precision_: np.ndarray | None = None

    def _fit_model(self, z: np.ndarray, pred: np.ndarray, num_classes: int) -> None:
        """Class means, then the shrunk precision of the centred fit features."""
        from sklearn.covariance import LedoitWolf

        super()._fit_model(z, pred, num_classes)
        centred = z - self.means[pred]
        self.precision_ = LedoitWolf(assume_centered=True).fit(centred).get_precision()

    def distance(self, z: np.ndarray, pred: np.ndarray, exclude_self: bool = False) -> np.ndarray:
        """√((z − μ)ᵀ P (z − μ))."""
        if self.precision_ is None:
            raise RuntimeError("the mahalanobis statistic is not fitted: call fit first")
        diff = z - self.means[pred]
        return np.sqrt(np.maximum(((diff @ self.precision_) * diff).sum(1), 0))

    def _model_nbytes(self) -> int:
        """Class means and precision matrix."""
        return super()._model_nbytes() + (0 if self.precision_ is None else self.precision_.nbytes)


@register("knn")
class KnnStatistic(DistanceStatistic):
    """Distance to the k-th nearest normalised fit feature (no class-mean model, so
    multi-modal classes are not penalised)."""

    def __init__(self, k: int = 10):
        """``k``: which neighbour (k ≥ 1)."""
        super().__init__()
        self.k = k
        self.nn_ = None  # sklearn NearestNeighbors on the normalised fit features
        self.fit_nbytes_ = 0

    @classmethod
    def from_options(cls, opts: StatOptions) -> KnnStatistic:
        """The ``k`` option."""
        return cls(opts.k)

    def min_fit(self) -> int:
        """A fit sample's own reference distance leaves the sample out, so it needs k other
        fit samples: k + 1 in all (and 2 for a p-value grid)."""
        return max(self.k + 1, 2)

    def min_fit_why(self) -> str:
        """Why k + 1."""
        return (
            f"each fit sample's reference distance is to its k-th nearest *other* fit sample "
            f"(itself left out), so k={self.k} needs k + 1 = {self.k + 1} fit samples; the "
            "largest usable k is the fit set's size − 1"
        )

    def min_fit_fix(self, n: int) -> str:
        """A smaller k: at most ``n`` − 1."""
        return f", or detector.k <= {n - 1}" if n > 1 else ""

    def _fit_model(self, z: np.ndarray, pred: np.ndarray, num_classes: int) -> None:
        """The neighbour index of the normalised fit features."""
        from sklearn.neighbors import NearestNeighbors

        zn = _normalise(z)
        self.nn_ = NearestNeighbors(n_neighbors=self.k + 1).fit(zn)
        self.fit_nbytes_ = zn.nbytes

    def distance(self, z: np.ndarray, pred: np.ndarray, exclude_self: bool = False) -> np.ndarray:
        """Distance to the k-th nearest normalised fit feature (``exclude_self``: the k-th
        after the sample itself)."""
        if self.nn_ is None:
            raise RuntimeError("the knn statistic is not fitted: call fit first")
        dist, _ = self.nn_.kneighbors(_normalise(z), n_neighbors=self.k + int(exclude_self))
        return dist[:, -1]

    def _model_nbytes(self) -> int:
        """The normalised fit features the index holds."""
        return self.fit_nbytes_


# Output-layer statistics on the logits, higher = more OOD: the negative free energy
# (-logsumexp, Liu et al. 2020) and the negative maximum logit (Hendrycks et al. 2022).
@register("energy", output=True)
class EnergyStatistic(DistanceStatistic):
    """The free energy of the logits, −logsumexp (Liu et al. 2020)."""

    def distance(self, z: np.ndarray, pred: np.ndarray, exclude_self: bool = False) -> np.ndarray:
        """−logsumexp(z)."""
        return -logsumexp(z, axis=1)


@register("maxlogit", output=True)
class MaxLogitStatistic(DistanceStatistic):
    """The negative maximum logit (Hendrycks et al. 2022)."""

    def distance(self, z: np.ndarray, pred: np.ndarray, exclude_self: bool = False) -> np.ndarray:
        """−max(z)."""
        return -z.max(axis=1)

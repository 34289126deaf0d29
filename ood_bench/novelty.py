"""Novelty detection: does a new class hide among the samples a detector rejects? Recover it.

Post hoc, on a frozen network, without retraining. Given a batch of m test samples:

1. **Reject** at level ``alpha``: conformal p-values of the OOD detector's score, calibrated on
   held-out ID data (``calib``), p <= alpha.
2. **Count**: how many rejections can false alarms explain? Given the calibration set, each ID
   test sample is rejected independently with probability pi = 1 - F(c_(n-k+1)),
   k = floor(alpha (n + 1)), and pi ~ Beta(k, n - k + 1) over calibration sets (continuous
   scores; ties make it smaller). So the number V of false rejections among the ID samples N of
   the batch is Beta-binomial(|N|, k, n - k + 1) *marginally over the shared calibration set* —
   exact, not the Binomial(m, alpha) that would ignore the dependence the shared calibration set
   induces (the Beta-binomial is wider). Its upper (1 - level) quantile q(s) bounds V with
   probability >= 1 - level. Since |N| <= m - R + V, V lies in {j <= R : j <= q(m - R + j)};
   its maximum j* bounds the false rejections, and R - j* is a (1 - level) lower confidence
   bound on the true outliers among the R rejections, simultaneously for every cluster (a
   closed-testing argument with one local test, Goeman & Solari 2011).
3. **Embed** the rejected samples: cached tap features (multi-layer pooled or penultimate),
   optionally standardised on the ID ``fit`` split, L2-normalised per layer, PCA-reduced.
4. **Cluster** them: HDBSCAN (default), or a Gaussian mixture / k-means with the number of
   clusters chosen by BIC or silhouette. *Anchored*: a class-stratified sample of the held-out
   ID data is clustered with them, so the known classes form their own clusters and a single
   new class stands apart instead of being "the whole data" (HDBSCAN's failure mode with one
   group); a cluster that is not compact is re-clustered (``refine``).
5. **Decide per cluster** whether it is a new class:

   - *not known*: at most ``max_id_frac`` of its points are ID reference samples;
   - *large*: at least ``min_size`` rejected samples;
   - *certified*: more rejections than false alarms can explain, size - j* >= ``min_certified``
     (j* bounds the false rejections in the whole batch, so in any cluster);
   - *compact*: median distance to its centroid no larger than a quantile (default: the max)
     of the ID classes' own dispersions, measured the same way in the same embedding on the
     held-out ID data;
   - *low-level typical* (optional): at most ``max_frac`` of its members have a small conformal
     p-value of a first-layer statistic. A new class of the same domain shares the ID data's
     low-level statistics; sensor noise and other domains do not — and pooled features of
     i.i.d. noise concentrate (law of large numbers), so noise is as *compact* as a class and
     only this criterion tells them apart (measured on digits: noise and photo patches 96-100 %
     atypical, digits 6-9 3-11 %).

   ``certify: each`` requires every counted cluster to be certified (a simultaneous statement:
   each declared class holds true outliers); ``certify: any`` (default) requires one certified
   cluster for the decision and counts the other clusters that meet the remaining criteria (the
   worst case of every false alarm in one cluster otherwise hides classes smaller than j*).
   "New class present" = at least one cluster is declared; the number declared is the
   estimated number of new classes.

Guarantee: with only ID data in the batch (and min_certified >= 1), a declaration needs a
cluster larger than j*; when R <= q(m), j* = R, so it needs R > q(m): P(false declaration) <=
P(R > q(m)) <= level, exactly (Beta-binomial), whatever the embedding and the clustering.
Outliers that are not a class (noise) are genuine rejections: no counting argument can help,
and the structural criteria carry the decision; the ``control_noise`` scenario measures their
false-alarm rate.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import special, stats
from scipy.optimize import linear_sum_assignment

from ood_bench.errors import ConfigError
from ood_bench.features import Features
from ood_bench.results import NOVELTY_METRICS  # noqa: F401  (re-exported)

log = logging.getLogger(__name__)

NORMALISE = ("none", "standardize", "l2", "standardize_l2")
PCA_FIT = ("id", "rejected")
CLUSTER_METHODS = ("hdbscan", "gmm", "kmeans")
SELECT = ("bic", "silhouette")
ID, NEW, NUISANCE = 0, 1, 2  # what a sample of a scenario batch is
KIND_NAMES = {ID: "id", NEW: "new", NUISANCE: "nuisance"}


# metric rows of ``ood_bench.run_novelty`` (ood_dataset = scenario, ood_group = novelty): the
# entries to merge into ``ood_bench.results.METRICS``
# metric names and meanings live with the results schema (documented in the README)


# counting: how many rejections can false alarms explain? ------------------------------------
def n_rejectable(alpha: float, n_calib: int) -> int:
    """k = floor(alpha (n + 1)): a conformal p-value is <= alpha iff fewer than k calibration
    scores reach the test score (k = 0: nothing can be rejected)."""
    return int(math.floor(alpha * (n_calib + 1) + 1e-9))


def _betabinom_quantile(size: int, k: int, n_calib: int, level: float) -> int:
    """Smallest q with P(V > q) <= level, V ~ Beta-binomial(size, k, n - k + 1): the pmf from
    log-gamma terms, summed (scipy's generic discrete ppf is a slow search)."""
    if size <= 0 or k == 0:
        return 0
    a, b = float(k), float(n_calib - k + 1)
    x = np.arange(size + 1, dtype=np.float64)
    logpmf = (
        special.gammaln(size + 1.0)
        - special.gammaln(x + 1.0)
        - special.gammaln(size - x + 1.0)
        + special.betaln(x + a, size - x + b)
        - special.betaln(a, b)
    )
    cdf = np.cumsum(np.exp(logpmf))
    return int(min(np.searchsorted(cdf, 1.0 - level - 1e-12), size))


def false_rejection_quantile(
    size: int | np.ndarray, alpha: float, n_calib: int, level: float
) -> np.ndarray:
    """Upper (1 - level) quantile of the number of rejected ID samples among ``size`` of them:
    the smallest q with P(V > q) <= level for V ~ Beta-binomial(size, k, n - k + 1)."""
    k = n_rejectable(alpha, n_calib)
    size = np.asarray(size, dtype=np.int64)
    out = [_betabinom_quantile(int(s), k, n_calib, level) for s in size.ravel()]
    return np.asarray(out, dtype=np.int64).reshape(size.shape)


def false_rejection_bound(m: int, r: int, alpha: float, n_calib: int, level: float) -> int:
    """j*: with probability >= 1 - level, at most j* of the r rejections among m samples are ID.

    The true ID set N satisfies V <= q(|N|) with probability >= 1 - level, and
    |N| <= m - r + V, so V <= j* = max{j <= r : j <= q(m - r + j)}. Since q(s) <= q(s + 1) <=
    q(s) + 1 (one more sample adds at most one rejection), j - q(m - r + j) is non-decreasing:
    the admissible j form an interval [0, j*], found by bisection.
    """
    if r == 0:
        return 0
    k = n_rejectable(alpha, n_calib)
    lo, hi = 0, r  # j = 0 is always admissible
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if mid <= _betabinom_quantile(m - r + mid, k, n_calib, level):
            lo = mid
        else:
            hi = mid - 1
    return lo


def excess_pvalue(m: int, r: int, alpha: float, n_calib: int) -> float:
    """P(V >= r) for V ~ Beta-binomial(m, k, n - k + 1): the p-value of "r rejections among m
    are all false alarms" (the global test of any outlier)."""
    k = n_rejectable(alpha, n_calib)
    if k == 0:
        return 1.0 if r == 0 else 0.0
    return float(stats.betabinom.sf(r - 1, m, k, n_calib - k + 1))


# embedding ----------------------------------------------------------------------------------
def tap_layers(feats: Features, reduction: str) -> list[str]:
    """Tapped layers in network order, as feature keys (``<layer>.<reduction>`` or flat)."""
    from ood_bench.detectors.stat import layer_keys

    return layer_keys(feats, reduction, None)


def resolve_layers(feats: Features, layers: str | Sequence[str] | None, reduction: str) -> list:
    """Feature keys for a layer spec: a list of tap names (``penultimate`` allowed), or
    ``first`` (the first tapped layer), ``middle`` (all but the first and the last), ``all``."""
    keys = tap_layers(feats, reduction)
    if layers is None or isinstance(layers, str):
        spec = layers or "all"
        if spec == "first":
            return keys[:1]
        if spec == "middle":
            return keys[1:-1] if len(keys) > 2 else keys[-1:]
        if spec == "all":
            return keys
        if spec == "penultimate":
            return ["penultimate"]
        raise ConfigError(f"layers={spec!r}: give a list of taps or first / middle / all")
    out = []
    base = {k.rpartition(".")[0] if k.rpartition(".")[2] in ("max", "mean") else k: k for k in keys}
    for name in layers:
        if name == "penultimate":
            out.append("penultimate")
        elif name in base:
            out.append(base[name])
        elif name in feats.taps:
            out.append(name)
        else:
            raise ConfigError(
                f"layer {name!r} is not tapped; tapped layers: {list(base)} (or penultimate)"
            )
    return out


def _block(feats: Features, key: str) -> np.ndarray:
    """One feature block (``penultimate`` or a tap key) as a float64 numpy array."""
    t = feats.penultimate if key == "penultimate" else feats.taps[key]
    return t.detach().cpu().double().numpy()


class Embedding:
    """Tap features → (standardised on ID ``fit``,) per-layer L2-normalised, PCA-reduced vectors.

    Each layer block gets the same weight (unit norm per block, or 1/sqrt(channels) when only
    standardised), so a wide layer does not drown a narrow one.
    """

    def __init__(
        self,
        layers: str | Sequence[str] | None = "middle",
        reduction: str = "max",
        normalise: str = "l2",
        dim: int | None = None,
        pca_fit: str = "id",
    ):
        """Validate the options; the layers and statistics are set by :meth:`fit`."""
        if normalise not in NORMALISE:
            raise ConfigError(f"embedding.normalise={normalise!r} is not one of {NORMALISE}")
        if pca_fit not in PCA_FIT:
            raise ConfigError(f"embedding.pca_fit={pca_fit!r} is not one of {PCA_FIT}")
        if reduction not in ("max", "mean"):
            raise ConfigError(f"embedding.reduction={reduction!r} is not max or mean")
        self.layers, self.reduction, self.normalise = layers, reduction, normalise
        self.dim, self.pca_fit = (int(dim) if dim else None), pca_fit

    def fit(self, fit: Features) -> Embedding:
        """Resolve the layers and fit the per-layer standardisation (and the ID PCA) on ``fit``."""
        self.keys = resolve_layers(fit, self.layers, self.reduction)
        blocks = [_block(fit, k) for k in self.keys]
        self.stats = [(b.mean(0), b.std(0) + 1e-6) for b in blocks]
        self.pca = None
        if self.dim and self.pca_fit == "id":
            self.pca = self._pca(self.base(fit))
        log.info(
            "novelty embedding: %s (%s), dim %s fitted on %s",
            self.keys,
            self.normalise,
            self.dim,
            self.pca_fit,
        )
        return self

    def _pca(self, x: np.ndarray):
        """A seeded PCA fitted on ``x``, its dimension capped by the data's size."""
        from sklearn.decomposition import PCA

        dim = min(self.dim or x.shape[1], x.shape[1], max(1, x.shape[0] - 1))
        return PCA(dim, random_state=0).fit(x)

    def base(self, feats: Features) -> np.ndarray:
        """Normalised, concatenated layer blocks (before PCA)."""
        out = []
        for key, (mu, sd) in zip(self.keys, self.stats, strict=True):
            b = _block(feats, key)
            if self.normalise in ("standardize", "standardize_l2"):
                b = (b - mu) / sd
            if self.normalise in ("l2", "standardize_l2"):
                b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
            else:
                b = b / np.sqrt(b.shape[1])
            out.append(b / np.sqrt(len(self.keys)))
        return np.hstack(out)

    def projector(self, rejected: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        """The map applied to base vectors: the ID PCA, one fitted on the rejected samples, or
        the identity (``dim: null``)."""
        if not self.dim or (self.pca_fit == "rejected" and len(rejected) < 3):
            return lambda x: x
        pca = self.pca if self.pca_fit == "id" else self._pca(rejected)
        return pca.transform


# clustering ---------------------------------------------------------------------------------
class Clusterer:
    """HDBSCAN, or a Gaussian mixture / k-means whose number of clusters maximises a criterion
    (BIC: lowest; silhouette: highest, k >= 2) over 1..``k_max``. Labels: -1 = unclustered."""

    def __init__(
        self,
        method: str = "hdbscan",
        min_cluster_size: int = 10,
        min_samples: int | None = 3,
        cluster_selection_method: str = "eom",
        allow_single_cluster: bool = False,
        select: str = "bic",
        k_max: int = 10,
        covariance_type: str = "diag",
        n_init: int = 2,
        seed: int = 0,
    ):
        """Validate ``method`` and ``select`` and store the settings."""
        if method not in CLUSTER_METHODS:
            raise ConfigError(f"clustering.method={method!r} is not one of {CLUSTER_METHODS}")
        if select not in SELECT:
            raise ConfigError(f"clustering.select={select!r} is not one of {SELECT}")
        self.method, self.min_cluster_size, self.min_samples = method, min_cluster_size, min_samples
        self.cluster_selection_method = cluster_selection_method
        self.allow_single_cluster = bool(allow_single_cluster)
        self.select, self.k_max, self.covariance_type = select, int(k_max), covariance_type
        self.n_init, self.seed = int(n_init), int(seed)

    def __call__(self, z: np.ndarray) -> np.ndarray:
        """Cluster labels of the rows of ``z`` (-1: unclustered; all -1 when too few points)."""
        n = len(z)
        if n < max(2, self.min_cluster_size):
            return np.full(n, -1, dtype=np.int64)
        if self.method == "hdbscan":
            from sklearn.cluster import HDBSCAN

            return (
                HDBSCAN(
                    min_cluster_size=self.min_cluster_size,
                    min_samples=self.min_samples,
                    cluster_selection_method=self.cluster_selection_method,
                    allow_single_cluster=self.allow_single_cluster,
                    copy=True,
                )
                .fit_predict(z)
                .astype(np.int64)
            )
        return self._select_k(z)

    def _fit_k(self, z: np.ndarray, k: int) -> tuple[np.ndarray, float]:
        """Labels for k clusters and their BIC."""
        if self.method == "gmm":
            from sklearn.mixture import GaussianMixture

            gm = GaussianMixture(
                k,
                covariance_type=self.covariance_type,
                n_init=self.n_init,
                random_state=self.seed,
                reg_covar=1e-4,
            ).fit(z)
            return gm.predict(z), float(gm.bic(z))
        from sklearn.cluster import KMeans

        km = KMeans(k, n_init=self.n_init, random_state=self.seed).fit(z)
        return km.labels_, kmeans_bic(z, km.labels_, km.cluster_centers_)

    def _select_k(self, z: np.ndarray) -> np.ndarray:
        """Labels of the GMM / k-means fit with the best BIC or silhouette."""
        from sklearn.metrics import silhouette_score

        n = len(z)
        k_hi = max(1, min(self.k_max, n // max(2, self.min_cluster_size)))
        best_lab, best = np.zeros(n, dtype=np.int64), -np.inf
        for k in range(1 if self.select == "bic" else 2, k_hi + 1):
            lab, bic = self._fit_k(z, k)
            if self.select == "bic":
                crit = -bic
            else:
                crit = silhouette_score(z, lab) if len(np.unique(lab)) > 1 else -np.inf
            if crit > best:
                best, best_lab = crit, lab
        return np.asarray(best_lab, dtype=np.int64)


def kmeans_bic(z: np.ndarray, labels: np.ndarray, centers: np.ndarray) -> float:
    """BIC of a k-means partition read as a spherical Gaussian mixture with one shared variance
    (Pelleg & Moore 2000, X-means); lower is better."""
    n, d = z.shape
    k = len(centers)
    sse = float(((z - centers[labels]) ** 2).sum())
    var = max(sse / max(n - k, 1) / d, 1e-12)
    sizes = np.bincount(labels, minlength=k).astype(np.float64)
    nz = sizes[sizes > 0]
    loglik = float((nz * np.log(nz / n)).sum()) - 0.5 * n * d * np.log(2 * np.pi * var)
    loglik -= 0.5 * (n - k) * d  # the SSE term: sse / (2 var) with var = sse / ((n - k) d)
    n_params = k * d + 1 + (k - 1)
    return -2.0 * loglik + n_params * np.log(n)


def dispersion(z: np.ndarray) -> float:
    """Median distance of the points to their mean: a class's spread, robust to a few strays."""
    return float(np.median(np.linalg.norm(z - z.mean(0), axis=1)))


# results ------------------------------------------------------------------------------------
@dataclass
class ClusterEvidence:
    """Why a cluster of rejected samples is (not) declared a new class."""

    label: int  # label of its rejected samples (-1 for a known class's cluster)
    size: int  # rejected samples in it
    certified: int  # size - j*: true outliers it holds even if every false alarm fell in it
    n_id_ref: int  # held-out ID reference samples clustered with it (anchored clustering)
    id_frac: float  # n_id_ref / (n_id_ref + size): above max_id_frac it is a known class
    dispersion: float  # median distance of its rejected samples to their mean
    compact_threshold: float  # the ID classes' dispersion quantile (× slack)
    low_level_atypical: float  # fraction of members whose low-level p-value <= its alpha
    known: bool
    large: bool
    compact: bool
    typical: bool
    is_new: bool


@dataclass
class NoveltyResult:
    """The decision with its evidence, and a cluster label per rejected sample (-1: none)."""

    new_class: bool
    n_new: int
    rejected: np.ndarray  # indices of the rejected samples in the batch
    labels: np.ndarray  # cluster of each rejected sample (-1: unclustered)
    clusters: list[ClusterEvidence]
    m: int
    n_rejected: int
    false_bound: int  # j*
    true_lower: int  # R - j*: lower confidence bound on the true outliers among rejections
    p_excess: float
    alpha: float
    level: float
    n_calib: int
    # the rejected samples' embedding and the projected ID reference (for figures)
    embedding: np.ndarray = field(repr=False, default_factory=lambda: np.empty((0, 0)))
    reference: np.ndarray = field(repr=False, default_factory=lambda: np.empty((0, 0)))
    reference_y: np.ndarray = field(repr=False, default_factory=lambda: np.empty(0))

    @property
    def new_clusters(self) -> list[int]:
        """Labels of the clusters declared new classes."""
        return [c.label for c in self.clusters if c.is_new]

    def summary(self) -> str:
        """A human-readable report: the decision, the count, and every cluster."""
        head = (
            f"new class present: {'YES' if self.new_class else 'no'} ({self.n_new} new) — "
            f"{self.n_rejected}/{self.m} rejected at alpha={self.alpha:g}; false alarms <= "
            f"{self.false_bound} with prob >= {1 - self.level:g} (Beta-binomial, n_calib="
            f"{self.n_calib}), so >= {self.true_lower} true outliers; p(excess)="
            f"{self.p_excess:.3g}"
        )
        lines = [head]
        for c in self.clusters:
            name = f"cluster {c.label}" if c.label >= 0 else "known-class cluster"
            verdict = "NEW CLASS" if c.is_new else "no"
            lines.append(
                f"  {name}: {c.size} rejected + {c.n_id_ref} ID reference (ID fraction "
                f"{c.id_frac:.2f}), certified {c.certified}, dispersion {c.dispersion:.3f} vs "
                f"ID {c.compact_threshold:.3f}, low-level atypical {c.low_level_atypical:.2f} "
                f"→ {verdict}"
            )
        return "\n".join(lines)


@dataclass
class Sample:
    """Precomputed per-sample arrays of a set: what trials slice and recombine cheaply."""

    score: np.ndarray  # OOD score, higher = more OOD
    low: np.ndarray  # low-level statistic (higher = more atypical); zeros when unused
    z: np.ndarray  # base embedding (before PCA)
    y: np.ndarray  # ID class (ID sets), true class of a new class (or -1 unknown)
    kind: np.ndarray  # ID / NEW / NUISANCE

    def __len__(self) -> int:
        """Number of samples."""
        return len(self.score)

    def take(self, idx: np.ndarray) -> Sample:
        """The samples at ``idx`` (every array indexed alike)."""
        return Sample(*(a[idx] for a in (self.score, self.low, self.z, self.y, self.kind)))

    @staticmethod
    def concat(parts: Sequence[Sample]) -> Sample:
        """The parts' samples in order (empty parts skipped)."""
        parts = [p for p in parts if len(p)] or list(parts[:1])
        return Sample(
            *(np.concatenate([getattr(p, a) for p in parts]) for a in Sample.__annotations__)
        )


# the method ---------------------------------------------------------------------------------
class NoveltyDetector:
    """Rejected samples → embedding → clusters → per-cluster new-class decision with evidence.

    Built from a ``conf/novelty/*.yaml`` option; ``fit(detector, fit, calib)`` then
    ``detect(features)``. ``alpha``: per-sample rejection level; ``level``: false-alarm level
    of the "new class present" decision. ``embedding`` and ``clustering``: the arguments of
    :class:`Embedding` and :class:`Clusterer`. ``criteria``: ``min_size``, ``min_certified``,
    ``certify`` (``any``/``each``), ``compact_quantile`` (of the ID classes' dispersions; 1 =
    the loosest ID class), ``compact_slack`` (multiplies that threshold), ``max_id_frac``.
    ``low_level``: ``null`` (off) or a statistical detector's settings on the first layer(s)
    (``layers``, ``reduction``, ``statistic``, ``k``) with ``alpha`` and ``max_frac``: a
    cluster is low-level atypical when more than ``max_frac`` of its members have a low-level
    p-value <= ``alpha``. ``anchor``: cluster with at most ``anchor_max`` held-out ID samples;
    ``refine``: how many times a non-compact cluster is re-clustered.
    """

    def __init__(
        self,
        name: str,
        alpha: float = 0.05,
        level: float = 0.05,
        embedding: dict[str, Any] | None = None,
        clustering: dict[str, Any] | None = None,
        criteria: dict[str, Any] | None = None,
        low_level: dict[str, Any] | None = None,
        anchor: bool = True,
        anchor_max: int = 500,
        refine: int = 2,
        seed: int = 0,
    ):
        """Validate the settings and build the embedding and the clusterer."""
        for key, v in (("alpha", alpha), ("level", level)):
            if not 0 < v < 1:
                raise ConfigError(f"novelty.{key} must lie in (0, 1), got {v}")
        self.name, self.alpha, self.level = name, float(alpha), float(level)
        self.anchor, self.anchor_max, self.seed = bool(anchor), int(anchor_max), int(seed)
        self.refine_depth = int(refine)
        self.embedding = Embedding(**(embedding or {}))
        self.clusterer = Clusterer(**{"seed": seed, **(clustering or {})})
        crit = {
            "min_size": 10,
            "min_certified": 1,
            "compact_quantile": 1.0,
            "compact_slack": 1.0,
            "max_id_frac": 0.5,
            "certify": "any",
        }
        unknown = sorted(set(criteria or {}) - set(crit))
        if unknown:
            raise ConfigError(f"novelty.criteria: unknown keys {unknown}; known: {sorted(crit)}")
        self.criteria = {**crit, **(criteria or {})}
        if self.criteria["certify"] not in ("each", "any"):
            raise ConfigError("novelty.criteria.certify must be each or any")
        if int(self.criteria["min_certified"]) < 1:
            raise ConfigError(
                "novelty.criteria.min_certified must be >= 1: the false-alarm guarantee needs "
                "a declared cluster to outnumber the false rejections"
            )
        self.low_level_cfg = dict(low_level) if low_level else None
        if self.low_level_cfg:
            allowed = {"layers", "reduction", "statistic", "k", "alpha", "max_frac"}
            unknown = sorted(set(self.low_level_cfg) - allowed)
            if unknown:
                raise ConfigError(f"novelty.low_level: unknown keys {unknown}; known: {allowed}")

    # fitting --------------------------------------------------------------------------------
    def fit(self, detector: Any, fit: Features, calib: Features) -> NoveltyDetector:
        """Fit the embedding (and the low-level test) on ``fit``, then calibrate on ``calib``.

        ``detector`` must be fitted, without ``calib`` (the score must not have seen the
        calibration data); only its ``score`` is used: the p-values are the marginal conformal
        p-values of that score on ``calib`` (the Beta-binomial count assumes exactly these, so
        a detector's own class-conditional or corrected calibration is not used).
        """
        self.detector = detector
        if detector.calibration in ("class_conditional", "corrected"):
            log.warning(
                "%s: novelty uses the marginal conformal p-values of the detector's score; its "
                "%s calibration is not used",
                detector.name,
                detector.calibration.replace("_", "-"),
            )
        self.embedding.fit(fit)
        self.low_detector = None
        if self.low_level_cfg:
            from ood_bench.detectors.stat import StatDetector

            c = self.low_level_cfg
            red = c.get("reduction", "mean")
            layers = [
                k.rpartition(".")[0] or k
                for k in resolve_layers(fit, c.get("layers", "first"), red)
            ]
            self.low_detector = StatDetector(
                "novelty_low_level",
                reduction=red,
                statistic=c.get("statistic", "knn"),
                layers=layers,
                k=int(c.get("k", 10)),
                calibrate=False,
            ).fit_reference(fit)
        self.calibrate(self.sample(calib))
        return self

    def sample(self, feats: Features, kind: int = ID, y: np.ndarray | None = None) -> Sample:
        """Precompute the arrays of a set (scores, low-level statistic, base embedding)."""
        n = len(feats)
        score = np.asarray(self.detector.score(feats), dtype=np.float64)
        low = self.low_detector.statistic(feats) if self.low_detector is not None else np.zeros(n)
        if y is None:
            y = feats.labels.numpy() if kind == ID else np.full(n, -1)
        return Sample(
            score,
            low,
            self.embedding.base(feats),
            np.asarray(y, np.int64),
            np.full(n, kind, dtype=np.int64),
        )

    def calibrate(self, calib: Sample) -> NoveltyDetector:
        """Held-out ID data: the conformal reference of both tests and the ID classes' spread."""
        if len(calib) == 0:
            raise ConfigError("novelty needs held-out ID data (calib) to calibrate")
        self.calib_score = np.sort(calib.score)
        self.calib_low = np.sort(calib.low)
        self.calib_z, self.calib_y = calib.z, calib.y
        self.n_calib = len(calib)
        idx = np.arange(len(calib))
        if len(idx) > self.anchor_max:  # a seeded, class-stratified subsample of the reference
            from ood_bench.data.base import stratified_split

            frac = self.anchor_max / len(idx)
            idx = stratified_split(calib.y, {"a": frac, "b": 1 - frac}, self.seed)["a"]
        self.anchor_z, self.anchor_y = calib.z[idx], calib.y[idx]
        if n_rejectable(self.alpha, self.n_calib) == 0:
            log.warning(
                "novelty: %d calibration samples cannot reject anything at alpha=%g (needs >= %d)",
                self.n_calib,
                self.alpha,
                math.ceil(1 / self.alpha) - 1,
            )
        return self

    def id_threshold(self, project: Callable[[np.ndarray], np.ndarray]) -> float:
        """Compactness threshold: a quantile of the ID classes' dispersions (held-out data)."""
        z = project(self.calib_z)
        disp = [
            dispersion(z[self.calib_y == c])
            for c in np.unique(self.calib_y)
            if (self.calib_y == c).sum() >= 5
        ]
        if not disp:
            raise ConfigError("novelty: no ID class has 5 calibration samples for its spread")
        q = float(np.quantile(disp, self.criteria["compact_quantile"]))
        return q * float(self.criteria["compact_slack"])

    # deciding -------------------------------------------------------------------------------
    def pvalues(self, batch: Sample) -> np.ndarray:
        """Conformal p-values of the batch's OOD scores against the calibration scores."""
        from ood_bench.stats import conformal_pvalues

        return conformal_pvalues(self.calib_score, batch.score)

    def detect(self, feats: Features, level: float | None = None) -> NoveltyResult:
        """Decide on a batch of features (see :meth:`discover`)."""
        return self.discover(self.sample(feats), level)

    def refine(self, pts: np.ndarray, labels: np.ndarray, r: int, thr: float) -> np.ndarray:
        """Split clusters that are not compact: re-cluster each one's points, up to
        ``clustering.refine`` times. A density clustering may return one cluster for several
        classes (a top-level split of the hierarchy); the compactness criterion, which defines
        what a class is here, decides whether to look inside it. ``r``: the first r points are
        the rejected samples (the others, the ID reference, never make a cluster large)."""
        labels = labels.copy()
        for _ in range(self.refine_depth):
            split = False
            next_label = labels.max() + 1
            for c in np.unique(labels[labels >= 0]):
                members = np.flatnonzero(labels == c)
                rej = members[members < r]
                if len(rej) < 2 * self.criteria["min_size"] or dispersion(pts[rej]) <= thr:
                    continue
                sub = self.clusterer(pts[members])
                if len(np.unique(sub[sub >= 0])) < 2:
                    continue
                split = True
                labels[members] = np.where(sub >= 0, sub + next_label, -1)
                next_label = labels.max() + 1
            if not split:
                break
        return labels

    def discover(self, batch: Sample, level: float | None = None) -> NoveltyResult:
        """Reject, count, embed, cluster, decide per cluster (module docstring)."""
        from ood_bench.stats import conformal_pvalues

        level = self.level if level is None else float(level)
        crit = self.criteria
        m = len(batch)
        rej = np.flatnonzero(self.pvalues(batch) <= self.alpha)
        r = len(rej)
        j_star = false_rejection_bound(m, r, self.alpha, self.n_calib, level)
        p_exc = excess_pvalue(m, r, self.alpha, self.n_calib)
        project = self.embedding.projector(batch.z[rej])
        z = project(batch.z[rej]) if r else np.empty((0, 1))
        raw = np.full(r, -1, dtype=np.int64)
        ref_labels = np.empty(0, dtype=np.int64)
        thr = self.id_threshold(project) if r >= crit["min_size"] else float("nan")
        if r >= crit["min_size"]:  # fewer rejections cannot make a large cluster
            # anchored: the held-out ID reference is clustered with them, so known classes form
            # their own clusters and one new class stands apart instead of being "the data"
            pts = np.vstack([z, project(self.anchor_z)]) if self.anchor else z
            all_labels = self.refine(pts, self.clusterer(pts), r, thr)
            raw, ref_labels = all_labels[:r], all_labels[r:]
        clusters: list[ClusterEvidence] = []
        labels = np.full(r, -1, dtype=np.int64)
        found = [c for c in np.unique(raw) if c >= 0]
        if found:
            p_low = (
                conformal_pvalues(self.calib_low, batch.low[rej])
                if self.low_detector is not None
                else np.ones(r)
            )
            low_alpha = self.low_level_cfg.get("alpha", 0.05) if self.low_level_cfg else 0.0
            low_max = self.low_level_cfg.get("max_frac", 0.5) if self.low_level_cfg else 1.0
            # largest first, so labels are stable and readable
            found.sort(key=lambda c: -int((raw == c).sum()))
            next_label = 0
            for c in found:
                members = raw == c
                size = int(members.sum())
                n_ref = int((ref_labels == c).sum())
                id_frac = n_ref / (n_ref + size)
                known = id_frac > crit["max_id_frac"]
                disp = dispersion(z[members])
                atyp = float((p_low[members] <= low_alpha).mean()) if self.low_detector else 0.0
                large = size >= crit["min_size"]
                compact = disp <= thr
                typical = atyp <= low_max
                certified = size - j_star
                is_new = (
                    not known
                    and large
                    and compact
                    and typical
                    and certified >= crit["min_certified"]
                )
                label = -1
                if not known:  # rejected samples in a known class's cluster stay unlabelled
                    label, next_label = next_label, next_label + 1
                    labels[members] = label
                clusters.append(
                    ClusterEvidence(
                        label=label,
                        size=size,
                        certified=int(certified),
                        n_id_ref=n_ref,
                        id_frac=id_frac,
                        dispersion=disp,
                        compact_threshold=thr,
                        low_level_atypical=atyp,
                        known=bool(known),
                        large=bool(large),
                        compact=bool(compact),
                        typical=bool(typical),
                        is_new=bool(is_new),
                    )
                )
        if crit["certify"] == "any" and any(c.is_new for c in clusters):
            # the count certifies the decision once; further clusters need only the structure
            for c in clusters:
                c.is_new = not c.known and c.large and c.compact and c.typical
        n_new = sum(c.is_new for c in clusters)
        return NoveltyResult(
            new_class=n_new > 0,
            n_new=n_new,
            rejected=rej,
            labels=labels,
            clusters=clusters,
            m=m,
            n_rejected=r,
            false_bound=j_star,
            true_lower=r - j_star,
            p_excess=p_exc,
            alpha=self.alpha,
            level=level,
            n_calib=self.n_calib,
            embedding=z,
            reference=project(self.anchor_z) if r else np.empty((0, 0)),
            reference_y=self.anchor_y,
        )


# evaluation ---------------------------------------------------------------------------------
def cluster_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Clustering accuracy: the best one-to-one map clusters → classes (Hungarian,
    ``scipy.optimize.linear_sum_assignment``); unclustered points (-1) are never correct."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if len(y_true) == 0:
        return float("nan")
    classes, clusters = np.unique(y_true), np.unique(y_pred[y_pred >= 0])
    if len(clusters) == 0:
        return 0.0
    cont = np.array([[np.sum((y_pred == k) & (y_true == c)) for c in classes] for k in clusters])
    rows, cols = linear_sum_assignment(-cont)
    return float(cont[rows, cols].sum() / len(y_true))


def clustering_scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """ACC (Hungarian), NMI and ARI (scikit-learn; unclustered = one more label)."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    if len(y_true) == 0:
        return {}
    return {
        "cluster_acc": cluster_accuracy(y_true, y_pred),
        "nmi": float(normalized_mutual_info_score(y_true, y_pred)),
        "ari": float(adjusted_rand_score(y_true, y_pred)),
    }


def true_classes(source: Any) -> np.ndarray | None:
    """Original class of each sample of an OOD :class:`~ood_bench.data.base.ImageSet` (whose
    labels are -1), or None when the set holds no classes (noise, photo patches).

    - embedded digits: the near set is ``load_digits()`` images of ``near_classes`` in their
      original order (``ood_bench.data.digits.build_digits``);
    - on-disk sets seen through an index subset (``.base``, ``.indices``): the base dataset's
      targets at those indices.
    """
    if source is None:
        return None
    spec = getattr(source, "spec", {}) or {}
    if spec.get("source") == "sklearn.load_digits" and spec.get("set") == "near_classes":
        from sklearn.datasets import load_digits

        target = load_digits().target
        y = target[np.isin(target, [int(c) for c in spec["classes"]])]
        return y.astype(np.int64) if len(y) == len(source) else None
    ds = getattr(source, "dataset", None)
    base, idx = getattr(ds, "base", None), getattr(ds, "indices", None)
    if base is not None and idx is not None:
        for attr in ("targets", "labels", "_labels"):
            if hasattr(base, attr):
                y = np.asarray(getattr(base, attr), dtype=np.int64)[np.asarray(idx)]
                return y if len(y) and (y >= 0).all() else None
    return None


# scenarios ----------------------------------------------------------------------------------
@dataclass
class Scenario:
    """A repeated-trial experiment on one benchmark; see ``conf/novelty/scenario/*.yaml``.

    ``kind``: ``batch`` (one decision per trial) or ``stream`` (checks every ``check_every``
    samples, the new class appearing after ``change_at`` ID samples). ``new_sets``: OOD sets
    holding the new classes (``near`` = the benchmark's near sets; empty = a control).
    ``nuisance_sets``: outliers that are not a class (noise). ``n_id``: ID samples per batch or
    stream (null: all the trial's ID test data). ``benchmark``: the benchmark the scenario
    needs (``null``: any).
    """

    name: str
    benchmark: str | None = None
    kind: str = "batch"
    new_sets: list[str] = field(default_factory=list)
    nuisance_sets: list[str] = field(default_factory=list)
    n_new: int = 400
    n_nuisance: int = 200
    new_classes_per_trial: int | None = None
    n_id: int | None = None
    trials: int | None = None
    change_at: int = 100
    new_rate: float = 0.3
    check_every: int = 10
    window: int | None = None
    spending: str = "bonferroni"
    description: str = ""

    def __post_init__(self) -> None:
        """Validate ``kind`` and ``spending``; copy the set lists."""
        if self.kind not in ("batch", "stream"):
            raise ConfigError(f"scenario {self.name}: kind={self.kind!r} is not batch or stream")
        if self.spending not in ("bonferroni", "quadratic"):
            raise ConfigError(f"scenario {self.name}: spending must be bonferroni or quadratic")
        self.new_sets, self.nuisance_sets = list(self.new_sets), list(self.nuisance_sets)

    @property
    def has_new_class(self) -> bool:
        """Whether the batches hold new-class samples (not a control)."""
        return bool(self.new_sets) and self.n_new > 0


@dataclass
class TrialResult:
    """The outcome of one batch or stream trial of a scenario."""

    scenario: str
    trial: int
    truth: bool
    declared: bool
    n_new_est: int
    n_new_true: int
    n_rejected: int
    false_bound: int
    true_lower: int
    true_outliers: int  # actual non-ID samples among the rejections
    m: int
    scores: dict[str, float] = field(default_factory=dict)
    alarm_at: int | None = None  # stream: samples seen at the alarm
    delay: int | None = None  # stream: new-class samples seen at the alarm
    false_alarm: bool = False  # stream: alarm before the change


def _draw_new(
    rng: np.random.Generator, new: Sample, n: int, per_trial: int | None
) -> tuple[Sample, int]:
    """n samples of the new sets (of ``per_trial`` randomly chosen classes when labels are
    known); returns them and the number of distinct new classes among them."""
    if len(new) == 0 or n <= 0:
        return new.take(np.empty(0, dtype=np.int64)), 0
    pool = np.arange(len(new))
    known = (new.y >= 0).all()
    if known and per_trial:
        classes = np.unique(new.y)
        pick = rng.choice(classes, size=min(per_trial, len(classes)), replace=False)
        pool = np.flatnonzero(np.isin(new.y, pick))
    idx = rng.choice(pool, size=min(n, len(pool)), replace=False)
    drawn = new.take(idx)
    n_classes = len(np.unique(drawn.y)) if known else 1
    return drawn, n_classes


def _split_pool(
    rng: np.random.Generator, pool: Sample, n_calib: float | int
) -> tuple[Sample, Sample]:
    """Split the ID pool at random into calibration (``n_calib``: a fraction or a count) and
    test samples."""
    perm = rng.permutation(len(pool))
    n_cal = int(round(n_calib * len(pool))) if n_calib < 1 else int(n_calib)
    if not 0 < n_cal < len(pool):
        raise ConfigError(f"n_calib={n_calib} leaves no calibration or no test data")
    return pool.take(perm[:n_cal]), pool.take(perm[n_cal:])


def _trial_scores(res: NoveltyResult, batch: Sample) -> dict[str, float]:
    """ACC / NMI / ARI on the rejected samples of the new classes (known labels only)."""
    rej_kind = batch.kind[res.rejected]
    sel = rej_kind == NEW
    y = batch.y[res.rejected][sel]
    if not sel.any() or (y < 0).any():
        return {}
    return clustering_scores(y, res.labels[sel])


def run_batch_trial(
    nd: NoveltyDetector,
    sc: Scenario,
    pool: Sample,
    new: Sample,
    nuisance: Sample,
    n_calib: float | int,
    rng: np.random.Generator,
    trial: int,
) -> tuple[TrialResult, NoveltyResult, Sample]:
    """One batch trial: calibrate on part of the ID pool, then decide on a shuffled batch of
    the remaining ID samples, drawn new-class samples and nuisance outliers.

    Returns the trial's result, the detector's result and the batch."""
    cal, test_id = _split_pool(rng, pool, n_calib)
    if sc.n_id:
        test_id = test_id.take(rng.permutation(len(test_id))[: sc.n_id])
    drawn, n_classes = _draw_new(rng, new, sc.n_new if sc.new_sets else 0, sc.new_classes_per_trial)
    noise = (
        nuisance.take(
            rng.choice(len(nuisance), size=min(sc.n_nuisance, len(nuisance)), replace=False)
        )
        if len(nuisance)
        else nuisance
    )
    batch = Sample.concat([test_id, drawn, noise])
    batch = batch.take(rng.permutation(len(batch)))
    nd.calibrate(cal)
    res = nd.discover(batch)
    tr = TrialResult(
        scenario=sc.name,
        trial=trial,
        truth=len(drawn) > 0,
        declared=res.new_class,
        n_new_est=res.n_new,
        n_new_true=n_classes if len(drawn) else 0,
        n_rejected=res.n_rejected,
        false_bound=res.false_bound,
        true_lower=res.true_lower,
        true_outliers=int((batch.kind[res.rejected] != ID).sum()),
        m=res.m,
        scores=_trial_scores(res, batch),
    )
    return tr, res, batch


def run_stream_trial(
    nd: NoveltyDetector,
    sc: Scenario,
    pool: Sample,
    new: Sample,
    n_calib: float | int,
    rng: np.random.Generator,
    trial: int,
) -> TrialResult:
    """ID samples, then after ``change_at`` samples a new class mixed in at ``new_rate``.

    Checks after every ``check_every`` samples on the last ``window`` samples (all so far when
    null), each at level ``level / J`` (Bonferroni over the J planned checks) or
    ``level · 6 / (π² j²)`` (``quadratic``: open-ended), so the probability of any alarm
    before the change is <= level (union bound).
    """
    cal, ids = _split_pool(rng, pool, n_calib)
    if sc.n_id:  # the stream's ID samples (the rest of the pool is not used)
        ids = ids.take(np.arange(min(sc.n_id, len(ids))))
    if sc.change_at >= len(ids):
        raise ConfigError(f"scenario {sc.name}: change_at={sc.change_at} >= {len(ids)} ID samples")
    n_post_id = len(ids) - sc.change_at
    n_post_new = int(round(n_post_id * sc.new_rate / (1 - sc.new_rate)))
    drawn, _ = _draw_new(rng, new, n_post_new, sc.new_classes_per_trial or 1)
    post = Sample.concat([ids.take(np.arange(sc.change_at, len(ids))), drawn])
    post = post.take(rng.permutation(len(post)))
    stream = Sample.concat([ids.take(np.arange(sc.change_at)), post])
    nd.calibrate(cal)
    checks = np.arange(sc.check_every, len(stream) + 1, sc.check_every)
    alarm_at = delay = None
    for j, t in enumerate(checks, start=1):
        lvl = (
            nd.level / len(checks)
            if sc.spending == "bonferroni"
            else nd.level * 6 / (math.pi**2 * j**2)
        )
        start = 0 if sc.window is None else max(0, t - sc.window)
        res = nd.discover(stream.take(np.arange(start, t)), level=lvl)
        if res.new_class:
            alarm_at = int(t)
            delay = int((stream.kind[:t] == NEW).sum())
            break
    return TrialResult(
        scenario=sc.name,
        trial=trial,
        truth=True,
        declared=alarm_at is not None and alarm_at > sc.change_at,
        n_new_est=0,
        n_new_true=1,
        n_rejected=0,
        false_bound=0,
        true_lower=0,
        true_outliers=0,
        m=len(stream),
        alarm_at=alarm_at,
        delay=delay if alarm_at is not None and alarm_at > sc.change_at else None,
        false_alarm=alarm_at is not None and alarm_at <= sc.change_at,
    )


def summarise(trials: list[TrialResult], sc: Scenario) -> dict[str, float]:
    """Rates and means over the trials of one scenario (the job's metric values)."""
    n = len(trials)
    out: dict[str, float] = {"n_trials": float(n)}
    if sc.kind == "stream":
        detected = [t for t in trials if t.declared]
        out["stream_false_alarm"] = float(np.mean([t.false_alarm for t in trials]))
        out["stream_detect_rate"] = len(detected) / n
        if detected:
            out["stream_delay"] = float(np.mean([t.delay for t in detected]))
            out["stream_delay_median"] = float(np.median([t.delay for t in detected]))
        return out
    correct = [t.declared == t.truth for t in trials]
    out["novelty_decision_acc"] = float(np.mean(correct))
    if sc.has_new_class:
        out["novelty_miss"] = float(np.mean([not t.declared for t in trials]))
    else:
        out["novelty_false_alarm"] = float(np.mean([t.declared for t in trials]))
    out["n_new_est"] = float(np.mean([t.n_new_est for t in trials]))
    out["n_new_true"] = float(np.mean([t.n_new_true for t in trials]))
    out["n_new_exact"] = float(np.mean([t.n_new_est == t.n_new_true for t in trials]))
    out["n_rejected"] = float(np.mean([t.n_rejected for t in trials]))
    out["true_outliers_lb"] = float(np.mean([t.true_lower for t in trials]))
    out["true_outliers"] = float(np.mean([t.true_outliers for t in trials]))
    out["outlier_bound_coverage"] = float(
        np.mean([t.true_lower <= t.true_outliers for t in trials])
    )
    for key in ("cluster_acc", "nmi", "ari"):
        vals = [t.scores[key] for t in trials if key in t.scores]
        if vals:
            out[key] = float(np.mean(vals))
    return out

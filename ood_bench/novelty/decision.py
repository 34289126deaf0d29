"""The method: rejected samples → embedding → clusters → per-cluster new-class decision."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ood_bench.calibration import ConformalCalibrator
from ood_bench.detectors.base import Detector
from ood_bench.errors import ConfigError
from ood_bench.features import Features
from ood_bench.novelty.bound import excess_pvalue, false_rejection_bound, n_rejectable
from ood_bench.novelty.clustering import Clusterer, dispersion
from ood_bench.novelty.embedding import Embedding, resolve_layers
from ood_bench.novelty.result import ClusterEvidence, NoveltyResult
from ood_bench.novelty.sample import ID, Sample

if TYPE_CHECKING:
    from ood_bench.detectors.stat import StatDetector

log = logging.getLogger(__name__)


CRITERIA = {
    "min_size": 10,
    "min_certified": 1,
    "compact_quantile": 1.0,
    "compact_slack": 1.0,
    "max_id_frac": 0.5,
    "certify": "union",
}
CERTIFY = ("union", "any", "each")
DOMAINS = ("same", "any")
LOW_LEVEL_KEYS = {"layers", "reduction", "statistic", "k", "alpha", "max_frac"}


def _criteria(criteria: dict[str, Any] | None) -> dict[str, Any]:
    """The decision criteria: ``criteria`` over :data:`CRITERIA`, validated."""
    unknown = sorted(set(criteria or {}) - set(CRITERIA))
    if unknown:
        raise ConfigError(f"novelty.criteria: unknown keys {unknown}; known: {sorted(CRITERIA)}")
    crit = {**CRITERIA, **(criteria or {})}
    if crit["certify"] not in CERTIFY:
        raise ConfigError(
            f"novelty.criteria.certify={crit['certify']!r} is not one of {CERTIFY} (union: the "
            "candidate clusters together outnumber the false alarms; any: one cluster does; "
            "each: every declared cluster does)"
        )
    if int(crit["min_certified"]) < 1:
        raise ConfigError(
            "novelty.criteria.min_certified must be >= 1: the false-alarm guarantee needs "
            "a declared cluster to outnumber the false rejections"
        )
    return crit


def _low_level(low_level: dict[str, Any] | None) -> dict[str, Any] | None:
    """The low-level test's settings (None: off), their keys checked."""
    cfg = dict(low_level) if low_level else None
    if cfg:
        unknown = sorted(set(cfg) - LOW_LEVEL_KEYS)
        if unknown:
            raise ConfigError(f"novelty.low_level: unknown keys {unknown}; known: {LOW_LEVEL_KEYS}")
    return cfg


@dataclass
class Clustered:
    """The rejected samples embedded and clustered (with the anchoring ID reference)."""

    project: Callable[[np.ndarray], np.ndarray]  # base embedding → clustering space
    z: np.ndarray  # the rejected samples in the clustering space
    labels: np.ndarray  # cluster of each rejected sample (-1: none)
    ref: np.ndarray  # the ID reference (anchor) samples in the clustering space
    ref_labels: np.ndarray  # cluster of each ID reference sample (empty: not anchored)
    threshold: float  # compactness threshold (nan: too few rejections to cluster)


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
    p-value <= ``alpha``. ``domain``: ``same`` (a new class shares the ID data's low-level
    statistics: a low-level atypical cluster, another domain or noise, is not one) or ``any``
    (another domain counts as a new class too; the low-level test is then evidence only).
    ``anchor``: cluster with at most ``anchor_max`` held-out ID samples;
    ``refine``: how many times a non-compact cluster is re-clustered; ``assign``: after the
    decision, give each unclustered rejected sample the label of the nearest declared class
    (centroid) when it is nearer than every known class's (the decision does not change).
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
        domain: str = "same",
        anchor: bool = True,
        anchor_max: int = 500,
        refine: int = 2,
        assign: bool = True,
        seed: int = 0,
    ):
        """Validate the settings and build the embedding and the clusterer."""
        for key, v in (("alpha", alpha), ("level", level)):
            if not 0 < v < 1:
                raise ConfigError(f"novelty.{key} must lie in (0, 1), got {v}")
        self.name, self.alpha, self.level = name, float(alpha), float(level)
        self.anchor, self.anchor_max, self.seed = bool(anchor), int(anchor_max), int(seed)
        self.refine_depth, self.assign_unclustered = int(refine), bool(assign)
        self.embedding = Embedding(**(embedding or {}))
        self.clusterer = Clusterer(**{"seed": seed, **(clustering or {})})
        self.criteria = _criteria(criteria)
        self.low_level_cfg = _low_level(low_level)
        if domain not in DOMAINS:
            raise ConfigError(
                f"novelty.domain={domain!r} is not one of {DOMAINS} (same: a new class shares "
                "the ID data's low-level statistics; any: another domain counts too)"
            )
        self.domain = domain

    # fitting --------------------------------------------------------------------------------
    def fit(self, detector: Detector, fit: Features, calib: Features) -> NoveltyDetector:
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
        self.low_detector = self._low_level_detector(fit) if self.low_level_cfg else None
        self.calibrate(self.sample(calib))
        return self

    def _low_level_detector(self, fit: Features) -> StatDetector:
        """The low-level test: a statistical detector on the first layer(s), fitted on ``fit``
        without calibration (:meth:`calibrate` gives its conformal reference)."""
        from ood_bench.detectors.stat import StatDetector

        c = self.low_level_cfg or {}
        red = c.get("reduction", "mean")
        layers = [
            k.rpartition(".")[0] or k for k in resolve_layers(fit, c.get("layers", "first"), red)
        ]
        return StatDetector(
            "novelty_low_level",
            reduction=red,
            statistic=c.get("statistic", "knn"),
            layers=layers,
            k=int(c.get("k", 10)),
            calibrate=False,
        ).fit_reference(fit)

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
        # the detector's score calibrated as every detector's is (ood_bench.calibration): the
        # marginal conformal step, which the Beta-binomial count assumes
        self.score_calibrator = ConformalCalibrator(
            alpha=self.alpha, name="novelty", verbose=False
        ).fit(calib.score, np.zeros(len(calib), dtype=np.int64))
        self.calib_score = self.score_calibrator.calib_all_
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
        return self.score_calibrator.pvalues(batch.score, np.zeros(len(batch.score), np.int64))

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
        """Reject → cluster → evidence → decide (package docstring): the decision on a batch."""
        level = self.level if level is None else float(level)
        rej = self.reject(batch)
        m, r = len(batch), len(rej)
        j_star = false_rejection_bound(m, r, self.alpha, self.n_calib, level)
        p_exc = excess_pvalue(m, r, self.alpha, self.n_calib)
        found = self.cluster(batch.z[rej])
        clusters, labels = self.evidence(found, batch.low[rej], j_star)
        n_new = self.decide(clusters, j_star)
        if self.assign_unclustered and n_new:
            labels = self.assign(found, labels, clusters)
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
            embedding=found.z,
            reference=found.ref,
            reference_y=self.anchor_y,
        )

    def assign(
        self, found: Clustered, labels: np.ndarray, clusters: list[ClusterEvidence]
    ) -> np.ndarray:
        """Labels with each rejected sample the density clustering left out (-1 there) moved
        to the nearest declared class's centroid, when that centroid is nearer than the
        nearest known class's (held-out ID reference, same space). HDBSCAN labels the sparse
        part of a class as noise, which the decision rightly ignores but the recovered classes
        should not."""
        new = [c.label for c in clusters if c.is_new]
        free = found.labels < 0
        if not new or not free.any():
            return labels
        z = found.z
        cent = np.stack([z[labels == c].mean(0) for c in new])
        ref = found.ref
        known = np.stack([ref[self.anchor_y == c].mean(0) for c in np.unique(self.anchor_y)])
        d_new = np.linalg.norm(z[free, None] - cent[None], axis=2)
        d_known = np.linalg.norm(z[free, None] - known[None], axis=2).min(1)
        near = d_new.min(1) < d_known
        out = labels.copy()
        idx = np.flatnonzero(free)[near]
        out[idx] = np.asarray(new)[d_new[near].argmin(1)]
        return out

    def reject(self, batch: Sample) -> np.ndarray:
        """Indices of the batch's samples whose conformal p-value is <= ``alpha``."""
        return np.flatnonzero(self.pvalues(batch) <= self.alpha)

    def cluster(self, rejected: np.ndarray) -> Clustered:
        """Embed the rejected samples (base vectors) and cluster them, refined.

        Anchored: the held-out ID reference is clustered with them, so known classes form their
        own clusters and one new class stands apart instead of being "the data". Fewer than
        ``min_size`` rejections are left unclustered: they cannot make a large cluster.
        """
        r = len(rejected)
        project = self.embedding.projector(rejected)
        z = project(rejected) if r else np.empty((0, 1))
        ref = project(self.anchor_z) if r else np.empty((0, 0))
        if r < self.criteria["min_size"]:
            none = np.full(r, -1, dtype=np.int64)
            return Clustered(project, z, none, ref, np.empty(0, dtype=np.int64), float("nan"))
        thr = self.id_threshold(project)
        pts = np.vstack([z, ref]) if self.anchor else z
        labels = self.refine(pts, self.clusterer(pts), r, thr)
        return Clustered(project, z, labels[:r], ref, labels[r:], thr)

    def evidence(
        self, found: Clustered, low: np.ndarray, j_star: int
    ) -> tuple[list[ClusterEvidence], np.ndarray]:
        """Weigh every cluster (largest first, so labels are stable and readable) against the
        criteria; returns the evidence and a label per rejected sample, -1 for the samples in
        a known class's cluster or in none."""
        labels = np.full(len(found.labels), -1, dtype=np.int64)
        ids = [c for c in np.unique(found.labels) if c >= 0]
        if not ids:
            return [], labels
        p_low = self.low_level_pvalues(low)
        ids.sort(key=lambda c: -int((found.labels == c).sum()))
        clusters: list[ClusterEvidence] = []
        next_label = 0
        for c in ids:
            members = found.labels == c
            n_ref = int((found.ref_labels == c).sum())
            ev = self.weigh(found.z[members], n_ref, p_low[members], j_star, found.threshold)
            if not ev.known:
                ev.label, next_label = next_label, next_label + 1
                labels[members] = ev.label
            clusters.append(ev)
        return clusters, labels

    def low_level_pvalues(self, low: np.ndarray) -> np.ndarray:
        """Conformal p-values of the rejected samples' low-level statistic (ones when off)."""
        from ood_bench.pvalues import conformal_pvalues

        if self.low_detector is None:
            return np.ones(len(low))
        return conformal_pvalues(self.calib_low, low)

    def weigh(
        self, z: np.ndarray, n_ref: int, p_low: np.ndarray, j_star: int, thr: float
    ) -> ClusterEvidence:
        """One cluster's evidence: its ``size`` rejected samples (embedded ``z``, low-level
        p-values ``p_low``) and ``n_ref`` ID reference samples; :meth:`decide` sets ``is_new``."""
        crit, cfg = self.criteria, self.low_level_cfg or {}
        size = len(z)
        id_frac = n_ref / (n_ref + size)
        disp = dispersion(z)
        atyp = 0.0
        if self.low_detector is not None:
            atyp = float((p_low <= cfg.get("alpha", 0.05)).mean())
        return ClusterEvidence(
            label=-1,
            size=size,
            certified=int(size - j_star),
            n_id_ref=n_ref,
            id_frac=id_frac,
            dispersion=disp,
            compact_threshold=thr,
            low_level_atypical=atyp,
            known=bool(id_frac > crit["max_id_frac"]),
            large=bool(size >= crit["min_size"]),
            compact=bool(disp <= thr),
            typical=bool(atyp <= (cfg.get("max_frac", 0.5) if self.low_level_cfg else 1.0)),
            is_new=False,
            same_domain=self.domain == "same",
        )

    def decide(self, clusters: list[ClusterEvidence], j_star: int) -> int:
        """Mark the clusters declared new classes and count them.

        The candidates are the clusters that meet every criterion but the count. ``union``
        (default): the candidates together hold more rejections than false alarms can explain
        (sum of sizes - j* >= ``min_certified``), so a class split into several clusters is
        certified as a whole; ``any``: one candidate alone does, then the others count too;
        ``each``: every declared candidate does. All three keep the level: with only ID data,
        any set of rejections exceeding j* needs R > q(m) (package docstring).
        """
        min_certified, mode = self.criteria["min_certified"], self.criteria["certify"]
        if mode == "union":
            ok = sum(c.size for c in clusters if c.structural) - j_star >= min_certified
            for c in clusters:
                c.is_new = ok and c.structural
            return sum(c.is_new for c in clusters)
        for c in clusters:
            c.is_new = c.structural and c.certified >= min_certified
        if mode == "any" and any(c.is_new for c in clusters):
            for c in clusters:
                c.is_new = c.structural
        return sum(c.is_new for c in clusters)

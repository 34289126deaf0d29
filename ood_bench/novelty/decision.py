"""The method: rejected samples → embedding → clusters → per-cluster new-class decision."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from ood_bench.errors import ConfigError
from ood_bench.features import Features
from ood_bench.novelty.bound import excess_pvalue, false_rejection_bound, n_rejectable
from ood_bench.novelty.clustering import Clusterer, dispersion
from ood_bench.novelty.embedding import Embedding, resolve_layers
from ood_bench.novelty.result import ClusterEvidence, NoveltyResult
from ood_bench.novelty.sample import ID, Sample

log = logging.getLogger(__name__)


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

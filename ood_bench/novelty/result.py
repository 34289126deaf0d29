"""What a decision reports: the verdict, the count, and the evidence of every cluster."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


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
    # domain=same: a new class must be low-level typical; domain=any: another domain counts too
    same_domain: bool = True

    def why_not(self) -> str:
        """The first criterion this cluster fails, for the report ("" when it is new)."""
        if self.is_new:
            return ""
        if self.known:
            return "a known class (ID fraction too high)"
        if not self.large:
            return "too small"
        if not self.compact:
            return "not compact"
        if self.same_domain and not self.typical:
            return "low-level atypical (another domain)"
        return "its count is not certified"

    @property
    def structural(self) -> bool:
        """Every criterion but the count: not known, large, compact and (``domain: same``)
        low-level typical."""
        in_domain = self.typical or not self.same_domain
        return not self.known and self.large and self.compact and in_domain


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
    def union_certified(self) -> int:
        """Rejections in the candidate clusters together, minus j*: true outliers they hold
        even if every false alarm fell in them (what ``certify: union`` tests)."""
        return sum(c.size for c in self.clusters if c.structural) - self.false_bound

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
            f"{self.p_excess:.3g}; the candidate clusters together hold >= "
            f"{max(self.union_certified, 0)} of them"
        )
        lines = [head]
        for c in self.clusters:
            name = f"cluster {c.label}" if c.label >= 0 else "known-class cluster"
            # size - j* < 1 is no evidence on its own: a cluster declared new then was certified
            # together with the other candidates (certify: union), which its line says
            if c.certified >= 1:
                alone = f">= {c.certified} true outliers alone"
            else:
                alone = f"no count alone ({c.size} rejected <= {self.false_bound} false alarms)"
            if not c.is_new:
                verdict = f"no: {c.why_not()}"
            elif c.certified >= 1:
                verdict = "NEW CLASS"
            else:
                together = max(self.union_certified, 0)
                verdict = f"NEW CLASS (with the other candidates: >= {together} true outliers)"
            lines.append(
                f"  {name}: {c.size} rejected + {c.n_id_ref} ID reference (ID fraction "
                f"{c.id_frac:.2f}), {alone}, dispersion {c.dispersion:.3f} vs ID "
                f"{c.compact_threshold:.3f}, low-level atypical {c.low_level_atypical:.2f} "
                f"→ {verdict}"
            )
        return "\n".join(lines)

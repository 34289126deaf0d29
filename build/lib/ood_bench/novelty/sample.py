"""The per-sample arrays a novelty trial slices and recombines, and what each sample is."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

ID, NEW, NUISANCE = 0, 1, 2  # what a sample of a scenario batch is
KIND_NAMES = {ID: "id", NEW: "new", NUISANCE: "nuisance"}


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

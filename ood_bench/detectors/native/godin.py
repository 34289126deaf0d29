"""Generalized ODIN (Hsu, Shen, Jin, Kira, "Generalized ODIN: Detecting Out-of-Distribution
Image without Learning from Out-of-Distribution Data", CVPR 2020) needs its own network.

G-ODIN replaces the classifier's last layer with a decomposed confidence head
``f_i(x) = h_i(x) / g(x)`` (a dividend ``h``, e.g. cosine similarity to class weights, and a
sigmoid-of-linear divisor ``g``) *trained with the classifier*, then scores ``max_i h_i`` (or
``g``) after an input perturbation whose magnitude is tuned on ID validation data. A post-hoc
harness on a frozen, conventionally trained classifier has no ``h`` and ``g`` to read, so this
option always refuses with :class:`~ood_bench.errors.NotApplicable` (as the OpenOOD adapter
refuses its training-time postprocessors, e.g. ``openood_godin``).
"""

from __future__ import annotations

import numpy as np

from ood_bench.detectors.base import Detector
from ood_bench.errors import NotApplicable
from ood_bench.features import Features

REASON = (
    "training-time method: Generalized ODIN (Hsu et al., CVPR 2020) needs a network trained "
    "with its decomposed confidence head h(x)/g(x), which a frozen post-hoc classifier does "
    "not have; retraining the backbone is outside this harness"
)


class GeneralizedODIN(Detector):
    """Refuses to fit: a training-time method (see the module docstring)."""

    def __init__(self, name: str = "ob_godin"):
        """No hyperparameters: nothing runs."""
        super().__init__(name)

    def fit(self, fit: Features, calib: Features | None = None) -> GeneralizedODIN:
        """Always :class:`NotApplicable`, with the reason."""
        raise NotApplicable(f"{self.name}: {REASON}")

    def _score(self, feats: Features) -> np.ndarray:
        raise NotApplicable(f"{self.name}: {REASON}")

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

The parts: :mod:`.statistics` (one class per per-layer statistic, registered by name),
:mod:`.options` (the typed, frozen :class:`StatOptions`), :mod:`.layers` (which features are
tested) and :mod:`.detector` (:class:`StatDetector`: fit, combine, calibrate).
"""

from ood_bench.detectors.stat.detector import StatDetector
from ood_bench.detectors.stat.layers import layer_keys
from ood_bench.detectors.stat.options import StatOptions
from ood_bench.detectors.stat.statistics import (
    REGISTRY,
    LayerStatistic,
    register,
    registered,
    statistic_class,
)

__all__ = [
    "REGISTRY",
    "LayerStatistic",
    "StatDetector",
    "StatOptions",
    "layer_keys",
    "register",
    "registered",
    "statistic_class",
]

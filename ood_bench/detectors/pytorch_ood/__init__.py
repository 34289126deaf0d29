"""Adapter for every pytorch-ood detector: one class, fed according to the detector's base.

Modules: :mod:`.catalogue` (per-class tables: parts, requirements, status, special cases),
:mod:`.feeds` (one class per way a detector is fed), :mod:`.bound` (the private copy of the
bound model and the parts cut from it), :mod:`.adapter` (:class:`PytorchOODDetector`); the
model helpers are shared with the OpenOOD adapter (:mod:`ood_bench.detectors.nets`).

- ``LogitsDetector``: cached logits (``fit_logits``/``predict_logits``), no forward pass.
- ``FeaturesDetector``: cached penultimate features or a cached tap (``fit_features``/
  ``predict_features``), plus a copy of the last ``nn.Linear`` when the method needs the head;
  no forward pass.
- ``FeatureMapsDetector``: with ``features=penultimate`` the cached penultimate features as
  N×D×1×1 maps and head = the last ``nn.Linear`` (where ASH, ReAct, SCALE and VRA act in their
  papers), no forward pass; with ``features=<module with 4-D output>`` that tap's maps from a
  hooked forward pass over the images and head = the rest of the network (two passes per image).
- ``StructuredDetector``: a list of taps — cached mean-pooled taps when the class fits on
  tensors (``fit_structured``, MultiMahalanobis), else (Gram fits from a loader only) one hooked
  forward pass giving the logits and every tap's maps.
- ``GradientDetector`` and plain ``Detector`` (MCD): the model and the images.

Library methods are called positionally (argument names differ between classes); non-gradient
paths run under ``torch.no_grad()`` (``predict_*`` would otherwise keep autograd graphs), gradient
paths under ``torch.enable_grad()``. The model a detector receives is a **private copy** of the
bound network, in eval mode, frozen, on the configured device: pytorch-ood's ``predict`` does not
call ``eval()``, ``Detector.to()`` moves every module a detector holds, and GradNorm /
GradUncertainty leave a dead functorch tensor in place of a parameter registered under two names —
so the caller's model is never moved, switched or poisoned. Module aliases are untied in the copy
(the second registration becomes a plain attribute, exactly equivalent), and the copy is checked
after each gradient batch (a corrupted copy is an error, never silent).

A detector that cannot apply to the backbone or benchmark raises :class:`NotApplicable` saying why
(MCM needs text embeddings, MCD needs dropout layers, …); nothing is skipped silently.
``search=true`` tunes the hyperparameters with pytorch-ood's ``GridSearch`` (its
``hyperparameter_space``, AUROC) on OOD validation data; the runner flags those results.
Scores come back as float64, higher = more OOD (pytorch-ood's convention already).
"""

from ood_bench.detectors.nets import poisoned, untie_modules
from ood_bench.detectors.pytorch_ood.adapter import PytorchOODDetector
from ood_bench.detectors.pytorch_ood.catalogue import (
    LEGACY_OPTIONS,
    NOT_DETECTORS,
    REQUIREMENTS,
    STATUS,
    NotApplicable,
    base_of,
    describe_feed,
    option_name,
    pood_classes,
)

__all__ = [
    "LEGACY_OPTIONS",
    "NOT_DETECTORS",
    "REQUIREMENTS",
    "STATUS",
    "NotApplicable",
    "PytorchOODDetector",
    "base_of",
    "describe_feed",
    "option_name",
    "poisoned",
    "pood_classes",
    "untie_modules",
]

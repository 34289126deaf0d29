"""The classifier's last linear layer, read once from the bound model, for native detectors
that score cached penultimate features through the head (OptFS, ActSub, CADRef)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ood_bench.detectors.nets import head_error, last_linear
from ood_bench.errors import ConfigError, NotApplicable
from ood_bench.features import Features


def read_head(name: str, model: nn.Module | None, fit: Features) -> tuple[np.ndarray, np.ndarray]:
    """Weight (C×D) and bias (C; zeros for a bias-free head) of ``model``'s last ``nn.Linear``
    as float64, checked to map the cached penultimate features of ``fit`` to its logits."""
    if model is None:
        raise ConfigError(
            f"{name} reads the classifier's last linear layer: bind the model first "
            "(detector.bind(model), as the runner does for detectors that need 'model')"
        )
    found = last_linear(model)
    lin = found[1] if found else None
    dim = fit.penultimate.shape[1]
    if lin is None or lin.in_features != dim:
        raise NotApplicable(
            f"{name} needs the classifier's last linear layer on the {dim}-d penultimate "
            f"features; {type(model).__name__} has "
            + (f"nn.Linear({lin.in_features}, …)" if lin else "no nn.Linear")
            + ". Fix: set the backbone's penultimate layer to the head's input"
        )
    w = lin.weight.detach().cpu().double()
    b = lin.bias.detach().cpu().double() if lin.bias is not None else torch.zeros(w.shape[0])
    n = min(len(fit), 64)
    pen, logits = fit.penultimate[:n].detach().cpu().double(), fit.logits[:n].detach().double()
    err = head_error(lambda z: z @ w.T + b, pen, logits, tol=1e-3)
    if err is not None:
        raise NotApplicable(
            f"{name}: the last nn.Linear of {type(model).__name__} does not map the penultimate "
            f"features to the logits (max error {err:.3g}). Fix: set the backbone's penultimate "
            "layer to the head's input"
        )
    return w.numpy(), b.double().numpy()


def as_numpy(t: torch.Tensor) -> np.ndarray:
    """A detached float64 numpy copy of ``t``."""
    return t.detach().cpu().double().numpy()

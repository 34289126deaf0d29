"""WeiPer (Granz, Heurich & Landgraf, NeurIPS 2024): OOD detection with weight perturbations of
the class projections.

The head's class projections ``w_c`` (rows of the last linear layer ``W``, bias ``b``) are
perturbed ``r`` times: ``W̃_k = W + δ ||w_c|| η_k``, ``η_k`` Gaussian rows normalised to unit
length (so every perturbed projection is at relative distance ``δ`` from its class's), and
``z̃ = W̃ z + b`` (``r·C`` perturbed logits of the penultimate features ``z``). Two scores:

- **WeiPer+MSP** (``kld=False``): ``MSP̃(x) = mean_k max softmax(W̃_k z + b)``; ``score = -MSP̃``.
- **WeiPer+KLD** (``kld=True``): per sample, the histogram (``n_bins`` bins between the fit set's
  smallest and largest value) of its own activations, over the D penultimate dimensions (``p_z``)
  and over the ``r·C`` perturbed logits (``p_z̃``); each is smoothed by a uniform kernel of width
  ``s1`` / ``s2``, and compared with the fit set's mean histogram by a symmetric KL divergence::

      score(x) = KL±(p̄_z, p_z) + λ1 · KL±(p̄_z̃, p_z̃) - λ2 · MSP̃(x)      (higher = more OOD)

  ``KL±(p, q) = KL(p||q) + KL(q||p)``, after adding ``ε`` (0.01 for z, 0.025 for z̃) to both and
  renormalising; the fit means are not smoothed, as in the authors' code.

Defaults are the paper's CIFAR-10 / ResNet-18 setting: ``r=100``, ``δ=1.8``, ``n_bins=100``,
``λ1=2.5``, ``λ2=0.1``, ``s1=4``, ``s2=15``. The perturbations are drawn once at fit from
``seed`` (the authors' code draws fresh ones at every call, see docs/detectors-native.md).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ood_bench.detectors.base import Detector
from ood_bench.detectors.nets import head_error, last_linear
from ood_bench.errors import ConfigError, NotApplicable
from ood_bench.features import Features

log = logging.getLogger(__name__)

HIST_EPS = 1e-8  # the authors' widening of the top bin edge
BATCH = 512  # samples per histogram batch (the r·C × n_bins × batch comparison tensor)


def perturbed_head(
    weight: torch.Tensor, bias: torch.Tensor, repeats: int, delta: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``r`` perturbed copies of the head stacked: weight (r·C)×D, bias r·C (float32)."""
    g = torch.Generator().manual_seed(seed)
    norms = weight.norm(dim=1, keepdim=True)
    noise = [
        delta * F.normalize(torch.randn(weight.shape, generator=g), dim=1) * norms
        for _ in range(repeats)
    ]
    return torch.cat([weight + n for n in noise]), bias.repeat(repeats)


def sample_histograms(x: torch.Tensor, lo: float, hi: float, n_bins: int) -> torch.Tensor:
    """Per row of ``x``, the fraction of its values in each of ``n_bins`` equal bins on
    ``[lo, hi + 1e-8)`` (values outside count in the total, in no bin): N × n_bins."""
    steps = torch.arange(n_bins + 1, dtype=torch.float32) / n_bins
    lo_t, hi_t = torch.tensor(lo, dtype=torch.float32), torch.tensor(hi, dtype=torch.float32)
    edges = lo_t + steps * (hi_t + HIST_EPS - lo_t)
    out = []
    for chunk in x.float().split(BATCH):
        idx = torch.bucketize(chunk, edges, right=True) - 1  # bin j: edges[j] <= v < edges[j+1]
        valid = (idx >= 0) & (idx < n_bins)
        counts = torch.zeros(len(chunk), n_bins + 1)
        counts.scatter_add_(1, torch.where(valid, idx, n_bins), torch.ones_like(chunk))
        out.append(counts[:, :n_bins] / chunk.shape[1])
    return torch.cat(out)


def smooth(hist: torch.Tensor, width: int) -> torch.Tensor:
    """Moving average of width ``width`` along the bins, edges replicated (torch's ``same``
    padding: (width-1)//2 bins before, the rest after)."""
    left = (width - 1) // 2
    padded = F.pad(hist[:, None, :], (left, width - 1 - left), mode="replicate")
    return F.avg_pool1d(padded, width, stride=1)[:, 0, :]


def symmetric_kl(p: torch.Tensor, q: torch.Tensor, eps: float) -> torch.Tensor:
    """``KL(p||q) + KL(q||p)`` of one distribution ``p`` (n_bins) and each row of ``q``, after
    adding ``eps`` and renormalising both."""
    p = (p + eps) / (p + eps).sum()
    q = (q + eps) / (q + eps).sum(1, keepdim=True)
    log_ratio = q.log() - p.log()[None]
    return (p[None] * -log_ratio).sum(1) + (q * log_ratio).sum(1)


class WeiPer(Detector):
    """WeiPer+MSP (``kld=False``) or WeiPer+KLD (``kld=True``); needs the head's weights, read
    once at :meth:`bind`, and scores cached penultimate features (no forward pass)."""

    needs = frozenset({"features", "model"})

    def __init__(
        self,
        name: str,
        kld: bool = True,
        repeats: int = 100,
        delta: float = 1.8,
        n_bins: int = 100,
        lambda_1: float = 2.5,
        lambda_2: float = 0.1,
        smoothing: int = 4,
        smoothing_perturbed: int = 15,
        eps: float = 0.01,
        eps_perturbed: float = 0.025,
        seed: int = 0,
    ):
        """Hyperparameters as in the module docstring (``repeats`` = r, ``delta`` = δ,
        ``smoothing`` / ``smoothing_perturbed`` = s1 / s2); ``seed`` draws the perturbations."""
        super().__init__(name)
        if int(repeats) < 1 or int(n_bins) < 2 or float(delta) < 0:
            raise ConfigError(
                f"{name}: repeats >= 1, n_bins >= 2 and delta >= 0 are required, got "
                f"{repeats}, {n_bins}, {delta}"
            )
        if int(smoothing) < 1 or int(smoothing_perturbed) < 1:
            raise ConfigError(f"{name}: smoothing widths must be >= 1")
        self.kld = bool(kld)
        self.repeats, self.delta, self.n_bins = int(repeats), float(delta), int(n_bins)
        self.lambda_1, self.lambda_2 = float(lambda_1), float(lambda_2)
        self.smoothing, self.smoothing_perturbed = int(smoothing), int(smoothing_perturbed)
        self.eps, self.eps_perturbed = float(eps), float(eps_perturbed)
        self.seed = int(seed)
        self.head: tuple[torch.Tensor, torch.Tensor] | None = None

    def bind(self, model: nn.Module, device: str | torch.device = "cpu") -> None:
        """Copy the last ``nn.Linear``'s weight and bias (the model itself is not kept)."""
        super().bind(model, device)
        found = last_linear(model)
        if found is None or found[1].bias is None:
            raise NotApplicable(
                f"{self.name}: WeiPer perturbs the classifier's last linear layer (with bias); "
                f"{type(model).__name__} has " + ("one without bias" if found else "no nn.Linear")
            )
        lin = found[1]
        self.head = (lin.weight.detach().float().cpu().clone(), lin.bias.detach().float().cpu())
        self.model = None  # scoring reads cached features only

    def set_head(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        """Give the head directly (C×D weight, C bias), e.g. from another framework's checkpoint."""
        self.head = (weight.detach().float().cpu().clone(), bias.detach().float().cpu().clone())

    def _z(self, feats: Features) -> torch.Tensor:
        return feats.penultimate.detach().float().cpu()

    def perturbed_logits(self, feats: Features) -> torch.Tensor:
        """N × (r·C) perturbed logits ``W̃ z + b̃``."""
        return torch.addmm(self.w_tilde[1], self._z(feats), self.w_tilde[0].T)

    def perturbed_msp(self, logits: torch.Tensor) -> torch.Tensor:
        """Mean over the ``r`` perturbed heads of the maximum softmax probability."""
        n_classes = self.head[0].shape[0]  # type: ignore[index]
        blocks = logits.reshape(len(logits), self.repeats, n_classes)
        return blocks.softmax(-1).max(-1).values.mean(1)

    def fit(self, fit: Features, calib: Features | None = None) -> WeiPer:
        """Check the head, draw the perturbations; for KLD, the fit set's ranges and mean
        histograms."""
        if self.head is None:
            raise ConfigError(
                f"{self.name} needs the classifier head (needs={sorted(self.needs)}); call "
                "detector.bind(model, device) first"
            )
        weight, bias = self.head
        z = self._z(fit)
        if weight.shape[1] != z.shape[1]:
            raise NotApplicable(
                f"{self.name}: the last nn.Linear takes {weight.shape[1]}-d inputs, the "
                f"penultimate features are {z.shape[1]}-d"
            )
        n = min(len(fit), 64)
        err = head_error(lambda v: v @ weight.T + bias, z[:n], fit.logits[:n].float(), tol=1e-3)
        if err is not None:
            raise NotApplicable(
                f"{self.name}: the last nn.Linear does not map the penultimate features to the "
                f"logits (max error {err:.3g}); WeiPer perturbs that map"
            )
        self.w_tilde = perturbed_head(weight, bias, self.repeats, self.delta, self.seed)
        if self.kld:
            zt = self.perturbed_logits(fit)
            self.range_z = (float(z.min()), float(z.max()))
            self.range_zt = (float(zt.min()), float(zt.max()))
            self.mean_hist_z = sample_histograms(z, *self.range_z, self.n_bins).mean(0)
            self.mean_hist_zt = sample_histograms(zt, *self.range_zt, self.n_bins).mean(0)
        return self

    def _score(self, feats: Features) -> np.ndarray:
        """``-MSP̃`` or the KLD score: higher = more OOD."""
        with torch.no_grad():
            zt = self.perturbed_logits(feats)
            msp = self.perturbed_msp(zt)
            if not self.kld:
                return (-msp).double().numpy()
            h_z = sample_histograms(self._z(feats), *self.range_z, self.n_bins)
            h_z = smooth(h_z, self.smoothing)
            h_zt = smooth(
                sample_histograms(zt, *self.range_zt, self.n_bins), self.smoothing_perturbed
            )
            kl_z = symmetric_kl(self.mean_hist_z, h_z, self.eps)
            kl_zt = symmetric_kl(self.mean_hist_zt, h_zt, self.eps_perturbed)
            return (kl_z + self.lambda_1 * kl_zt - self.lambda_2 * msp).double().numpy()

    def params(self) -> dict[str, Any]:
        """The variant and its hyperparameters."""
        out: dict[str, Any] = {"kld": self.kld, "repeats": self.repeats, "delta": self.delta}
        if self.kld:
            out.update(
                n_bins=self.n_bins,
                lambda_1=self.lambda_1,
                lambda_2=self.lambda_2,
                smoothing=self.smoothing,
                smoothing_perturbed=self.smoothing_perturbed,
                eps=self.eps,
                eps_perturbed=self.eps_perturbed,
            )
        return out | {"seed": self.seed}

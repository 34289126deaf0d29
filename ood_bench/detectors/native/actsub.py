"""ActSub (Zöngür, Hesse, Roth, "Activation Subspaces for Out-of-Distribution Detection",
ICCV 2025): split the penultimate feature along the head's singular vectors.

With the SVD of the head's weight ``W = U S V^T`` (C×D) and ``P_k = V_{:, :k} V_{:, :k}^T``,
a feature ``x`` splits into a *decisive* part ``x P_k`` (what drives the logits) and an
*insignificant* part ``x (I - P_k)``. ``k`` (Eq. 4) is the index whose two parts have the most
equal mean norms over the ``fit`` features. Then (Eq. 7, 9, 10)

- ``S_dec(x) = logsumexp(W f(x P_k) + b)`` with ``f`` an activation-shaping rule (SCALE, Xu et
  al. ICLR 2024, or ASH-S) at pruning percentile ``p``;
- ``S_ins(x) = -log(1 - mean top-K cos(x (I - P_k), x_i (I - P_k)))`` over the fit features ``x_i``;
- ``S(x) = S_dec(x) * S_ins(x)^lambda`` (higher = ID; :meth:`ActSub._score` returns ``-S``).

Defaults are the authors' ResNet setting (``p = 95``, ``lambda = 2``, SCALE, ``K = 10``); their
APS search of ``p`` and ``lambda`` on OOD validation data is not run. Fed cached penultimate
features plus the head's weight and bias, read once at fit.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
from scipy.special import logsumexp

from ood_bench.detectors.base import Detector
from ood_bench.detectors.native.linear_head import as_numpy, read_head
from ood_bench.errors import ConfigError
from ood_bench.features import Features

SHAPINGS = ("scale", "ash_s")
CHUNK = 256  # rows per block of N×N_fit similarities / N×D coefficients


def shape_activations(x: np.ndarray, percentile: float, rule: str) -> np.ndarray:
    """SCALE (``x * exp(s1 / s2)``) or ASH-S (the top ``100 - percentile`` % kept, then the same
    factor), ``s1`` the sum of each row, ``s2`` the sum of its kept top entries."""
    n = x.shape[1]
    keep = n - int(np.round(n * percentile / 100.0))
    if keep < 1:
        raise ConfigError(f"percentile={percentile} keeps no entry of {n}-d features")
    top = np.argpartition(-x, keep - 1, axis=1)[:, :keep]
    pruned = np.zeros_like(x)
    np.put_along_axis(pruned, top, np.take_along_axis(x, top, axis=1), axis=1)
    factor = np.exp(x.sum(1) / pruned.sum(1))[:, None]
    return (x if rule == "scale" else pruned) * factor


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (as ``torch.nn.functional.normalize``: eps 1e-12)."""
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class ActSub(Detector):
    """ActSub: shaped energy of the decisive component times a power of the insignificant
    component's nearest-neighbour cosine score."""

    needs: ClassVar[frozenset[str]] = frozenset({"features", "model"})

    def __init__(
        self,
        name: str = "ob_actsub",
        percentile: float = 95.0,
        lmbd: float = 2.0,
        shaping: Literal["scale", "ash_s"] = "scale",
        k_neighbors: int = 10,
        split: int | None = None,
    ):
        """``percentile``: pruning percentile of the shaping rule (authors: 95 for ResNet,
        97.5 for ViT); ``lmbd``: exponent of the insignificant score (2 ResNet, 1 ViT);
        ``shaping``: scale or ash_s; ``k_neighbors``: the top-K cosine similarities averaged;
        ``split``: the subspace index k (null: Eq. 4 on the fit features)."""
        super().__init__(name)
        if shaping not in SHAPINGS:
            raise ConfigError(f"{name}: shaping={shaping!r}; choose from {SHAPINGS}")
        if not 0 <= percentile < 100 or k_neighbors < 1:
            raise ConfigError(
                f"{name}: percentile={percentile}, k_neighbors={k_neighbors}: need "
                "0 <= percentile < 100 and k_neighbors >= 1 (authors: 95, 10)"
            )
        self.percentile, self.lmbd, self.shaping = float(percentile), float(lmbd), shaping
        self.k_neighbors, self.split = int(k_neighbors), split
        self.k: int | None = None

    @staticmethod
    def find_split(vt: np.ndarray, z: np.ndarray) -> int:
        """Eq. 4: the index whose decisive and insignificant parts of ``z`` have the closest
        mean norms (the norm of a projection onto rows of ``vt`` is that of the coefficients);
        accumulated a chunk of rows at a time (N×D coefficients at once would not fit for
        ImageNet-sized fit sets)."""
        dec = np.zeros(vt.shape[0])
        ins = np.zeros(vt.shape[0])
        for i in range(0, len(z), CHUNK):
            cum = np.cumsum((z[i : i + CHUNK] @ vt.T) ** 2, axis=1)  # squared coefficients
            total = cum[:, -1:]
            before = np.concatenate([np.zeros_like(total), cum[:, :-1]], axis=1)  # idx 0..D-1
            dec += np.sqrt(np.maximum(before, 0)).sum(0)
            ins += np.sqrt(np.maximum(total - before, 0)).sum(0)
        return int(np.argmin(np.abs(dec - ins) / len(z)))

    def fit(self, fit: Features, calib: Features | None = None) -> ActSub:
        """Head SVD, the split index and the fit features' insignificant components."""
        self.w, self.b = read_head(self.name, self.model, fit)
        z = as_numpy(fit.penultimate)
        _, _, vt = np.linalg.svd(self.w, full_matrices=True)
        d = vt.shape[0]
        k = self.find_split(vt, z) if self.split is None else int(self.split)
        if not 0 <= k <= d:
            raise ConfigError(f"{self.name}: split={k} is outside 0..{d} for {d}-d features")
        self.k = k
        self.p_dec = vt[:k].T @ vt[:k]
        self.p_ins = vt[k:].T @ vt[k:]
        if len(z) < self.k_neighbors:
            raise ConfigError(
                f"{self.name}: {len(z)} fit samples for k_neighbors={self.k_neighbors}"
            )
        self.ref = unit_rows(z @ self.p_ins.T)
        return self

    def parts(self, feats: Features) -> tuple[np.ndarray, np.ndarray]:
        """``S_dec`` and ``S_ins`` of each sample (both higher = ID)."""
        if self.k is None:
            raise ConfigError(f"{self.name}: call fit before score")
        z = as_numpy(feats.penultimate)
        dec = shape_activations(z @ self.p_dec.T, self.percentile, self.shaping)
        s_dec = logsumexp(dec @ self.w.T + self.b, axis=1)
        q = unit_rows(z @ self.p_ins.T)
        mean_top = np.empty(len(z))
        for i in range(0, len(z), CHUNK):  # N×N_fit similarities a chunk at a time
            cos = q[i : i + CHUNK] @ self.ref.T
            top = -np.partition(-cos, self.k_neighbors - 1, axis=1)[:, : self.k_neighbors]
            mean_top[i : i + CHUNK] = top.mean(1)
        # a sample identical to a fit feature has cos 1: floored so the score stays finite
        s_ins = -np.log(np.maximum(1.0 - mean_top, 1e-300))
        return s_dec, s_ins

    def _score(self, feats: Features) -> np.ndarray:
        s_dec, s_ins = self.parts(feats)
        return -(s_dec * s_ins**self.lmbd)

    def params(self) -> dict[str, Any]:
        return {
            "percentile": self.percentile,
            "lmbd": self.lmbd,
            "shaping": self.shaping,
            "k_neighbors": self.k_neighbors,
            "split": self.split,
        }

    def recorded_params(self) -> dict[str, float]:
        return {"split": float(self.k)} if self.k is not None else {}

"""The embedding of rejected samples: tapped layers → normalised, concatenated, PCA-reduced."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np

from ood_bench.errors import ConfigError
from ood_bench.features import Features

log = logging.getLogger(__name__)

NORMALISE = ("none", "standardize", "l2", "standardize_l2")
PCA_FIT = ("id", "rejected")


def tap_layers(feats: Features, reduction: str) -> list[str]:
    """Tapped layers in network order, as feature keys (``<layer>.<reduction>`` or flat)."""
    from ood_bench.detectors.stat import layer_keys

    return layer_keys(feats, reduction, None)


def resolve_layers(feats: Features, layers: str | Sequence[str] | None, reduction: str) -> list:
    """Feature keys for a layer spec: a list of tap names (``penultimate`` allowed), or
    ``first`` (the first tapped layer), ``early`` (the first two), ``middle`` (all but the
    first and the last), ``all``."""
    keys = tap_layers(feats, reduction)
    if layers is None or isinstance(layers, str):
        return _named_layers(keys, layers or "all")
    return _listed_layers(feats, keys, layers)


def _named_layers(keys: list[str], spec: str) -> list[str]:
    """The tap keys a named spec (``first``, ``middle``, ``all``, ``penultimate``) stands for."""
    if spec == "first":
        return keys[:1]
    if spec == "early":
        return keys[:2]
    if spec == "middle":
        return keys[1:-1] if len(keys) > 2 else keys[-1:]
    if spec == "all":
        return keys
    if spec == "penultimate":
        return ["penultimate"]
    raise ConfigError(f"layers={spec!r}: give a list of taps or first / early / middle / all")


def _listed_layers(feats: Features, keys: list[str], layers: Sequence[str]) -> list[str]:
    """The feature keys of listed tap names (a layer name, a feature key or ``penultimate``)."""
    out = []
    base = {k.rpartition(".")[0] if k.rpartition(".")[2] in ("max", "mean") else k: k for k in keys}
    for name in layers:
        if name == "penultimate":
            out.append("penultimate")
        elif name in base:
            out.append(base[name])
        elif name in feats.taps:
            out.append(name)
        else:
            raise ConfigError(
                f"layer {name!r} is not tapped; tapped layers: {list(base)} (or penultimate)"
            )
    return out


def _block(feats: Features, key: str) -> np.ndarray:
    """One feature block (``penultimate`` or a tap key) as a float64 numpy array."""
    t = feats.penultimate if key == "penultimate" else feats.taps[key]
    return t.detach().cpu().double().numpy()


class Embedding:
    """Tap features → (standardised on ID ``fit``,) per-layer L2-normalised, PCA-reduced vectors.

    Each layer block gets the same weight (unit norm per block, or 1/sqrt(channels) when only
    standardised), so a wide layer does not drown a narrow one.
    """

    def __init__(
        self,
        layers: str | Sequence[str] | None = "middle",
        reduction: str = "max",
        normalise: str = "l2",
        dim: int | None = None,
        pca_fit: str = "id",
    ):
        """Validate the options; the layers and statistics are set by :meth:`fit`."""
        if normalise not in NORMALISE:
            raise ConfigError(f"embedding.normalise={normalise!r} is not one of {NORMALISE}")
        if pca_fit not in PCA_FIT:
            raise ConfigError(f"embedding.pca_fit={pca_fit!r} is not one of {PCA_FIT}")
        if reduction not in ("max", "mean"):
            raise ConfigError(f"embedding.reduction={reduction!r} is not max or mean")
        self.layers, self.reduction, self.normalise = layers, reduction, normalise
        self.dim, self.pca_fit = (int(dim) if dim else None), pca_fit

    def fit(self, fit: Features) -> Embedding:
        """Resolve the layers and fit the per-layer standardisation (and the ID PCA) on ``fit``."""
        self.keys = resolve_layers(fit, self.layers, self.reduction)
        blocks = [_block(fit, k) for k in self.keys]
        self.stats = [(b.mean(0), b.std(0) + 1e-6) for b in blocks]
        self.pca = None
        if self.dim and self.pca_fit == "id":
            self.pca = self._pca(self.base(fit))
        log.info(
            "novelty embedding: %s (%s), dim %s fitted on %s",
            self.keys,
            self.normalise,
            self.dim,
            self.pca_fit,
        )
        return self

    def _pca(self, x: np.ndarray):
        """A seeded PCA fitted on ``x``, its dimension capped by the data's size."""
        from sklearn.decomposition import PCA

        dim = min(self.dim or x.shape[1], x.shape[1], max(1, x.shape[0] - 1))
        return PCA(dim, random_state=0).fit(x)

    def base(self, feats: Features) -> np.ndarray:
        """Normalised, concatenated layer blocks (before PCA)."""
        out = []
        for key, (mu, sd) in zip(self.keys, self.stats, strict=True):
            b = _block(feats, key)
            if self.normalise in ("standardize", "standardize_l2"):
                b = (b - mu) / sd
            if self.normalise in ("l2", "standardize_l2"):
                b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
            else:
                b = b / np.sqrt(b.shape[1])
            out.append(b / np.sqrt(len(self.keys)))
        return np.hstack(out)

    def projector(self, rejected: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        """The map applied to base vectors: the ID PCA, one fitted on the rejected samples, or
        the identity (``dim: null``)."""
        if not self.dim or (self.pca_fit == "rejected" and len(rejected) < 3):
            return lambda x: x
        pca = self.pca if self.pca_fit == "id" else self._pca(rejected)
        return pca.transform

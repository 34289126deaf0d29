"""What a benchmark is: ID splits and named OOD sets, each with a spec naming its content."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

from ood_bench.errors import ConfigError
from ood_bench.hashing import hash_arrays

ID_SPLITS = ("train", "fit", "calib", "test")
OOD_GROUPS = ("near", "far")


@dataclass
class ImageSet:
    """A named set of images ``(x, y)``; ``y = -1`` marks unlabeled (e.g. OOD) samples.

    ``spec`` identifies the content (source, split, transform, fingerprint): it is part of
    every feature-cache key, so two sets with equal specs must hold the same data.
    """

    name: str
    dataset: Dataset
    spec: dict[str, Any]
    group: str = "id"

    def __len__(self) -> int:
        """Number of images."""
        return len(self.dataset)  # type: ignore[arg-type]


def tensor_set(
    name: str, x: np.ndarray, y: np.ndarray, spec: dict[str, Any], group: str = "id"
) -> ImageSet:
    """An in-memory set from arrays ``x`` (N×C×H×W float32) and ``y`` (N int)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    y = np.ascontiguousarray(y, dtype=np.int64)
    if x.ndim != 4:
        raise ValueError(f"{name}: expected x of shape N×C×H×W, got {x.shape}")
    if len(x) != len(y):
        raise ValueError(f"{name}: {len(x)} images but {len(y)} labels")
    full_spec = {
        **spec,
        "name": name,
        "n": len(x),
        "shape": list(x.shape[1:]),
        "fingerprint": hash_arrays(x, y),
    }
    return ImageSet(name, TensorDataset(torch.from_numpy(x), torch.from_numpy(y)), full_spec, group)


@dataclass
class Benchmark:
    """ID splits ``train | fit | calib | test`` and OOD sets (each in group ``near`` or ``far``).

    ``train`` trains the backbone only; ``fit`` is what detectors learn from (the same set as
    ``train`` unless a separate fit fraction is configured); ``calib`` is held-out ID data the
    backbone never saw, for conformal calibration; ``test`` is the ID test set.
    """

    name: str
    id_name: str
    classes: list[str]
    in_channels: int
    image_size: tuple[int, int]
    splits: dict[str, ImageSet]
    ood: list[ImageSet]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        """Number of ID classes."""
        return len(self.classes)

    def split(self, name: str) -> ImageSet:
        """The ID split ``name`` (train, fit, calib or test); unknown names are an error."""
        if name not in self.splits:
            raise ConfigError(
                f"benchmark {self.name!r} has no split {name!r}; splits: {sorted(self.splits)}"
            )
        return self.splits[name]

    def ood_set(self, name: str) -> ImageSet:
        """The OOD set called ``name``; unknown names are an error."""
        for s in self.ood:
            if s.name == name:
                return s
        raise ConfigError(
            f"benchmark {self.name!r} has no OOD set {name!r}; "
            f"OOD sets: {[s.name for s in self.ood]}"
        )

    def select_ood(self, names: list[str] | str | None) -> Benchmark:
        """Keep only the named OOD sets (``None`` keeps all, one name is one set); unknown names
        are an error."""
        if names is None:
            return self
        if isinstance(names, str):  # not its letters
            names = [names]
        return replace(self, ood=[self.ood_set(n) for n in names])

    def describe(self) -> str:
        """One log line: ID dataset, classes, input shape, split and OOD set sizes."""
        parts = [f"{k}={len(v)}" for k, v in self.splits.items()]
        ood = [f"{s.name}[{s.group}]={len(s)}" for s in self.ood]
        return (
            f"{self.name}: ID {self.id_name} ({self.num_classes} classes, "
            f"{self.in_channels}×{self.image_size[0]}×{self.image_size[1]}) "
            f"{' '.join(parts)}; OOD {' '.join(ood)}"
        )


def stratified_split(
    y: np.ndarray, fractions: dict[str, float], seed: int
) -> dict[str, np.ndarray]:
    """Deterministic, stratified partition of indices ``0..len(y)-1`` by named fractions.

    Fractions must sum to 1; each class is shuffled with ``seed`` and cut in the given order,
    so every split holds about the same class proportions.
    """
    total = sum(fractions.values())
    if any(f < 0 for f in fractions.values()) or not np.isclose(total, 1.0):
        raise ConfigError(f"split fractions must be >= 0 and sum to 1, got {fractions}")
    rng = np.random.default_rng(seed)
    out: dict[str, list[np.ndarray]] = {k: [] for k in fractions}
    names = list(fractions)
    bounds = np.cumsum([fractions[k] for k in names])
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        idx = idx[rng.permutation(len(idx))]
        cuts = np.round(bounds * len(idx)).astype(int)
        start = 0
        for k, stop in zip(names, cuts, strict=True):
            out[k].append(idx[start:stop])
            start = stop
    return {k: np.sort(np.concatenate(v)) for k, v in out.items()}

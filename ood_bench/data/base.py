"""What a benchmark is: ID splits and named OOD sets, each with a spec naming its content."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Subset, TensorDataset

from ood_bench.errors import ConfigError, DataError
from ood_bench.hashing import hash_arrays
from ood_bench.names import check_name, check_names

ID_SPLITS = ("train", "fit", "calib", "test")
OOD_GROUPS = ("near", "far")
# where the conformal calibration data come from (see Benchmark.calib_from_test)
CALIB_SOURCES = ("auto", "train", "test")
# the fraction of ID test that becomes calib when a benchmark names none (info calib_test_fraction)
DEFAULT_CALIB_TEST_FRACTION = 0.1


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

    def labels(self) -> np.ndarray:
        """The class label of every image, read without decoding images where possible."""
        return dataset_labels(self.dataset)

    def subset(self, idx: np.ndarray, name: str, spec: dict[str, Any]) -> ImageSet:
        """The images at positions ``idx``, called ``name``; the spec is this set's, updated with
        ``spec``, the new name and size, and a hash of ``idx`` (a distinct cache key)."""
        idx = np.asarray(idx, dtype=np.int64)
        full = {
            **self.spec,
            **spec,
            "name": name,
            "n": len(idx),
            "subset_of": self.spec.get("name", self.name),
            "subset_indices": hash_arrays(idx)[:16],
        }
        return ImageSet(name, Subset(self.dataset, idx.tolist()), full, self.group)


def dataset_labels(ds: Dataset) -> np.ndarray:
    """Labels of an ID set's dataset: its ``labels`` array, a TensorDataset's second tensor, a
    Subset's through its parent, else by reading every sample (slow for image files)."""
    if isinstance(ds, Subset):
        return dataset_labels(ds.dataset)[np.asarray(ds.indices, dtype=np.int64)]
    if isinstance(ds, TensorDataset) and len(ds.tensors) > 1:
        return ds.tensors[1].numpy().astype(np.int64)
    if hasattr(ds, "labels"):
        return np.asarray(ds.labels, dtype=np.int64)
    return np.asarray([int(ds[i][1]) for i in range(len(ds))], dtype=np.int64)  # type: ignore[arg-type]


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
    backbone never saw, for conformal calibration; ``test`` is the ID test set. A job that
    selects its detector's options (:mod:`ood_bench.selection`) also has ``val``, cut from
    ``test`` (:meth:`val_from_test`). ``validation``: declared validation OOD sets (the
    ``ood_validation`` protocol), never evaluated, disjoint from ``ood``.
    """

    name: str
    id_name: str
    classes: list[str]
    in_channels: int
    image_size: tuple[int, int]
    splits: dict[str, ImageSet]
    ood: list[ImageSet]
    info: dict[str, Any] = field(default_factory=dict)
    validation: list[ImageSet] = field(default_factory=list)

    def __post_init__(self) -> None:
        """Check, where every benchmark is built, what would otherwise give wrong rows: the
        benchmark's and each OOD set's names become file names, links and table cells
        (:func:`~ood_bench.names.check_name`), two OOD sets of one name would overwrite each
        other's rows, and an OOD set without images gives no scores."""
        check_name(self.name, "benchmark name")
        check_names([s.name for s in self.ood], "OOD set name", f"benchmark {self.name!r}")
        for s in self.ood:
            if len(s) == 0:
                raise DataError(
                    f"OOD set {s.name!r} of benchmark {self.name!r} holds no images, so it "
                    "would give no scores and no metrics. Fix: give it images (its size, e.g. "
                    "n / n_ood / max_samples / ood_max, at least 1; its classes present in its "
                    "source), or leave it out with ood_sets=[...]."
                )

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
        check_ood_selection(names, self.name)
        return replace(self, ood=[self.ood_set(n) for n in names])

    def calib_from_test(
        self, size: float | int | None = None, seed: int | None = None
    ) -> Benchmark:
        """A copy whose ``calib`` is a stratified, seeded part of ID ``test`` and whose ``test`` is
        the rest (``calib`` ∩ ``test`` = ∅): calibration data no backbone trained on this
        benchmark's train split can have seen, whatever trained it.

        ``size``: a fraction of test (0 < size < 1) or a number of images (an integer ≥ 1);
        None takes the benchmark's ``info["calib_test_fraction"]`` (image benchmarks: their
        ``calib_fraction``; digits: calib / (calib + test) of their fractions). ``seed``: the
        benchmark's seed by default. Both sets get specs of their own (new cache keys)."""
        test = self.split("test")
        n = len(test)
        size = (
            self.info.get("calib_test_fraction", DEFAULT_CALIB_TEST_FRACTION)
            if size is None
            else size
        )
        fraction = calib_test_fraction(size, n)
        seed = int(self.info.get("seed", 0) if seed is None else seed)
        parts = stratified_split(
            test.labels(), {"calib": fraction, "test": 1 - fraction}, seed + CALIB_SEED_OFFSET
        )
        if len(parts["calib"]) == 0 or len(parts["test"]) == 0:
            raise ConfigError(
                f"calib_test_size={size!r} leaves {len(parts['calib'])} calib and "
                f"{len(parts['test'])} test images of {self.name!r}'s {n} ID test images. Fix: "
                "a fraction strictly between 0 and 1, or a count smaller than the test split."
            )
        cut = {"calib_source": "test", "calib_test_fraction": fraction, "calib_seed": seed}
        stem = test.name.removesuffix("test").removesuffix("_") or self.name
        splits = dict(self.splits)
        splits["calib"] = test.subset(parts["calib"], f"{stem}_calib", {**cut, "split": "calib"})
        splits["test"] = test.subset(parts["test"], test.name, {**cut, "split": "test"})
        info = {**self.info, "calib_source": "test", "calib_test_fraction": fraction}
        return replace(self, splits=splits, info=info)

    def val_from_test(self, size: float = 0.2, max_images: int | None = None) -> Benchmark:
        """A copy with a ``val`` split: a stratified, seeded part of ID ``test`` (``size`` of
        it, at most ``max_images``), and ``test`` the rest. Cut from test, not from the training
        data, so that no backbone trained on this benchmark, no detector ``fit`` and no
        ``calib`` (cut before, from train or from test) has seen it: the selection's ID
        validation data. Both sets get specs of their own (new cache keys)."""
        test = self.split("test")
        n = len(test)
        fraction = float(size) if max_images is None else min(float(size), max_images / n)
        if not 0 < fraction < 1:
            raise ConfigError(
                f"selection.val_size={size!r} (val_max={max_images}) leaves no val or no test "
                f"split of {self.name!r}'s {n} ID test images. Fix: a fraction in (0, 1)."
            )
        seed = int(self.info.get("seed", 0)) + VAL_SEED_OFFSET
        parts = stratified_split(test.labels(), {"val": fraction, "test": 1 - fraction}, seed)
        if len(parts["val"]) == 0 or len(parts["test"]) == 0:
            raise ConfigError(
                f"selection.val_size={size!r} leaves {len(parts['val'])} val and "
                f"{len(parts['test'])} test images of {self.name!r}. Fix: a larger fraction."
            )
        cut = {"val_source": "test", "val_fraction": fraction, "val_seed": seed}
        stem = test.name.removesuffix("test").removesuffix("_") or self.name
        splits = dict(self.splits)
        splits["val"] = test.subset(parts["val"], f"{stem}_val", {**cut, "split": "val"})
        splits["test"] = test.subset(parts["test"], test.name, {**cut, "split": "test"})
        return replace(self, splits=splits, info={**self.info, "val_fraction": fraction})

    def describe(self) -> str:
        """One log line: ID dataset, classes, input shape, split and OOD set sizes."""
        parts = [f"{k}={len(v)}" for k, v in self.splits.items()]
        ood = [f"{s.name}[{s.group}]={len(s)}" for s in self.ood]
        return (
            f"{self.name}: ID {self.id_name} ({self.num_classes} classes, "
            f"{self.in_channels}×{self.image_size[0]}×{self.image_size[1]}) "
            f"{' '.join(parts)}; OOD {' '.join(ood)}"
        )


def check_ood_selection(names: list[str], bench: str) -> None:
    """``ood_sets`` naming one set twice would evaluate it twice and write its rows twice: a
    ConfigError naming the set(s) and the fix."""
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        once = ",".join(dict.fromkeys(names))
        raise ConfigError(
            f"ood_sets names the OOD set(s) {twice} of benchmark {bench!r} more than once; "
            f"each would be evaluated and its rows written twice. Fix: name each set once, "
            f"e.g. ood_sets=[{once}]."
        )


CALIB_SEED_OFFSET = 7_919  # the test → calib cut draws its own stream, apart from the others
VAL_SEED_OFFSET = 104_729  # the test → val cut (selection) likewise


def calib_test_fraction(size: float | int, n: int) -> float:
    """``calib_test_size`` as a fraction of ``n`` test images: a fraction 0 < size < 1 as is, an
    integer count ≥ 1 divided by ``n``; anything else is a ConfigError naming the fix."""
    fix = (
        "Fix: calib_test_size=<fraction between 0 and 1> (e.g. 0.1) or =<number of images> "
        f"(fewer than the {n} test images), or null for the benchmark's default."
    )
    if isinstance(size, bool) or not isinstance(size, (int, float)):
        raise ConfigError(f"calib_test_size={size!r} is not a number. {fix}")
    if 0 < size < 1:
        return float(size)
    if size >= 1 and float(size).is_integer() and size < n:
        return float(size) / n
    raise ConfigError(
        f"calib_test_size={size!r} is neither a fraction in (0, 1) nor a count "
        f"of images below {n}. {fix}"
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

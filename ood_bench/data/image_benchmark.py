"""Benchmarks on on-disk image sets (MNIST, CIFAR, ImageNet families) from a YAML description.

ID: the ``train`` split of the ID dataset is cut (stratified, seeded) into the backbone's
``train`` and the held-out ``calib``; ``test`` is the dataset's test split; ``fit`` is ``train``
(optionally capped at ``fit_max`` samples). When the backbone was not trained by the harness on
that ``train`` split, the job re-cuts ``calib`` from ``test`` instead (``calib_source``, see
:meth:`~ood_bench.data.base.Benchmark.calib_from_test`): ``calib_fraction`` of test by default.
OOD sets are listed with a name, a group (near/far) and a source; only the selected ones
(``ood_sets=[...]``) are loaded, so a preset runs on a machine that lacks some of its sets.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from ood_bench.data.base import Benchmark, ImageSet, stratified_split
from ood_bench.data.images import (
    NpzSet,
    Preprocess,
    dataset_targets,
    image_set,
    load_source,
)
from ood_bench.data.root import resolve_data_root
from ood_bench.errors import ConfigError

log = logging.getLogger(__name__)
SOURCE_KEYS = ("dataset", "imagefolder", "npz", "download", "splits")


class ArraySet(Dataset):
    """In-memory uint8 images (N×H×W or N×H×W×C) with labels, like an npz set."""

    def __init__(self, data: np.ndarray, targets: np.ndarray):
        self.data, self.targets = data, targets

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        """The ``i``-th raw image and its label."""
        return self.data[i], int(self.targets[i])


def noise_images(
    kind: str, n: int, shape: tuple[int, ...], mean: float, std: float, seed: int
) -> np.ndarray:
    """uint8 noise images in raw pixel space: ``uniform`` on 0..255, ``gaussian`` with the ID
    pixels' mean and std (in 0..255 units), rounded and clipped."""
    rng = np.random.default_rng(seed)
    if kind == "uniform":
        return rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
    if kind == "gaussian":
        return np.clip(np.round(rng.normal(mean, std, size=(n, *shape))), 0, 255).astype(np.uint8)
    raise ConfigError(f"unknown noise {kind!r}; choose uniform or gaussian")


def natural_photos(entry: dict[str, Any], raw_shape: tuple[int, ...], seed: int) -> np.ndarray:
    """``entry['n']`` uint8 crops of the natural photos inside scikit-learn and scikit-image
    (offline), in the ID raw shape (H×W grey or H×W×3 colour); ``exclude`` names scikit-image
    photos to leave out (e.g. ``chelsea``, a cat, for an ID set with a cat class). Colour crops
    keep the photos' own levels; grey ones are min-max stretched like the digits' patches."""
    from ood_bench.data import generated

    rgb = len(raw_shape) == 3 and raw_shape[2] == 3
    try:
        photos = generated.sklearn_photos(rgb) + generated.skimage_photos(
            rgb, tuple(entry.get("exclude") or ())
        )
    except ValueError as e:
        raise ConfigError(f"OOD set {entry['name']}: {e}") from e
    side = int(raw_shape[0])
    crops = generated.photo_patches(
        photos,
        int(entry.get("n", 1000)),
        side,
        255,
        seed,
        min_crop=side // 2,
        max_crop=3 * side,
        stretch=not rgb,
    )
    return crops.astype(np.uint8).reshape(len(crops), *raw_shape)


def _subsample(idx: np.ndarray, max_n: int | None, seed: int) -> np.ndarray:
    """At most ``max_n`` of the indices, drawn without replacement (seeded) and sorted."""
    if max_n is None or len(idx) <= max_n:
        return idx
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(idx, size=int(max_n), replace=False))


def _raw_shape(ds: Dataset) -> tuple[int, ...]:
    """Shape of the dataset's first raw image (before preprocessing)."""
    arr = np.asarray(ds[0][0])
    return tuple(arr.shape)


def planned_images(
    ood: list[dict[str, Any]],
    preprocess: dict[str, Any],
    ood_sets: list[str] | str | None = None,
    ood_max: int | None = None,
    **_: object,
) -> list[tuple[str, int, int, int]]:
    """What :func:`build_image_benchmark` generates in memory (noise and photo sets), read from
    its arguments before any image exists (the job's memory guard,
    :func:`ood_bench.pipeline.check_memory_plan`): per set, (name, images, bytes per image once
    built, extra bytes per image while generated). The raw shape is taken as the preprocess
    size and channels (the ID raw shape is known only once its data are open); sets read from
    disk are left out (loaded lazily)."""
    size = preprocess.get("size")
    if not size:
        return []
    side = (int(size), int(size)) if isinstance(size, int) else tuple(int(s) for s in size)
    px = side[0] * side[1] * int(preprocess.get("channels", 1))
    wanted = [ood_sets] if isinstance(ood_sets, str) else ood_sets
    out = []
    for entry in ood:
        if wanted is not None and entry.get("name") not in wanted:
            continue
        n = int(entry.get("n", 1000))
        if ood_max is not None:
            n = min(n, int(ood_max))
        if entry.get("noise") == "gaussian":
            out.append((entry["name"], n, px, 24 * px))  # float64 draw, round, clip
        elif "noise" in entry:
            out.append((entry["name"], n, px, 0))  # uint8 drawn directly
        elif "photos" in entry:
            out.append((entry["name"], n, px, 4 * px))  # float32 crops
    return out


def build_image_benchmark(
    name: str,
    id_set: dict[str, Any],
    ood: list[dict[str, Any]],
    preprocess: dict[str, Any],
    data_root: str | None = None,
    ood_sets: list[str] | str | None = None,
    calib_fraction: float = 0.1,
    fit_max: int | None = None,
    test_max: int | None = None,
    ood_max: int | None = None,
    seed: int = 0,
) -> Benchmark:
    """Build a benchmark from on-disk sets; see the module docstring and conf/benchmark/*.yaml.

    ``id_set``: a source (``dataset``/``imagefolder``/``npz``) and optional ``classes`` (the ID
    classes, relabelled 0..K-1 in that order). Each ``ood`` entry: ``name``, ``group``
    (near/far), then a source plus optional ``split`` (default test), ``classes`` and
    ``max_samples``; or ``noise: uniform|gaussian`` with ``n``; or ``photos: natural`` with
    ``n`` (crops of the photos inside scikit-learn and scikit-image, optional ``exclude``).
    """
    root = resolve_data_root(data_root, f"benchmark {name}")
    pre = Preprocess.from_cfg(preprocess)
    known = [o["name"] for o in ood]
    if isinstance(ood_sets, str):  # ood_sets=one_set: that set, not its letters
        ood_sets = [ood_sets]
    if ood_sets is not None:
        unknown = sorted(set(ood_sets) - set(known))
        if unknown:
            raise ConfigError(f"benchmark {name} has no OOD set(s) {unknown}; sets: {known}")
        ood = [o for o in ood if o["name"] in ood_sets]

    source = {k: v for k, v in id_set.items() if k in SOURCE_KEYS}
    train_ds, train_fp = load_source(source, "train", root)
    test_ds, test_fp = load_source(source, "test", root)
    classes = id_set.get("classes")
    y_train, y_test = dataset_targets(train_ds), dataset_targets(test_ds)
    classes = sorted(np.unique(y_train).tolist()) if classes is None else [int(c) for c in classes]
    remap = np.full(max(int(y_train.max()), int(y_test.max()), max(classes)) + 1, -1)
    remap[classes] = np.arange(len(classes))
    base_spec = {"benchmark": name, "id": source, "classes": classes, "seed": seed}

    tr_idx = np.flatnonzero(np.isin(y_train, classes))
    parts = stratified_split(
        remap[y_train[tr_idx]], {"train": 1 - calib_fraction, "calib": calib_fraction}, seed
    )
    splits: dict[str, ImageSet] = {}
    for split, sel in parts.items():
        idx = tr_idx[sel]
        splits[split] = image_set(
            f"{name}_{split}",
            "id",
            train_ds,
            idx,
            remap[y_train[idx]],
            pre,
            {**base_spec, "split": split, "fp": train_fp, "calib_fraction": calib_fraction},
        )
    te_idx = _subsample(np.flatnonzero(np.isin(y_test, classes)), test_max, seed + 1)
    splits["test"] = image_set(
        f"{name}_test",
        "id",
        test_ds,
        te_idx,
        remap[y_test[te_idx]],
        pre,
        {**base_spec, "split": "test", "fp": test_fp},
    )
    if fit_max and len(splits["train"]) > fit_max:
        fit_idx = _subsample(np.arange(len(splits["train"])), fit_max, seed + 2)
        tr = splits["train"].dataset
        splits["fit"] = image_set(
            f"{name}_fit",
            "id",
            train_ds,
            tr.indices[fit_idx],
            tr.labels[fit_idx],
            pre,
            {**base_spec, "split": "fit", "fp": train_fp, "max": fit_max},
        )
    else:
        splits["fit"] = splits["train"]

    raw_shape = _raw_shape(train_ds)
    ood_out: list[ImageSet] = []
    for k, entry in enumerate(ood):
        if entry.get("group") not in ("near", "far"):
            raise ConfigError(f"OOD set {entry.get('name')} needs group near or far")
        if ood_max is not None:  # one cap for every set (quick runs), on top of max_samples
            cap = min(int(ood_max), int(entry.get("max_samples") or ood_max))
            entry = {**entry, "max_samples": cap, "n": min(int(entry.get("n", cap)), cap)}
        ood_out.append(_ood_set(entry, root, pre, raw_shape, seed + 100 + k))
    bench = Benchmark(
        name=name,
        id_name=str(source.get("dataset", name)),
        classes=[str(c) for c in classes],
        in_channels=pre.channels,
        image_size=pre.size or tuple(raw_shape[:2]),
        splits=splits,
        ood=ood_out,
        info={
            "seed": seed,
            "root": str(root),
            "ood_available": known,
            "preprocess": pre.spec(),
            "calib_test_fraction": calib_fraction,  # calib_source=test: the same share of test
        },
    )
    log.info("built benchmark %s", bench.describe())
    return bench


def _ood_set(
    entry: dict[str, Any], root: Path, pre: Preprocess, raw_shape: tuple[int, ...], seed: int
) -> ImageSet:
    """One OOD set from its entry: generated noise of the ID raw shape, or a source's split
    filtered by ``classes`` and capped at ``max_samples``; labels are -1."""
    name, group = entry["name"], entry["group"]
    spec = {"ood": {k: v for k, v in entry.items() if k != "group"}, "seed": seed}
    if "photos" in entry:
        data = natural_photos(entry, raw_shape, seed)
        ds = ArraySet(data, np.full(len(data), -1))
        spec["fp"] = "generated"
        idx = np.arange(len(data))
    elif "noise" in entry:
        n = int(entry.get("n", 1000))
        mean, std = float(entry.get("pixel_mean", 127.5)), float(entry.get("pixel_std", 73.9))
        data = noise_images(entry["noise"], n, raw_shape, mean, std, seed)
        ds: Dataset = ArraySet(data, np.full(n, -1))
        spec["fp"] = "generated"
        idx = np.arange(n)
    else:
        source = {k: v for k, v in entry.items() if k in SOURCE_KEYS}
        ds, fp = load_source(source, entry.get("split", "test"), root)
        spec["fp"] = fp
        idx = np.arange(len(ds))
        if entry.get("classes") is not None:
            idx = idx[np.isin(dataset_targets(ds), [int(c) for c in entry["classes"]])]
        idx = _subsample(idx, entry.get("max_samples"), seed)
    return image_set(name, group, ds, idx, np.full(len(idx), -1), pre, spec)


__all__ = ["ArraySet", "NpzSet", "build_image_benchmark", "noise_images"]

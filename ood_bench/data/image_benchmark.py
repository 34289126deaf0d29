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
from torchvision.datasets import ImageFolder

from ood_bench.data.base import Benchmark, ImageSet, check_ood_selection, stratified_split
from ood_bench.data.images import (
    NpzSet,
    Preprocess,
    dataset_targets,
    image_set,
    load_source,
)
from ood_bench.data.root import resolve_data_root
from ood_bench.errors import ConfigError, DataError
from ood_bench.names import check_name, check_names

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


def _count(value: object, key: str, owner: str = "", cap: bool = True) -> int | None:
    """``value`` as a number of images ≥ 1 (None stays None: no cap). 0, negatives and
    non-numbers are a ConfigError naming the option and the fix: 0 would otherwise be ignored
    (``fit_max``) or give an empty set (``n``, ``max_samples``, ``ood_max``)."""
    if value is None and cap:
        return None
    whole = (
        not isinstance(value, bool)
        and isinstance(value, (int, float))
        and float(value).is_integer()
        and value >= 1
    )
    if not whole:
        alt = f", or {key}=null for no cap" if cap else ""
        raise ConfigError(
            f"{key}={value!r}{owner} is not a whole number of images ≥ 1. "
            f"Fix: {key}=<number ≥ 1> (e.g. {key}=1000){alt}."
        )
    return int(value)  # type: ignore[arg-type]


def _source_text(source: dict[str, Any], split: str, root: Path) -> str:
    """Where a split of a source is read from, for messages: its file or folder, else the
    torchvision dataset and split."""
    folder = dict(source.get("splits") or {}).get(split, split)
    for key in ("imagefolder", "npz"):
        if key in source:
            path = Path(str(source[key]).format(split=folder))
            return str(path if path.is_absolute() else root / path)
    return f"{source.get('dataset')} ({split} split)"


def _class_id(c: object, folders: list[str] | None, where: str) -> int:
    """One entry of a ``classes`` list as a label: an id ≥ 0, or (ImageFolder) a class folder's
    name, its position among the train split's sorted folders."""
    if folders is not None and isinstance(c, str) and c in folders:
        return folders.index(c)
    try:
        if isinstance(c, bool):
            raise TypeError
        cid = int(c)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        more = "..." if folders and len(folders) > 8 else ""
        known = f" (class folders: {folders[:8]}{more})" if folders else ""
        raise ConfigError(
            f"class {c!r} is neither a class id (an integer ≥ 0) nor a class folder of "
            f"{where}{known}. Fix: list class ids or folder names in classes."
        ) from None
    if cid < 0:
        raise ConfigError(f"class {c!r} in classes is negative. Fix: class ids are 0, 1, 2, ...")
    return cid


def _require_labels(y: np.ndarray, split: str, where: str) -> None:
    """ID images need their class: -1 (unlabeled) is for OOD sets only."""
    unlabeled = np.flatnonzero(y < 0)
    if len(unlabeled):
        raise DataError(
            f"{where}: {len(unlabeled)} of {len(y)} images of the ID {split} split are unlabeled "
            f"(label {int(y[unlabeled[0]])}, e.g. image {int(unlabeled[0])}). ID images need "
            "their class (the backbone trains on them, splits are stratified by class, ID "
            "accuracy is measured); -1 marks unlabeled images in OOD sets only. Fix: drop those "
            "images from the ID set, or give them as an OOD set (an entry of ood:)."
        )


def _align_folders(
    test: ImageFolder, folders: list[str], declared: bool, where: dict[str, str]
) -> np.ndarray:
    """The test split's labels in the train split's class index (matched by folder name): each
    ImageFolder numbers its own sorted folders, so a test/ lacking one class would shift every
    later one. A test folder unknown to train is an error unless the ID classes are declared
    (then it is left out, -1)."""
    extra = [c for c in test.classes if c not in folders]
    if extra and not declared:
        raise DataError(
            f"class folder(s) {extra} of the ID test split ({where['test']}) are not in the "
            f"train split ({where['train']}): the backbone never learns them, and their images "
            "would be dropped. Fix: add them to train, remove them from test, or declare the "
            "ID classes (benchmark.id_set.classes=[...]) to keep only those."
        )
    lut = np.array([folders.index(c) if c in folders else -1 for c in test.classes])
    return lut[dataset_targets(test)]


def _id_classes(
    declared: list[Any] | None,
    y_train: np.ndarray,
    y_test: np.ndarray,
    folders: list[str] | None,
    where: dict[str, str],
) -> list[int]:
    """The ID class labels, in order (they become 0..K-1). Undeclared: train's classes, and
    test must hold the same set (a class in only one split is an error naming it and the
    split). Declared: each must be in train; one absent from test is allowed (logged)."""

    def text(cs: list[int]) -> str:
        named = folders or []
        return ", ".join(f"{c} ({named[c]})" if c < len(named) else str(c) for c in cs)

    in_train = set(np.unique(y_train).tolist())
    in_test = set(np.unique(y_test[y_test >= 0]).tolist())
    if declared is None:
        only_test = sorted(in_test - in_train)
        if only_test:
            n = int(np.isin(y_test, only_test).sum())
            raise DataError(
                f"class(es) {text(only_test)} of the ID test split ({where['test']}) have no "
                f"image in the train split ({where['train']}): the backbone never learns them "
                f"and their {n} test images would be dropped. Fix: add training images of them, "
                "or declare the ID classes (benchmark.id_set.classes=[...]): only those are ID, "
                "other classes are left out (e.g. to give them as a near OOD set)."
            )
        only_train = sorted(in_train - in_test)
        if only_train:
            raise DataError(
                f"class(es) {text(only_train)} of the train split ({where['train']}) have no "
                f"image in the ID test split ({where['test']}): their accuracy and detection "
                "would never be measured. Fix: add test images of them, or declare the ID "
                "classes (benchmark.id_set.classes=[...]), which allows a class absent from test."
            )
        return sorted(in_train)
    classes = [_class_id(c, folders, where["train"]) for c in declared]
    twice = sorted({c for c in classes if classes.count(c) > 1})
    if twice:
        raise ConfigError(
            f"benchmark.id_set.classes lists class(es) {text(twice)} twice. Fix: list each once."
        )
    missing = [c for c in classes if c not in in_train]
    if missing:
        raise DataError(
            f"ID class(es) {text(missing)} of benchmark.id_set.classes have no image in the "
            f"train split ({where['train']}): the backbone would never learn them. Fix: add "
            "training images of them, or leave them out of id_set.classes."
        )
    absent = [c for c in classes if c not in in_test]
    if absent:
        log.warning(
            "ID class(es) %s have no image in the ID test split (%s); allowed, since the ID "
            "classes are declared: the labels follow the declared list",
            text(absent),
            where["test"],
        )
    return classes


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
    ood_validation: list[dict[str, Any]] | None = None,
) -> Benchmark:
    """Build a benchmark from on-disk sets; see the module docstring and conf/benchmark/*.yaml.

    ``id_set``: a source (``dataset``/``imagefolder``/``npz``) and optional ``classes`` (the ID
    classes, relabelled 0..K-1 in that order). Each ``ood`` entry: ``name``, ``group``
    (near/far), then a source plus optional ``split`` (default test), ``classes`` and
    ``max_samples``; or ``noise: uniform|gaussian`` with ``n``; or ``photos: natural`` with
    ``n`` (crops of the photos inside scikit-learn and scikit-image, optional ``exclude``).
    ``ood_validation``: entries of the same schema, the selection's validation OOD sets (never
    evaluated); one that shares a name or a source with any test OOD set is refused.
    """
    check_name(name, "benchmark name")
    known = check_names([o.get("name") for o in ood], "OOD set name", f"benchmark {name!r}")
    fit_max, test_max = _count(fit_max, "fit_max"), _count(test_max, "test_max")
    ood_max = _count(ood_max, "ood_max")
    root = resolve_data_root(data_root, f"benchmark {name}")
    pre = Preprocess.from_cfg(preprocess)
    if isinstance(ood_sets, str):  # ood_sets=one_set: that set, not its letters
        ood_sets = [ood_sets]
    if ood_sets is not None:
        ood_sets = [str(n) for n in ood_sets]
        check_ood_selection(ood_sets, name)
        unknown = sorted(set(ood_sets) - set(known))
        if unknown:
            raise ConfigError(f"benchmark {name} has no OOD set(s) {unknown}; sets: {known}")
        ood = [o for o in ood if o["name"] in ood_sets]

    source = {k: v for k, v in id_set.items() if k in SOURCE_KEYS}
    train_ds, train_fp = load_source(source, "train", root)
    test_ds, test_fp = load_source(source, "test", root)
    where = {s: _source_text(source, s, root) for s in ("train", "test")}
    y_train, y_test = dataset_targets(train_ds), dataset_targets(test_ds)
    _require_labels(y_train, "train", where["train"])
    _require_labels(y_test, "test", where["test"])
    declared = id_set.get("classes")
    folders = list(train_ds.classes) if isinstance(train_ds, ImageFolder) else None
    test_spec: dict[str, Any] = {}
    if folders is not None and isinstance(test_ds, ImageFolder) and test_ds.classes != folders:
        y_test = _align_folders(test_ds, folders, declared is not None, where)
        test_spec["class_index"] = "train"  # labels by train's folders (a new cache key)
    classes = _id_classes(declared, y_train, y_test, folders, where)
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
    if len(te_idx) == 0:
        raise DataError(
            f"the ID test split ({where['test']}) holds no image of the ID classes {classes}. "
            "Fix: add test images of them, or declare other classes (benchmark.id_set.classes)."
        )
    splits["test"] = image_set(
        f"{name}_test",
        "id",
        test_ds,
        te_idx,
        remap[y_test[te_idx]],
        pre,
        {**base_spec, "split": "test", "fp": test_fp, **test_spec},
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
        owner = f" (OOD set {entry['name']!r} of benchmark {name!r})"
        # checked, the entry left as written (it is part of the set's spec, a cache key)
        _count(entry.get("n", 1000), "n", owner, cap=False)
        max_samples = _count(entry.get("max_samples"), "max_samples", owner)
        if ood_max is not None:  # one cap for every set (quick runs), on top of max_samples
            cap = min(ood_max, max_samples or ood_max)
            entry = {**entry, "max_samples": cap, "n": min(int(entry.get("n", cap)), cap)}
        ood_out.append(_ood_set(entry, root, pre, raw_shape, seed + 100 + k))
    validation = [dict(v) for v in ood_validation or []]
    check_validation_disjoint(validation, ood, name)
    val_out = [
        _ood_set({"group": "far", **entry}, root, pre, raw_shape, seed + 900 + k)
        for k, entry in enumerate(validation)
    ]
    bench = Benchmark(
        name=name,
        id_name=str(source.get("dataset", name)),
        classes=[str(c) for c in classes],
        in_channels=pre.channels,
        image_size=pre.size or tuple(raw_shape[:2]),
        splits=splits,
        ood=ood_out,
        validation=val_out,
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


def source_of(entry: dict[str, Any]) -> tuple:
    """What an OOD entry reads: its file source (whatever the split: another split of a test
    set's dataset is the test set's distribution), or its generator (photos: the same photos
    whatever the crop; noise: the same distribution whatever the seed)."""
    if "photos" in entry:
        return ("photos", str(entry["photos"]))
    if "noise" in entry:
        return ("noise", str(entry["noise"]))
    return tuple(sorted((k, str(v)) for k, v in entry.items() if k in SOURCE_KEYS))


def check_validation_disjoint(
    validation: list[dict[str, Any]], ood: list[dict[str, Any]], bench: str
) -> None:
    """A ConfigError when a validation OOD entry shares a name or a source with a test OOD
    entry (OpenOOD v1.5: choosing on a test set's data is choosing on the test)."""
    test_names = {o.get("name") for o in ood}
    test_sources = {source_of(o): o.get("name") for o in ood}
    check_names(
        [v.get("name") for v in validation], "ood_validation set name", f"benchmark {bench!r}"
    )
    for v in validation:
        if v.get("name") in test_names:
            clash = f"the name of test OOD set {v.get('name')!r}"
        elif source_of(v) in test_sources:
            clash = f"its source {source_of(v)} with test OOD set {test_sources[source_of(v)]!r}"
        else:
            continue
        raise ConfigError(
            f"ood_validation set {v.get('name')!r} of benchmark {bench!r} shares {clash}: "
            "choosing options on it would choose them on test OOD data. Fix: a validation set "
            "from another source (another dataset, file or generator), or leave the test set "
            "out with ood_sets=[...]."
        )


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
            where = f"OOD set {name!r} ({_source_text(source, entry.get('split', 'test'), root)})"
            folders = list(ds.classes) if isinstance(ds, ImageFolder) else None
            wanted = [_class_id(c, folders, where) for c in entry["classes"]]
            targets = dataset_targets(ds)
            missing = sorted(set(wanted) - set(np.unique(targets).tolist()))
            if missing:
                raise DataError(
                    f"{where}: class(es) {missing} of its classes have no image in the source, "
                    "so the set would silently lack them. Fix: list classes present in it, or "
                    "check the file / split."
                )
            idx = idx[np.isin(targets, wanted)]
        idx = _subsample(idx, entry.get("max_samples"), seed)
    if len(idx) == 0:
        raise DataError(
            f"OOD set {name!r} holds no images, so it would give no scores and no metrics. "
            "Fix: give it images, or leave it out with ood_sets=[...]."
        )
    return image_set(name, group, ds, idx, np.full(len(idx), -1), pre, spec)


__all__ = ["ArraySet", "NpzSet", "build_image_benchmark", "noise_images"]

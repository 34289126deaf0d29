"""The embedded benchmarks: scikit-learn's 8×8 digits as ID, generated sets as OOD, offline."""

from __future__ import annotations

import logging

import numpy as np
from sklearn.datasets import load_digits

from ood_bench.data import generated
from ood_bench.data.base import (
    DEFAULT_CALIB_TEST_FRACTION,
    Benchmark,
    ImageSet,
    stratified_split,
    tensor_set,
)
from ood_bench.errors import ConfigError

log = logging.getLogger(__name__)

VMAX = 16.0  # digits' grey levels are integers 0..16
FAR_SETS = ("sklearn_photos", "skimage_photos", "uniform_noise", "gaussian_noise")
DATA_VERSION = 1  # bump when the generation below changes: it invalidates cached features


def _to_input(images: np.ndarray) -> np.ndarray:
    """N×8×8 grey levels in [0, 16] → N×1×8×8 float32 in [0, 1] (the network's input)."""
    return (images / VMAX).astype(np.float32)[:, None]


def calib_share(fractions: dict[str, float]) -> float:
    """calib / (calib + test) of the split fractions (0.375 for the default 0.15 / 0.25): the
    share of ``test`` that becomes ``calib`` when calibration data must come from test."""
    calib, test = float(fractions["calib"]), float(fractions["test"])
    return (
        round(calib / (calib + test), 12) if calib > 0 and test > 0 else DEFAULT_CALIB_TEST_FRACTION
    )


def planned_images(
    n_ood: int = 500, far_sets: list[str] | None = None, **_: object
) -> list[tuple[str, int, int, int]]:
    """What :func:`build_digits` generates in memory, read from its arguments before any image
    exists (the job's memory guard, :func:`ood_bench.pipeline.check_memory_plan`): per generated
    OOD set, (name, images, bytes per image once built, extra bytes per image while generated).
    The ID images (1,797 of 8×8) are left out: small."""
    far = list(FAR_SETS) if far_sets is None else [s for s in far_sets if s in FAR_SETS]
    px = 8 * 8
    return [(s, int(n_ood), 4 * px, 16 * px) for s in far]  # float32 held; float64 steps


def build_digits(
    name: str = "digits",
    id_classes: list[int] | None = None,
    near_classes: list[int] | None = None,
    far_sets: list[str] | None = None,
    fractions: dict[str, float] | None = None,
    n_ood: int = 500,
    seed: int = 0,
) -> Benchmark:
    """Digits benchmark. ``id_classes`` are the ID classes (default all ten); ``near_classes``
    become one near-OOD set (new classes, e.g. 6–9 in ``digits_open``); ``far_sets`` picks among
    photo patches and noise. ``fractions`` splits the ID data into train | fit | calib | test
    (``fit: 0`` means detectors fit on ``train``, as the libraries do). Deterministic in ``seed``.
    """
    id_classes = list(range(10)) if id_classes is None else [int(c) for c in id_classes]
    near_classes = [] if near_classes is None else [int(c) for c in near_classes]
    far_sets = list(FAR_SETS) if far_sets is None else list(far_sets)
    fractions = dict(fractions or {"train": 0.6, "fit": 0.0, "calib": 0.15, "test": 0.25})
    unknown = sorted(set(far_sets) - set(FAR_SETS))
    if unknown:
        raise ConfigError(f"unknown far OOD set(s) {unknown} for {name}; choose from {FAR_SETS}")
    if set(fractions) != {"train", "fit", "calib", "test"}:
        raise ConfigError(
            f"fractions must name train, fit, calib and test; got {sorted(fractions)}"
        )
    if far_sets and (isinstance(n_ood, bool) or not isinstance(n_ood, int) or n_ood < 1):
        raise ConfigError(
            f"n_ood={n_ood!r}: each far OOD set of {name} ({', '.join(far_sets)}) would hold "
            "that many images, and a set without images gives no scores. Fix: "
            "benchmark.n_ood=<number ≥ 1> (default 500), or leave the far sets out "
            "(benchmark.far_sets=[])."
        )
    if set(id_classes) & set(near_classes):
        raise ConfigError(
            f"classes {sorted(set(id_classes) & set(near_classes))} are both ID and near-OOD"
        )

    digits = load_digits()
    images, target = digits.images, digits.target
    id_mask = np.isin(target, id_classes)
    x_id, y_raw = images[id_mask], target[id_mask]
    # contiguous labels 0..K-1 in the order of id_classes (libraries such as Mahalanobis need them)
    remap = {c: i for i, c in enumerate(id_classes)}
    y_id = np.array([remap[c] for c in y_raw], dtype=np.int64)

    base = {
        "source": "sklearn.load_digits",
        "benchmark": name,
        "version": DATA_VERSION,
        "transform": "x/16",
        "id_classes": id_classes,
    }
    parts = stratified_split(y_id, fractions, seed)
    splits: dict[str, ImageSet] = {}
    for split, idx in parts.items():
        if split == "fit" and len(idx) == 0:
            continue
        splits[split] = tensor_set(
            f"{name}_{split}",
            _to_input(x_id[idx]),
            y_id[idx],
            {**base, "split": split, "seed": seed, "fractions": fractions},
        )
    splits.setdefault("fit", splits["train"])  # detectors learn from the backbone's training data

    train_px = x_id[parts["train"]]
    ood: list[ImageSet] = []
    if near_classes:
        near = images[np.isin(target, near_classes)]
        label = "_".join(str(c) for c in near_classes)
        ood.append(
            tensor_set(
                f"digits_{label}",
                _to_input(near),
                np.full(len(near), -1),
                {**base, "set": "near_classes", "classes": near_classes},
                group="near",
            )
        )
    ood_seed = 10_000 + seed  # independent of the split stream, still deterministic
    makers = {
        "sklearn_photos": lambda: generated.photo_patches(
            generated.sklearn_photos(), n_ood, 8, VMAX, ood_seed
        ),
        "skimage_photos": lambda: generated.photo_patches(
            generated.skimage_photos(), n_ood, 8, VMAX, ood_seed + 1
        ),
        "uniform_noise": lambda: generated.uniform_noise(n_ood, 8, VMAX, ood_seed + 2),
        "gaussian_noise": lambda: generated.gaussian_noise(
            n_ood, 8, VMAX, float(train_px.mean()), float(train_px.std()), ood_seed + 3
        ),
    }
    for s in far_sets:
        ood.append(
            tensor_set(
                s,
                _to_input(makers[s]()),
                np.full(n_ood, -1),
                {**base, "set": s, "seed": ood_seed},
                group="far",
            )
        )

    bench = Benchmark(
        name=name,
        id_name="digits"
        if len(id_classes) == 10
        else "digits_" + "".join(str(c) for c in id_classes),
        classes=[str(c) for c in id_classes],
        in_channels=1,
        image_size=(8, 8),
        splits=splits,
        ood=ood,
        # calib_source=test cuts calib from test keeping the fractions' calib : test proportion
        info={"seed": seed, "calib_test_fraction": calib_share(fractions)},
    )
    log.info("built benchmark %s", bench.describe())
    return bench

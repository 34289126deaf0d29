"""On-disk image sets: torchvision datasets in their own layout, ImageFolder roots, ``.npz``.

Every set is read with ``download=False`` unless asked; a missing set is an error that names the
folder looked in, the layout expected there and the fix. Images pass through one preprocessing
spec (resize, grayscale ↔ RGB, normalisation) so MNIST-family and CIFAR-family sets can be crossed.
"""

from __future__ import annotations

import hashlib
import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import datasets as tvd
from torchvision import transforms as T
from torchvision.datasets.folder import IMG_EXTENSIONS

from ood_bench.data.base import ImageSet
from ood_bench.data.root import require_dataset
from ood_bench.errors import ConfigError, DataError

log = logging.getLogger(__name__)

IMAGES_VERSION = 1  # bump when loading/preprocessing changes: it invalidates cached features


@dataclass(frozen=True)
class Preprocess:
    """Resize, channel conversion and normalisation applied to every image of a benchmark."""

    channels: int = 1
    size: tuple[int, int] | None = None
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)

    @classmethod
    def from_cfg(cls, cfg: dict[str, Any] | None) -> Preprocess:
        """From a ``preprocess`` config: 1 or 3 ``channels``, optional ``size`` (int or pair),
        one ``mean``/``std`` value per channel (defaults: 0 and 1)."""
        cfg = dict(cfg or {})
        ch = int(cfg.get("channels", 1))
        size = cfg.get("size")
        size = (int(size), int(size)) if isinstance(size, int) else (tuple(size) if size else None)
        mean = tuple(float(v) for v in cfg.get("mean", [0.0] * ch))
        std = tuple(float(v) for v in cfg.get("std", [1.0] * ch))
        if ch not in (1, 3):
            raise ConfigError(f"preprocess.channels must be 1 or 3, got {ch}")
        if len(mean) != ch or len(std) != ch:
            raise ConfigError(
                f"preprocess mean/std need {ch} values (one per channel), "
                f"got mean={list(mean)} std={list(std)}"
            )
        return cls(ch, size, mean, std)

    def transform(self) -> T.Compose:
        """The torchvision transform: to PIL, to grey or RGB, resize (if set), tensor, normalise."""
        ops: list[Any] = [T.Lambda(_to_pil), T.Lambda(_gray if self.channels == 1 else _rgb)]
        if self.size:
            ops.append(T.Resize(self.size, antialias=True))
        ops += [T.ToTensor(), T.Normalize(self.mean, self.std)]
        return T.Compose(ops)

    def spec(self) -> dict[str, Any]:
        """The settings as a plain dict (part of every set's spec)."""
        return {"channels": self.channels, "size": self.size, "mean": self.mean, "std": self.std}


def _to_pil(img: Any) -> Image.Image:
    """A PIL image as is, or a uint8 array as a PIL image; other dtypes are an error."""
    if isinstance(img, Image.Image):
        return img
    arr = np.asarray(img)
    if arr.dtype != np.uint8:
        raise DataError(f"expected uint8 images, got {arr.dtype}")
    return Image.fromarray(arr)


def _gray(img: Image.Image) -> Image.Image:
    """Convert to single-channel grey (PIL mode ``L``)."""
    return img.convert("L")


def _rgb(img: Image.Image) -> Image.Image:
    """Convert to three-channel RGB."""
    return img.convert("RGB")


class PreparedSet(Dataset):
    """A base dataset seen through an index subset, a transform and a label rule."""

    def __init__(
        self, base: Dataset, indices: np.ndarray, transform: T.Compose, labels: np.ndarray
    ):
        """``labels``: one per index, replacing the base dataset's own labels."""
        self.base, self.indices, self.transform = base, np.asarray(indices), transform
        self.labels = np.asarray(labels, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        """The transformed ``i``-th selected image and its assigned label."""
        img, _ = self.base[int(self.indices[i])]
        return self.transform(img), int(self.labels[i])


# name → (torchvision class, folder under the root, layout text, kwargs per split)
TORCHVISION: dict[str, tuple[str, str, str, dict[str, dict[str, Any]]]] = {
    "mnist": (
        "MNIST",
        "MNIST",
        "MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte",
        {"train": {"train": True}, "test": {"train": False}},
    ),
    "fashionmnist": (
        "FashionMNIST",
        "FashionMNIST",
        "FashionMNIST/raw/*-ubyte",
        {"train": {"train": True}, "test": {"train": False}},
    ),
    "kmnist": (
        "KMNIST",
        "KMNIST",
        "KMNIST/raw/*-ubyte",
        {"train": {"train": True}, "test": {"train": False}},
    ),
    "emnist_letters": (
        "EMNIST",
        "EMNIST",
        "EMNIST/raw/emnist-letters-*-ubyte",
        {
            "train": {"split": "letters", "train": True},
            "test": {"split": "letters", "train": False},
        },
    ),
    "cifar10": (
        "CIFAR10",
        "cifar-10-batches-py",
        "cifar-10-batches-py/{data_batch_1..5,test_batch}",
        {"train": {"train": True}, "test": {"train": False}},
    ),
    "cifar100": (
        "CIFAR100",
        "cifar-100-python",
        "cifar-100-python/{train,test,meta}",
        {"train": {"train": True}, "test": {"train": False}},
    ),
    "svhn": (
        "SVHN",
        "",
        "{train,test}_32x32.mat in the root",
        {"train": {"split": "train"}, "test": {"split": "test"}},
    ),
    "dtd": (
        "DTD",
        "dtd",
        "dtd/dtd/{images,labels}/...",
        {"train": {"split": "train"}, "test": {"split": "test"}},
    ),
    "places365": (
        "Places365",
        "",
        "val_256/ and places365_val.txt etc. in the root (small=True)",
        {
            "train": {"split": "train-standard", "small": True},
            "test": {"split": "val", "small": True},
        },
    ),
}


def _fingerprint_tensorlike(data: Any) -> str:
    """Short sha256 (16 hex digits) of an array's or tensor's bytes."""
    arr = data.numpy() if isinstance(data, torch.Tensor) else np.asarray(data)
    return hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()[:16]


def _fingerprint_files(root: Path, limit: int = 200_000) -> str:
    """Hash of relative paths and sizes of the files under ``root`` (content proxy, cheap)."""
    h = hashlib.sha256()
    for i, p in enumerate(sorted(q for q in root.rglob("*") if q.is_file())):
        if i >= limit:
            break
        h.update(f"{p.relative_to(root)}:{p.stat().st_size};".encode())
    return h.hexdigest()[:16]


def load_torchvision(name: str, split: str, root: Path, download: bool = False) -> Dataset:
    """A torchvision dataset from ``root`` in its own layout (``download=False`` by default)."""
    if name not in TORCHVISION:
        raise ConfigError(
            f"unknown dataset {name!r}; torchvision sets: {sorted(TORCHVISION)}, "
            "or use an imagefolder / npz set"
        )
    cls_name, folder, layout, kwargs = TORCHVISION[name]
    if split not in kwargs:
        raise ConfigError(f"{name} has no split {split!r}; splits: {sorted(kwargs)}")
    if not download and folder:
        require_dataset(root, folder, layout)
    try:
        return getattr(tvd, cls_name)(str(root), download=download, **kwargs[split])
    except (RuntimeError, FileNotFoundError, OSError) as e:
        raise DataError(
            f"{name} ({split}) could not be read from {root}: {e}. Expected layout: "
            f"{layout}. Fix: copy it there, pass download=true on a machine with "
            "internet, point data_root elsewhere, or drop the set "
            "(ood_sets=[...])."
        ) from e


def dataset_fingerprint(ds: Dataset, root: Path) -> str:
    """Content fingerprint: hash of in-memory arrays, else of the file list and sizes."""
    if hasattr(ds, "data") and not isinstance(ds.data, list):
        return _fingerprint_tensorlike(ds.data)
    base = Path(getattr(ds, "root", root))
    return _fingerprint_files(base if base.is_dir() else root)


def dataset_targets(ds: Dataset) -> np.ndarray:
    """Class labels of a dataset without decoding its images, where the dataset allows."""
    for attr in ("targets", "labels", "_labels"):
        if hasattr(ds, attr):
            return np.asarray(getattr(ds, attr), dtype=np.int64)
    if hasattr(ds, "imgs"):
        return np.asarray([y for _, y in ds.imgs], dtype=np.int64)
    return np.asarray([ds[i][1] for i in range(len(ds))], dtype=np.int64)


class NpzSet(Dataset):
    """``x`` uint8 N×H×W or N×H×W×C, ``y`` int (``-1`` = unlabeled) from one ``.npz`` file."""

    def __init__(self, path: Path):
        """Load ``x`` (and ``y``, else all -1) from ``path``, checking dtype and shape."""
        if not path.is_file():
            raise DataError(
                f"npz set {path} not found. Expected a file with arrays x (uint8 "
                "N×H×W[×C]) and y (int, -1 = unlabeled). Fix: create it, point "
                "data_root elsewhere, or drop the set (ood_sets=[...])."
            )
        try:
            with np.load(path) as z:  # allow_pickle=False: a pickle can run code, never loaded
                if "x" not in z:
                    raise DataError(f"{path} has no array 'x' (found {list(z.keys())})")
                self.data = z["x"]
                self.targets = z["y"] if "y" in z else np.full(len(self.data), -1)
        except ValueError as e:  # an object (pickled) array, or a pickle instead of an npz
            raise DataError(
                f"{path} holds an object array or a pickle ({e}), and pickled data is never "
                "loaded: it can run code. Fix: save plain arrays, e.g. np.savez(path, "
                "x=images.astype(np.uint8), y=labels.astype(np.int64))."
            ) from e
        except (OSError, zipfile.BadZipFile) as e:
            raise DataError(
                f"{path} could not be read as an npz file ({e}). Fix: write it with "
                "np.savez(path, x=..., y=...), or drop the set (ood_sets=[...])."
            ) from e
        if self.data.dtype != np.uint8 or self.data.ndim not in (3, 4):
            raise DataError(
                f"{path}: x must be uint8 N×H×W[×C], got {self.data.dtype} {self.data.shape}"
            )
        if len(self.data) == 0:
            raise DataError(
                f"{path} holds no images (x has shape {self.data.shape}): a set without images "
                "gives no scores. Fix: write the images into it, or drop the set "
                "(ood_sets=[...])."
            )
        self.targets = _integer_labels(path, self.targets, len(self.data))

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        """The ``i``-th raw uint8 image and its label."""
        return self.data[i], int(self.targets[i])


def _integer_labels(path: Path, y: np.ndarray, n: int) -> np.ndarray:
    """``y`` of an npz file as int64: one integer label per image, else a DataError naming the
    file, what is wrong and the fix (floats pass only when every value is a whole number)."""
    fix = "Fix: save y as an integer array with one class id per image (-1 = unlabeled), "
    fix += "e.g. np.savez(path, x=x, y=labels) with labels of dtype int64."
    if y.ndim != 1 or len(y) != n:
        raise DataError(
            f"{path}: y has shape {y.shape} but x holds {n} images; each image needs one "
            f"label, or images and classes would be dropped silently. {fix}"
        )
    if np.issubdtype(y.dtype, np.integer):
        return _class_ids(path, y.astype(np.int64), fix)
    if np.issubdtype(y.dtype, np.floating):
        bad = np.flatnonzero(~np.isfinite(y) | (y != np.round(y)))
        if not len(bad):
            return _class_ids(path, y.astype(np.int64), fix)
        raise DataError(
            f"{path}: y holds non-integer labels ({len(bad)} of {n}, e.g. y[{bad[0]}]="
            f"{y[bad[0]].item()}); class labels must be whole numbers (float arrays are accepted "
            f"only when every value is integral, such as 3.0), nothing is rounded. {fix}"
        )
    raise DataError(f"{path}: y must hold integer class labels, got dtype {y.dtype}. {fix}")


def _class_ids(path: Path, y: np.ndarray, fix: str) -> np.ndarray:
    """``y`` when every label is a class id ≥ 0 or -1 (unlabeled), else a DataError naming the
    file: a label such as -2 is neither, and indexing with it would count from the end."""
    bad = np.flatnonzero(y < -1)
    if len(bad):
        raise DataError(
            f"{path}: y holds negative labels other than -1 ({len(bad)} of {len(y)}, e.g. "
            f"y[{bad[0]}]={y[bad[0]]}); a label is a class id 0..K-1, or -1 for an unlabeled "
            f"image (OOD sets only). {fix}"
        )
    return y


def _empty_class_folders(path: Path) -> list[str]:
    """The class folders under ``path`` without one image file ImageFolder reads."""
    return [
        d.name
        for d in sorted(path.iterdir())
        if d.is_dir()
        and not any(f.is_file() and f.suffix.lower() in IMG_EXTENSIONS for f in d.rglob("*"))
    ]


def load_imagefolder(path: Path) -> tvd.ImageFolder:
    """An ImageFolder root ``path/<class>/<images>``; a missing root, no class folder or an
    empty class folder is a DataError naming the folder and the fix."""
    if not path.is_dir():
        raise DataError(
            f"ImageFolder root {path} not found. Expected layout: "
            f"{path}/<class>/<image files>. Fix: create it, point data_root "
            "elsewhere, or drop the set (ood_sets=[...])."
        )
    try:
        return tvd.ImageFolder(str(path))
    except FileNotFoundError as e:
        empty = _empty_class_folders(path)
        what = (
            f"class folder(s) {', '.join(str(path / c) for c in empty)} hold no image"
            if empty
            else f"it has no class folder with images ({e})"
        )
        raise DataError(
            f"ImageFolder root {path}: {what} (image files: {', '.join(IMG_EXTENSIONS)}); "
            f"every class folder needs at least one. Expected layout: {path}/<class>/<image "
            "files>. Fix: put images in each class folder or remove the empty ones, or drop "
            "the set (ood_sets=[...])."
        ) from e


def load_source(source: dict[str, Any], split: str, root: Path) -> tuple[Dataset, str]:
    """A raw dataset and its content fingerprint from a source spec.

    ``{"dataset": "mnist"}`` (torchvision), ``{"imagefolder": "relative/or/abs/dir"}`` or
    ``{"npz": "file.npz"}``; relative paths are under the data root, and ``{split}`` in a path is
    replaced by the split's folder/file name (``splits: {train: train, test: val}`` maps them).
    """
    split = dict(source.get("splits") or {}).get(split, split)
    if "dataset" in source:
        ds = load_torchvision(source["dataset"], split, root, bool(source.get("download", False)))
        return ds, dataset_fingerprint(ds, root)
    if "imagefolder" in source:
        path = Path(str(source["imagefolder"]).format(split=split))
        path = path if path.is_absolute() else root / path
        return load_imagefolder(path), _fingerprint_files(path)
    if "npz" in source:
        path = Path(str(source["npz"]).format(split=split))
        path = path if path.is_absolute() else root / path
        ds = NpzSet(path)
        return ds, _fingerprint_tensorlike(ds.data)
    raise ConfigError(f"a set needs one of dataset / imagefolder / npz, got {source}")


def image_set(
    name: str,
    group: str,
    base: Dataset,
    indices: np.ndarray,
    labels: np.ndarray,
    pre: Preprocess,
    spec: dict[str, Any],
) -> ImageSet:
    """An :class:`ImageSet` of ``base``'s images at ``indices`` with ``labels``, preprocessed;
    its spec adds the name, size, preprocessing, an index hash and the loader version."""
    full = {
        **spec,
        "name": name,
        "n": len(indices),
        "preprocess": pre.spec(),
        "indices": hashlib.sha256(np.asarray(indices, np.int64).tobytes()).hexdigest()[:16],
        "version": IMAGES_VERSION,
    }
    return ImageSet(name, PreparedSet(base, indices, pre.transform(), labels), full, group)

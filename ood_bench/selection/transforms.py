"""Validation outliers from held-out ID images alone (the ``id_only`` protocol).

Each transformation keeps something of an ID image and destroys what makes it an image of an ID
class, so a classifier trained on the ID classes has never seen its result:

- ``patch_permute``: the image cut into a 4×4 grid of patches, shuffled. Local statistics
  (colour, texture, stroke width) stay, the global shape goes: a texture-like outlier.
- ``pixel_permute``: every pixel moved to a random place (the same for all channels). Only the
  colour histogram stays: a noise-like outlier with the ID intensity distribution.
- ``blur``: a Gaussian low-pass with σ = side / 8. The coarse layout and mean colour stay,
  every edge and stroke goes: a smooth, structureless outlier.
- ``rotate90``, ``rotate180``: all local content stays, the objects' orientation is one no
  training image had (no backbone here trains with rotations). Caveat: a few classes are nearly
  symmetric (digits 0, 1, 8 under 180°; 6 and 9 swap), so these sets hold some ID-like images;
  they lower every candidate's AUROC alike.
- ``mix``: the pixel-wise average of two images of different classes: two objects at once,
  a semantically ambiguous, near-OOD outlier.
- ``mask``: a random square covering half of the image set to 0 (the mean pixel after the
  benchmark's normalisation): an occluded, partial object.

Excluded: horizontal flips, crops and small shifts (the training augmentation of the CIFAR
backbones, so their results *are* ID to the network), and small noise, brightness, contrast or
colour changes (label-preserving covariate shifts a detector should not flag: the robustness
benchmarks count flagging them as a false positive).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader

from ood_bench.data.base import ImageSet, tensor_set
from ood_bench.errors import ConfigError

Transform = Callable[[np.ndarray, np.ndarray, np.random.Generator], np.ndarray]
GRID = 4  # patch_permute: patches per side


def patch_permute(x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each image's GRID×GRID patches shuffled (a border that does not divide stays)."""
    n, _, h, w = x.shape
    ph, pw = h // GRID, w // GRID
    out = x.copy()
    for i in range(n):
        tiles = [
            x[i, :, r * ph : (r + 1) * ph, c * pw : (c + 1) * pw]
            for r in range(GRID)
            for c in range(GRID)
        ]
        for j, t in enumerate(rng.permutation(len(tiles))):
            r, c = divmod(j, GRID)
            out[i, :, r * ph : (r + 1) * ph, c * pw : (c + 1) * pw] = tiles[t]
    return out


def pixel_permute(x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each image's pixel positions permuted (all channels alike)."""
    n, c, h, w = x.shape
    flat = x.reshape(n, c, h * w)
    perm = np.argsort(rng.random((n, h * w)), axis=1)
    return np.take_along_axis(flat, perm[:, None, :], axis=2).reshape(x.shape)


def blur(x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A strong Gaussian low-pass: σ = side / 8 (nearest-edge padding)."""
    from scipy.ndimage import gaussian_filter

    sigma = max(x.shape[2], x.shape[3]) / 8
    return gaussian_filter(x, sigma=(0, 0, sigma, sigma), mode="nearest").astype(np.float32)


def rotate90(x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rotated by 90° (square images only)."""
    if x.shape[2] != x.shape[3]:
        raise ConfigError(
            f"the rotate90 transformation needs square images, got {x.shape[2]}×{x.shape[3]}. "
            "Fix: leave it out of the selection space's transforms."
        )
    return np.ascontiguousarray(np.rot90(x, 1, axes=(2, 3)))


def rotate180(x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rotated by 180°."""
    return np.ascontiguousarray(np.rot90(x, 2, axes=(2, 3)))


def mix(x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The average of each image and a random image of another class."""
    if len(np.unique(y)) < 2:
        raise ConfigError("the mix transformation needs validation images of two classes or more")
    other = np.empty(len(y), dtype=np.int64)
    for i, c in enumerate(y):
        pool = np.flatnonzero(y != c)
        other[i] = pool[rng.integers(len(pool))]
    return (0.5 * (x + x[other])).astype(np.float32)


def mask(x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random square of half the image's area set to 0 (the normalised mean pixel)."""
    n, _, h, w = x.shape
    s = max(1, int(round(np.sqrt(0.5 * h * w))))
    out = x.copy()
    for i in range(n):
        r, c = rng.integers(0, h - min(s, h) + 1), rng.integers(0, w - min(s, w) + 1)
        out[i, :, r : r + s, c : c + s] = 0.0
    return out


TRANSFORMS: dict[str, Transform] = {
    "patch_permute": patch_permute,
    "pixel_permute": pixel_permute,
    "blur": blur,
    "rotate90": rotate90,
    "rotate180": rotate180,
    "mix": mix,
    "mask": mask,
}


def images_of(data: ImageSet, batch_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """All images (as the backbone gets them: preprocessed) and labels of ``data``."""
    xs, ys = [], []
    for x, y in DataLoader(data.dataset, batch_size=batch_size, shuffle=False):
        xs.append(torch.as_tensor(x).float().numpy())
        ys.append(torch.as_tensor(y).numpy())
    return np.concatenate(xs), np.concatenate(ys).astype(np.int64)


def outlier_sets(val: ImageSet, names: list[str], seed: int) -> list[ImageSet]:
    """One validation outlier set per transformation in ``names``, made from the ``val`` images;
    each spec names the transformation, its seed and ``val``'s spec (its own cache key)."""
    unknown = [n for n in names if n not in TRANSFORMS]
    if unknown:
        raise ConfigError(
            f"unknown selection transform(s) {unknown}: choose from {list(TRANSFORMS)} "
            "(ood_bench/selection/transforms.py documents each)"
        )
    x, y = images_of(val)
    out = []
    for k, name in enumerate(names):
        rng = np.random.default_rng([seed, k])
        xt = TRANSFORMS[name](x, y, rng)
        spec = {"selection_transform": name, "seed": seed, "of": val.spec}
        out.append(tensor_set(f"val_{name}", xt, np.full(len(xt), -1), spec, group="far"))
    return out

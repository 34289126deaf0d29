"""OOD sets generated offline: natural-photo patches (photos inside the wheels) and noise.

Every generator returns uint-valued images on the ID set's value range ``[0, vmax]`` so a detector
cannot separate them by range alone.
"""

from __future__ import annotations

import numpy as np
from skimage.color import rgb2gray
from skimage.transform import resize

# scikit-image's natural photographs that ship inside its wheel (no pooch download needed).
SKIMAGE_PHOTOS = (
    "astronaut",
    "camera",
    "chelsea",
    "coffee",
    "coins",
    "moon",
    "rocket",
    "grass",
    "gravel",
    "brick",
)


def sklearn_photos(rgb: bool = False) -> list[np.ndarray]:
    """The two photos shipped inside scikit-learn (china, flower), as float in [0, 1]:
    grayscale (H×W), or H×W×3 with ``rgb``."""
    from sklearn.datasets import load_sample_images

    return [(_rgb if rgb else _gray)(img) for img in load_sample_images().images]


def skimage_photos(rgb: bool = False, exclude: tuple[str, ...] = ()) -> list[np.ndarray]:
    """scikit-image's bundled natural photos but ``exclude``, float in [0, 1]: grayscale, or
    H×W×3 with ``rgb`` (grey photos repeated on the three channels)."""
    import skimage.data

    unknown = sorted(set(exclude) - set(SKIMAGE_PHOTOS))
    if unknown:
        raise ValueError(f"no scikit-image photo(s) {unknown}; photos: {list(SKIMAGE_PHOTOS)}")
    names = [n for n in SKIMAGE_PHOTOS if n not in exclude]
    return [(_rgb if rgb else _gray)(getattr(skimage.data, name)()) for name in names]


def _gray(img: np.ndarray) -> np.ndarray:
    """An image as 2-D grayscale float64 in [0, 1] (RGB converted, 0–255 rescaled)."""
    img = np.asarray(img)
    if img.ndim == 3:
        img = rgb2gray(img[..., :3])
    img = img.astype(np.float64)
    if img.max() > 1.0:
        img = img / 255.0
    return img


def _rgb(img: np.ndarray) -> np.ndarray:
    """An image as H×W×3 float64 in [0, 1] (grey repeated, alpha dropped, 0–255 rescaled)."""
    img = np.asarray(img)
    img = np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img[..., :3]
    img = img.astype(np.float64)
    if img.max() > 1.0:
        img = img / 255.0
    return img


def photo_patches(
    photos: list[np.ndarray],
    n: int,
    size: int,
    vmax: float,
    seed: int,
    min_crop: int = 16,
    max_crop: int = 96,
    stretch: bool = True,
) -> np.ndarray:
    """``n`` random square crops (side in [min_crop, max_crop]) resized to ``size``×``size``.

    Each patch is min-max stretched to ``[0, vmax]`` and rounded, like the digits' integer
    grey levels (``stretch=False`` keeps the photo's own levels, for colour sets whose ID
    images are not stretched either). Flat patches (no contrast) are redrawn. Returns
    ``n × size × size`` float32 (``n × size × size × 3`` for H×W×3 photos).
    """
    rng = np.random.default_rng(seed)
    out = np.empty((n, size, size, *photos[0].shape[2:]), dtype=np.float32)
    i = 0
    while i < n:
        img = photos[rng.integers(len(photos))]
        side = int(rng.integers(min_crop, min(max_crop, *img.shape[:2]) + 1))
        r = int(rng.integers(0, img.shape[0] - side + 1))
        c = int(rng.integers(0, img.shape[1] - side + 1))
        patch = resize(img[r : r + side, c : c + side], (size, size), anti_aliasing=True)
        lo, hi = patch.min(), patch.max()
        if hi - lo < 0.05:  # a flat patch carries no structure; draw another
            continue
        out[i] = np.round(((patch - lo) / (hi - lo) if stretch else patch) * vmax)
        i += 1
    return out


def uniform_noise(n: int, size: int, vmax: float, seed: int) -> np.ndarray:
    """Integer grey levels uniform on ``0..vmax``."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, int(vmax) + 1, size=(n, size, size)).astype(np.float32)


def gaussian_noise(
    n: int, size: int, vmax: float, mean: float, std: float, seed: int
) -> np.ndarray:
    """Gaussian grey levels with the ID pixels' mean and std, rounded, clipped to [0, vmax]."""
    rng = np.random.default_rng(seed)
    x = rng.normal(mean, std, size=(n, size, size))
    return np.clip(np.round(x), 0, vmax).astype(np.float32)

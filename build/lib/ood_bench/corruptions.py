"""Covariate shift and adversarial OOD: corrupted copies of a benchmark's sets, seeded, on the fly.

Corruptions are the ImageNet-C families (Hendrycks & Dietterich, ICLR 2019) at severities 1–5:

- from the maintained ``imagecorruptions`` package (1.1.2): gaussian_noise, shot_noise,
  speckle_noise, defocus_blur, motion_blur, zoom_blur, contrast, brightness,
  saturate, jpeg_compression, pixelate, elastic_transform, snow, frost, spatter;
- replaced here because the package's versions fail on current scikit-image / numpy:
  ``gaussian_blur`` and ``glass_blur`` (its calls pass ``multichannel=`` that scikit-image
  removed; same sigmas and displacement schedule, ``channel_axis`` instead), and
  ``impulse_noise`` (the package's call draws from an unseeded generator, so the same image got
  a different corruption each time; same amounts, seeded). ``fog`` (uses the removed
  ``np.float_``) is not offered.

Small and grayscale inputs: the package needs RGB images of at least 32×32, so an image is
de-normalised to 0–255, replicated to 3 channels, upsampled to 32×32 (bilinear), corrupted,
downsampled back (anti-aliased) and averaged back to one channel, then re-normalised. Each image
gets its own seed (``seed``, set, index), so a corrupted set is the same in every job and its
features are cached like clean ones (the corruption is part of the set's spec, hence the key).

Adversarial OOD (``attack: fgsm|pgd``): OOD inputs are pushed toward ID by gradient steps that
raise the classifier's confidence in its predicted class (L∞ ball of radius ``eps`` in pixel
units of [0, 1]); a detector-agnostic attack, written here (a few lines) rather than pulled from
an attack library, because it needs only the frozen classifier.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import logging
import sys
import types
import warnings
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from ood_bench.data.base import Benchmark, ImageSet
from ood_bench.errors import ConfigError

log = logging.getLogger(__name__)

PACKAGE = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "speckle_noise",
    "defocus_blur",
    "motion_blur",
    "zoom_blur",
    "contrast",
    "brightness",
    "saturate",
    "jpeg_compression",
    "pixelate",
    "elastic_transform",
    "snow",
    "frost",
    "spatter",
)
REPLACED = ("impulse_noise", "gaussian_blur", "glass_blur")
CORRUPTIONS = PACKAGE + REPLACED
ATTACKS = ("fgsm", "pgd")
TARGETS = ("id", "ood", "both")
MIN_SIDE = 32  # imagecorruptions refuses smaller images


def _imagecorruptions():
    """Import ``imagecorruptions``; it calls ``pkg_resources.resource_filename`` for its frost
    pictures, and setuptools ≥ 81 no longer ships ``pkg_resources``: a one-function shim over
    ``importlib.resources`` stands in (only when the real module is absent)."""
    try:
        import pkg_resources  # noqa: F401
    except ImportError:
        shim = types.ModuleType("pkg_resources")
        shim.resource_filename = lambda pkg, name: str(  # type: ignore[attr-defined]
            importlib.resources.files(pkg.split(".")[0]) / name
        )
        sys.modules["pkg_resources"] = shim
    try:
        import imagecorruptions
    except ImportError as e:
        raise ConfigError(
            "corruptions need the imagecorruptions package: pip install imagecorruptions==1.1.2"
        ) from e
    return imagecorruptions


def _gaussian_blur(x: np.ndarray, severity: int) -> np.ndarray:
    """ImageNet-C gaussian blur of a 0–255 H×W×3 image (``channel_axis`` version)."""
    from skimage.filters import gaussian

    c = [1, 2, 3, 4, 6][severity - 1]
    out = gaussian(x / 255.0, sigma=c, channel_axis=-1)
    return np.clip(out, 0, 1) * 255


def _impulse_noise(x: np.ndarray, severity: int) -> np.ndarray:
    """ImageNet-C salt-and-pepper noise, seeded from the per-image seeded ``np.random``."""
    from skimage.util import random_noise

    c = [0.03, 0.06, 0.09, 0.17, 0.27][severity - 1]
    seed = int(np.random.randint(2**31 - 1))  # from the per-image seeded global generator
    return np.clip(random_noise(x / 255.0, mode="s&p", amount=c, rng=seed), 0, 1) * 255


def _glass_blur(x: np.ndarray, severity: int) -> np.ndarray:
    """ImageNet-C glass blur: blur, locally shuffle pixels, blur again (sigma, max_delta, iters)."""
    from skimage.filters import gaussian

    c = [(0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)][severity - 1]
    img = gaussian(x / 255.0, sigma=c[0], channel_axis=-1)
    h, w = img.shape[:2]
    for _ in range(c[2]):
        for i in range(h - c[1], c[1], -1):
            for j in range(w - c[1], c[1], -1):
                dx, dy = np.random.randint(-c[1], c[1], size=(2,))
                hp, wp = i + dy, j + dx
                img[i, j], img[hp, wp] = img[hp, wp].copy(), img[i, j].copy()
    return np.clip(gaussian(img, sigma=c[0], channel_axis=-1), 0, 1) * 255


def corrupt_image(img: np.ndarray, name: str, severity: int) -> np.ndarray:
    """Corrupt one uint8 H×W×3 image (any size: small ones go through 32×32 and back)."""
    if name not in CORRUPTIONS:
        raise ConfigError(f"unknown corruption {name!r}; available: {list(CORRUPTIONS)}")
    if not 1 <= severity <= 5:
        raise ConfigError(f"severity must be 1..5, got {severity}")
    h, w = img.shape[:2]
    small = min(h, w) < MIN_SIDE
    if small:
        t = torch.from_numpy(img).permute(2, 0, 1)[None].float()
        img = nn.functional.interpolate(
            t, size=(max(h, MIN_SIDE), max(w, MIN_SIDE)), mode="bilinear", align_corners=False
        )
        img = img[0].permute(1, 2, 0).clamp(0, 255).round().byte().numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if name == "gaussian_blur":
            out = _gaussian_blur(img, severity)
        elif name == "impulse_noise":
            out = _impulse_noise(img, severity)
        elif name == "glass_blur":
            out = _glass_blur(img, severity)
        else:
            out = _imagecorruptions().corrupt(img, corruption_name=name, severity=severity)
    out = np.asarray(out, dtype=np.float32)
    if small:
        t = torch.from_numpy(out).permute(2, 0, 1)[None]
        out = (
            nn.functional.interpolate(
                t, size=(h, w), mode="bilinear", antialias=True, align_corners=False
            )[0]
            .permute(1, 2, 0)
            .numpy()
        )
    return np.clip(out, 0, 255)


@dataclass(frozen=True)
class Normalization:
    """How network inputs relate to pixels: x = (pixel/255 − mean) / std per channel."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def to_pixels(self, x: torch.Tensor) -> np.ndarray:
        """A normalised C×H×W tensor as an H×W×C float array of 0–255 pixels."""
        m = torch.tensor(self.mean).view(-1, 1, 1)
        s = torch.tensor(self.std).view(-1, 1, 1)
        px = ((x * s + m) * 255).clamp(0, 255)
        return px.permute(1, 2, 0).numpy()

    def from_pixels(self, px: np.ndarray) -> torch.Tensor:
        """An H×W×C array of 0–255 pixels as a normalised C×H×W tensor."""
        m = torch.tensor(self.mean).view(-1, 1, 1)
        s = torch.tensor(self.std).view(-1, 1, 1)
        x = torch.from_numpy(np.ascontiguousarray(px, dtype=np.float32)).permute(2, 0, 1) / 255
        return (x - m) / s


class CorruptedSet(Dataset):
    """A dataset whose images pass through one corruption at one severity, seeded per image."""

    def __init__(self, base: Dataset, name: str, severity: int, seed: int, norm: Normalization):
        self.base, self.name, self.severity, self.seed, self.norm = base, name, severity, seed, norm

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        """The ``i``-th image, corrupted with its own seed and re-normalised, and its label."""
        x, y = self.base[i]
        px = self.norm.to_pixels(x)
        gray = px.shape[2] == 1
        rgb = np.repeat(px, 3, axis=2) if gray else px
        np.random.seed((self.seed * 1_000_003 + i) % 2**32)  # the package draws from np.random
        out = corrupt_image(rgb.round().astype(np.uint8), self.name, self.severity)
        out = out.mean(axis=2, keepdims=True) if gray else out
        return self.norm.from_pixels(out), y


@dataclass
class CorruptionConfig:
    """What to corrupt: ``name`` (``none``, a corruption or an attack), ``severity`` 1–5, the
    ``target`` sets (``id`` test split, ``ood`` sets, ``both``), attack ``eps``/``steps``."""

    name: str = "none"
    severity: int = 0
    target: str = "id"
    eps: float = 0.03
    steps: int = 10
    seed: int = 0

    @property
    def active(self) -> bool:
        """Whether any corruption or attack is requested (``name`` not ``none``)."""
        return self.name != "none"

    def check(self) -> None:
        """Raise a ConfigError for an unknown name or target or a bad severity."""
        if self.name not in ("none", *CORRUPTIONS, *ATTACKS):
            raise ConfigError(
                f"unknown corruption {self.name!r}; choose none, one of "
                f"{list(CORRUPTIONS)}, or an attack {list(ATTACKS)}"
            )
        if self.target not in TARGETS:
            raise ConfigError(f"corruption.target must be one of {TARGETS}, got {self.target!r}")
        if self.name in CORRUPTIONS and not 1 <= int(self.severity) <= 5:
            raise ConfigError(f"corruption.severity must be 1..5, got {self.severity}")
        if self.name in ATTACKS and self.target != "ood":
            raise ConfigError("attacks push OOD inputs toward ID: use corruption.target=ood")


def _corrupt_set(s: ImageSet, c: CorruptionConfig, norm: Normalization) -> ImageSet:
    """A corrupted copy of ``s``, seeded from ``c.seed`` and the set's name, its spec extended."""
    seed = int(hashlib.sha256(f"{c.seed}:{s.name}".encode()).hexdigest()[:8], 16)
    spec = {**s.spec, "corruption": c.name, "severity": int(c.severity), "corruption_seed": seed}
    return ImageSet(
        s.name, CorruptedSet(s.dataset, c.name, int(c.severity), seed, norm), spec, s.group
    )


def normalization_of(bench: Benchmark) -> Normalization:
    """The benchmark's input normalisation (from its preprocess info, else identity)."""
    pre = bench.info.get("preprocess")
    if pre:
        return Normalization(tuple(pre["mean"]), tuple(pre["std"]))
    return Normalization((0.0,) * bench.in_channels, (1.0,) * bench.in_channels)


def apply_corruption(bench: Benchmark, cfg: dict[str, Any] | CorruptionConfig) -> Benchmark:
    """A benchmark whose ID test split and/or OOD sets are corrupted (fit and calib never are:
    they describe the clean ID data the detector is calibrated on)."""
    c = cfg if isinstance(cfg, CorruptionConfig) else CorruptionConfig(**dict(cfg or {}))
    c.check()
    if not c.active or c.name in ATTACKS:
        return bench
    norm = normalization_of(bench)
    splits = dict(bench.splits)
    if c.target in ("id", "both"):
        splits["test"] = _corrupt_set(bench.splits["test"], c, norm)
    ood = [_corrupt_set(s, c, norm) if c.target in ("ood", "both") else s for s in bench.ood]
    log.info("corruption %s severity %d applied to %s", c.name, c.severity, c.target)
    return replace(bench, splits=splits, ood=ood, info={**bench.info, "corruption": vars(c)})


def attack_ood(
    bench: Benchmark, model: nn.Module, cfg: CorruptionConfig, device: str = "cpu"
) -> Benchmark:
    """Adversarial OOD: FGSM (one step) or PGD (``steps`` steps of eps/4, L∞ ball ``eps`` in
    pixel units of [0, 1]) on every OOD set, raising the classifier's confidence in its own
    prediction so the inputs look more ID. Precomputed once per set (they need gradients)."""
    if cfg.name not in ATTACKS:
        return bench
    norm = normalization_of(bench)
    std = torch.tensor(norm.std).view(1, -1, 1, 1).to(device)
    mean = torch.tensor(norm.mean).view(1, -1, 1, 1).to(device)
    model = model.to(device).eval()
    steps = 1 if cfg.name == "fgsm" else int(cfg.steps)
    step = cfg.eps if cfg.name == "fgsm" else cfg.eps / 4
    out = []
    for s in bench.ood:
        xs, ys = [], []
        for x, y in DataLoader(s.dataset, batch_size=256):
            x = x.to(device)
            px0 = x * std + mean  # pixels in [0, 1]
            px = px0.clone()
            with torch.no_grad():
                target = model(x).argmax(1)
            for _ in range(steps):
                px.requires_grad_(True)
                loss = nn.functional.cross_entropy(model((px - mean) / std), target)
                (grad,) = torch.autograd.grad(loss, px)
                with torch.no_grad():
                    px = px - step * grad.sign()  # lower loss = more confident = more ID
                    px = (px0 + (px - px0).clamp(-cfg.eps, cfg.eps)).clamp(0, 1)
            xs.append(((px.detach() - mean) / std).cpu())
            ys.append(y)
        spec = {**s.spec, "corruption": cfg.name, "eps": cfg.eps, "steps": steps}
        out.append(ImageSet(s.name, TensorDataset(torch.cat(xs), torch.cat(ys)), spec, s.group))
    log.info(
        "attack %s (eps %.3f, %d steps) applied to %d OOD sets", cfg.name, cfg.eps, steps, len(out)
    )
    return replace(bench, ood=out, info={**bench.info, "corruption": vars(cfg)})

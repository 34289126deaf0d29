"""ood-bench from Python, on your own model and data loaders (no Hydra, no config files).

    from ood_bench.api import detector, extract
    det = detector("stat_masf")                         # any option of conf/detector/
    det.fit(extract(model, fit_loader), calib=extract(model, calib_loader))
    scores = det.score(extract(model, test_loader))     # higher = more OOD

:func:`extract` runs one forward pass with hooks on the model's layers (found by one probe
pass, or named) and returns :class:`~ood_bench.features.Features`; every detector then reuses
them. With ``cache_dir`` the features are cached on disk under a hash of the weights and the
data, as in a sweep. Model detectors (ODIN-style, most OpenOOD postprocessors) also need the
network: ``det.bind(model)`` before ``fit``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ood_bench.backbones import Backbone, find_taps
from ood_bench.config import CONF_DIR, build
from ood_bench.data.base import ImageSet
from ood_bench.detectors.base import Detector
from ood_bench.errors import ConfigError
from ood_bench.features import FeatureExtractor, Features
from ood_bench.hashing import hash_arrays


def detector_options() -> list[str]:
    """The names :func:`detector` accepts (the YAML files of ``conf/detector/``)."""
    return sorted(p.stem for p in (CONF_DIR / "detector").glob("*.yaml"))


def detector(name: str, seed: int = 0, batch_size: int = 256, **params: Any) -> Detector:
    """The detector of option ``name`` (``conf/detector/<name>.yaml``), keys overridden by
    ``params`` (e.g. ``detector("pood_knn", params={"k": 10})``); ``seed`` and ``batch_size``
    fill the options that read the run's ``${seed}`` / ``${batch_size}``."""
    path = CONF_DIR / "detector" / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(
            f"unknown detector {name!r}. Fix: use one of conf/detector/: "
            f"{', '.join(detector_options())}"
        )
    root = OmegaConf.create({"seed": seed, "batch_size": batch_size})
    root.detector = OmegaConf.merge(OmegaConf.load(path), OmegaConf.create(params))
    return build(root.detector, "detector")


def wrap_model(
    model: nn.Module,
    example: torch.Tensor,
    name: str | None = None,
    taps: list[str] | None = None,
    penultimate: str | None = None,
    hash_weights: bool = True,
) -> Backbone:
    """A frozen classifier as a :class:`Backbone`: identity = sha256 of its weights (only what
    a feature cache needs: ``hash_weights=False`` leaves it empty); taps and penultimate layer
    named, else :func:`~ood_bench.backbones.find_taps` (declared, or found on ``example``)."""
    model.eval()
    found_taps, found_pen = find_taps(model, example)
    digest = ""
    if hash_weights:
        digest = hash_arrays(*(t.detach().cpu().numpy() for t in model.state_dict().values()))
    return Backbone(
        name or type(model).__name__,
        model,
        digest,
        Path(""),
        list(taps or found_taps),
        penultimate or found_pen,
    )


def _image_set(dataset: Dataset, name: str, fingerprint: bool) -> ImageSet:
    """The data as an :class:`ImageSet`; ``fingerprint`` hashes every sample into its spec."""
    spec: dict[str, Any] = {"name": name, "n": len(dataset)}  # type: ignore[arg-type]
    if fingerprint:  # the cache key must change with the content: hash every sample
        xs, ys = zip(*(dataset[i] for i in range(len(dataset))), strict=True)  # type: ignore[arg-type]
        spec["content"] = hash_arrays(
            torch.stack(list(xs)).numpy(), np.asarray([int(y) for y in ys])
        )
    return ImageSet(name, dataset, spec)


def extract(
    model: nn.Module | Backbone,
    data: DataLoader | Dataset,
    name: str = "data",
    cache_dir: str | Path | None = None,
    device: str = "cpu",
    batch_size: int = 256,
) -> Features:
    """Logits, penultimate features and every tap's pooled activations of ``data``.

    ``data`` yields ``(x, y)`` (``y = -1`` for unlabeled images). Without ``cache_dir`` nothing
    is written; with it, the features are cached under a hash of the weights and of every
    sample (read once to hash), so a second call on the same model and data is free.
    """
    dataset = data.dataset if isinstance(data, DataLoader) else data
    if isinstance(model, Backbone):
        backbone = model
    else:
        x0 = dataset[0][0].unsqueeze(0)  # type: ignore[index]
        backbone = wrap_model(model, x0.to(device), hash_weights=cache_dir is not None)
    images = _image_set(dataset, name, fingerprint=cache_dir is not None)
    if cache_dir is None:
        with tempfile.TemporaryDirectory() as tmp:
            feats = FeatureExtractor(backbone, tmp, device, batch_size).extract(images)
        feats.source = images
        return feats
    return FeatureExtractor(backbone, cache_dir, device, batch_size)(images)

"""The shared front half of every job: data, backbone, cached features.

Used by the runner and by analysis scripts, so both see the same splits and the same cache.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from ood_bench.backbones import Backbone
from ood_bench.config import build
from ood_bench.corruptions import CorruptionConfig, apply_corruption, attack_ood
from ood_bench.data.base import Benchmark
from ood_bench.data.root import resolve_data_root
from ood_bench.errors import ConfigError
from ood_bench.features import FeatureExtractor, Features

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global random generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class Prepared:
    """Everything a detector needs, built once per job: data, backbone and cached features."""

    bench: Benchmark
    backbone: Backbone
    extractor: FeatureExtractor
    fit: Features
    calib: Features
    test: Features
    ood: dict[str, Features]


def ood_set_names(value: object, bench: Benchmark) -> list[str] | None:
    """The ``ood_sets`` setting as a list of names: ``null`` = all (None), one name = that set;
    an empty list selects nothing to evaluate, which is an error."""
    if value is None:
        return None
    names = [value] if isinstance(value, str) else [str(n) for n in value]  # type: ignore[union-attr]
    if not names:
        available = list(bench.info.get("ood_available") or [s.name for s in bench.ood])
        example = available[0] if available else "..."
        raise ConfigError(
            f"ood_sets=[] selects no OOD set of benchmark {bench.name!r}, so there is nothing "
            f"to evaluate. Fix: name at least one, e.g. ood_sets=[{example}] (sets: "
            f"{available}), or ood_sets=null for all of them."
        )
    return names


def build_benchmark(cfg: DictConfig) -> Benchmark:
    """The job's benchmark with the selected OOD sets (``cfg.ood_sets``; null = all)."""
    if cfg.get("data_root"):  # a root that is set must exist, even when this benchmark is embedded
        resolve_data_root(cfg.data_root)
    bench = build(cfg.benchmark, "benchmark")
    return bench.select_ood(ood_set_names(cfg.get("ood_sets"), bench))


def prepare(cfg: DictConfig, bench: Benchmark | None = None) -> Prepared:
    """Benchmark → backbone (trained if missing) → features of every split and OOD set (cached).

    ``bench``: the job's benchmark when already built (:func:`build_benchmark`)."""
    seed_everything(int(cfg.seed))
    cache_dir = Path(cfg.cache_dir).expanduser().resolve()
    bench = build_benchmark(cfg) if bench is None else bench
    corruption = (
        CorruptionConfig(**OmegaConf.to_container(cfg.corruption, resolve=True))
        if cfg.get("corruption")
        else CorruptionConfig()
    )
    backbone = build(cfg.backbone, "backbone", benchmark=bench, cache_dir=str(cache_dir))
    bench = apply_corruption(bench, corruption)  # after the backbone: it trains on clean data
    bench = attack_ood(bench, backbone.model, corruption, str(cfg.device))
    extractor = FeatureExtractor(
        backbone, cache_dir, device=str(cfg.device), batch_size=int(cfg.batch_size)
    )
    fit_f, calib_f, test_f = (extractor(bench.split(s)) for s in ("fit", "calib", "test"))
    ood_f = {s.name: extractor(s) for s in bench.ood}
    if extractor.forward_samples == 0:
        log.info(
            "all %d feature sets read from cache %s: 0 forward passes",
            extractor.cache_hits,
            extractor.cache_dir,
        )
    else:
        log.info(
            "forward passes: %d images (%d sets extracted, %d from cache)",
            extractor.forward_samples,
            extractor.cache_misses,
            extractor.cache_hits,
        )
    return Prepared(bench, backbone, extractor, fit_f, calib_f, test_f, ood_f)

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

from ood_bench.backbones import Backbone, trained_on
from ood_bench.config import build
from ood_bench.corruptions import CorruptionConfig, apply_corruption, attack_ood
from ood_bench.data.base import CALIB_SOURCES, Benchmark, calib_test_fraction
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
    calib_source: str = "train"  # where calib came from: train (the benchmark's) or test


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


def calib_source_of(cfg: DictConfig) -> str:
    """The job's ``calib_source`` setting (auto, train or test); anything else names the fix."""
    return check_calib_source(cfg.get("calib_source", "auto"))


def check_calib_source(value: object) -> str:
    """``value`` when it is a ``calib_source`` (auto, train, test), else a ConfigError naming the
    fix."""
    if value not in CALIB_SOURCES:
        raise ConfigError(
            f"calib_source={value!r} is not one of {', '.join(CALIB_SOURCES)}. Fix: "
            "calib_source=auto (the default: the benchmark's calib split when the harness trained "
            "the backbone on its train split, else held-out ID test images), or force train or "
            "test (docs/statistical-detector.md#calibration-data)."
        )
    return str(value)


def choose_calib(
    bench: Benchmark,
    backbone: Backbone,
    source: str = "auto",
    size: float | int | None = None,
) -> tuple[Benchmark, str]:
    """The benchmark with its calibration data taken from where ``source`` says, and that place
    (``train`` or ``test``).

    ``train`` keeps the benchmark's ``calib`` split, cut from the ID data the harness trains on:
    held out only when the backbone was trained by the harness on this very ``train`` split
    (:func:`~ood_bench.backbones.trained_on`). ``test`` re-cuts ``calib`` from ID ``test``
    (``size``: :meth:`~ood_bench.data.base.Benchmark.calib_from_test`), which no backbone of this
    benchmark trains on. ``auto``: ``train`` when it is held out, else ``test``."""
    source = check_calib_source(source)
    held_out = trained_on(backbone, bench.split("train"))
    resolved = source if source != "auto" else ("train" if held_out else "test")
    why = (
        "backbone trained by the harness on the rest of this split"
        if held_out
        else "backbone not trained by the harness on this split"
    )
    if resolved == "test":
        bench = bench.calib_from_test(size)
        log.info(
            "calib: %d held-out ID test images (%s); ID test: the other %d",
            len(bench.split("calib")),
            why if source == "auto" else "calib_source=test",
            len(bench.split("test")),
        )
    elif held_out:
        log.info(
            "calib: %d images of the benchmark's calib split (%s)", len(bench.split("calib")), why
        )
    else:
        log.warning(
            "calib: %d images of the benchmark's calib split (calib_source=train), but backbone "
            "%s was not trained by the harness on this benchmark's train split: its training "
            "data may hold these images, so the conformal guarantee P(p <= alpha) <= alpha does "
            "not hold. Fix: calib_source=auto or calib_source=test",
            len(bench.split("calib")),
            backbone.name,
        )
    return bench, resolved


def cut_val(cfg: DictConfig, bench: Benchmark) -> Benchmark:
    """With a selection (:func:`ood_bench.selection.selection_space`), the benchmark with a
    ``val`` split cut from ID test; else as is."""
    from ood_bench.selection import selection_space

    space = selection_space(cfg)
    if space is None:
        return bench
    bench = bench.val_from_test(space.val_size, space.val_max)
    log.info(
        "selection: val split of %d held-out ID test images; ID test: the other %d",
        len(bench.split("val")),
        len(bench.split("test")),
    )
    return bench


def prepare(cfg: DictConfig, bench: Benchmark | None = None) -> Prepared:
    """Benchmark → backbone (trained if missing) → calibration data (:func:`choose_calib`) →
    features of every split and OOD set (cached).

    ``bench``: the job's benchmark when already built (:func:`build_benchmark`)."""
    source = calib_source_of(cfg)
    seed_everything(int(cfg.seed))
    cache_dir = Path(cfg.cache_dir).expanduser().resolve()
    bench = build_benchmark(cfg) if bench is None else bench
    if source != "train" and cfg.get("calib_test_size") is not None:  # fail before training
        calib_test_fraction(cfg.calib_test_size, len(bench.split("test")))
    corruption = (
        CorruptionConfig(**OmegaConf.to_container(cfg.corruption, resolve=True))
        if cfg.get("corruption")
        else CorruptionConfig()
    )
    backbone = build(cfg.backbone, "backbone", benchmark=bench, cache_dir=str(cache_dir))
    # after the backbone (what trained it decides), before corruption (calib stays clean)
    bench, calib_source = choose_calib(bench, backbone, source, cfg.get("calib_test_size"))
    bench = cut_val(cfg, bench)  # the selection's ID validation split, from test (after calib)
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
    return Prepared(bench, backbone, extractor, fit_f, calib_f, test_f, ood_f, calib_source)


def detector_aurocs(cfg: DictConfig, prep: Prepared) -> dict[str, float]:
    """Build ``cfg.detector`` (seeded, bound to the backbone when it needs the network), fit it
    on the prepared splits and return its AUROC per OOD set: the comparison scripts' one step."""
    from ood_bench.metrics import ood_metrics

    seed_everything(int(cfg.seed))
    det = build(cfg.detector, "detector")
    if "model" in det.needs:
        det.bind(prep.backbone.model, cfg.device)
    det.fit(prep.fit, prep.calib)
    s_id = det.score(prep.test, "test")
    return {n: ood_metrics(s_id, det.score(f, n))["auroc"] for n, f in prep.ood.items()}

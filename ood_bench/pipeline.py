"""The shared steps of every job: data, backbone, cached features (:func:`prepare`), then the
detector built, bound, seeded and fitted (:func:`fitted_detector`).

Used by the runner, the novelty job and analysis scripts, so all see the same splits, the same
cache and the same detector step.
"""

from __future__ import annotations

import importlib
import logging
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from ood_bench.backbones import Backbone, trained_on
from ood_bench.calibration import with_calibration
from ood_bench.config import build
from ood_bench.corruptions import CorruptionConfig, apply_corruption, attack_ood
from ood_bench.data.base import CALIB_SOURCES, Benchmark, ImageSet, calib_test_fraction
from ood_bench.data.root import resolve_data_root
from ood_bench.environment import check_device
from ood_bench.errors import ConfigError
from ood_bench.features import FeatureExtractor, Features

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global random generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def seed_of(cfg: DictConfig) -> int:
    """The job's seed as an int; a clear error for anything else (e.g. ``seed=abc``)."""
    try:
        return int(str(cfg.seed))
    except (TypeError, ValueError):
        raise ConfigError(f"seed must be an integer, got {cfg.seed!r}. Fix: e.g. seed=0") from None


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


MEMORY_FIX = (
    "Fix: fewer images (e.g. a smaller benchmark.n_ood, a noise set's n, ood_max, or ood_sets "
    "to drop sets), or raise max_memory_fraction (at most 1; null switches the guard off)."
)


def machine_memory() -> int:
    """This machine's physical memory in bytes (0 when the OS does not say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 0


def memory_limit(cfg: DictConfig) -> tuple[float, int] | None:
    """(``max_memory_fraction``, that share of this machine's memory in bytes), or None when the
    guard is off (null) or the machine's memory is unknown; a fraction outside (0, 1] is an
    error naming the fix."""
    fraction = cfg.get("max_memory_fraction", None)
    if fraction is None:
        return None
    if (
        isinstance(fraction, bool)
        or not isinstance(fraction, (int, float))
        or not 0 < fraction <= 1
    ):
        raise ConfigError(
            f"max_memory_fraction={fraction!r} is not a fraction in (0, 1]. Fix: e.g. "
            "max_memory_fraction=0.8 (the default), or null to switch the memory guard off."
        )
    total = machine_memory()
    return (float(fraction), int(fraction * total)) if total else None


def _gib(n: float) -> str:
    """Bytes as GiB with one decimal (MiB below one GiB)."""
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def check_memory(cfg: DictConfig, need: int, what: str) -> None:
    """A ConfigError naming ``max_memory_fraction`` when a job's estimated peak memory ``need``
    (bytes; ``what`` says of what) exceeds that share of the machine's memory: refused before
    allocating, rather than swapping or being killed a minute later."""
    limit = memory_limit(cfg)
    if limit is None or need <= limit[1]:
        return
    fraction, allowed = limit
    raise ConfigError(
        f"this job would need about {_gib(need)} of memory ({what}), more than "
        f"max_memory_fraction={fraction:g} of this machine's {_gib(machine_memory())} "
        f"({_gib(allowed)}). {MEMORY_FIX}"
    )


def planned_images(cfg: DictConfig) -> list[tuple[str, int, int, int]]:
    """The in-memory image sets the job's benchmark will generate — (name, images, bytes per
    image held, extra bytes per image while generated) — from the ``planned_images`` hook
    beside its builder (:mod:`ood_bench.data.digits`, :mod:`ood_bench.data.image_benchmark`);
    empty for a builder without one."""
    target = OmegaConf.select(cfg, "benchmark._target_")
    if not target:
        return []
    module_name = str(target).rpartition(".")[0]
    try:
        hook = getattr(importlib.import_module(module_name), "planned_images", None)
    except ImportError:
        return []
    if hook is None:
        return []
    params = OmegaConf.to_container(cfg.benchmark, resolve=True)
    params.pop("_target_", None)
    try:
        return list(hook(**params))
    except (TypeError, ValueError, KeyError):
        return []  # arguments the builder itself will reject, with its own message


def check_memory_plan(cfg: DictConfig) -> None:
    """Refuse a benchmark whose generated images alone exceed the memory guard, before any is
    made (a huge ``n_ood`` or noise ``n``: :func:`check_memory`)."""
    plan = planned_images(cfg)
    if not plan:
        return
    held = sum(n * b for _, n, b, _ in plan)
    peak = max(n * extra for _, n, _, extra in plan)
    big = max(plan, key=lambda p: p[1] * p[2])
    check_memory(
        cfg,
        held + peak,
        f"{len(plan)} generated OOD set(s), {_gib(held)} once built, the largest "
        f"{big[0]} with {big[1]:,} images",
    )


def check_feature_memory(
    cfg: DictConfig, extractor: FeatureExtractor, sets: list[ImageSet]
) -> None:
    """Refuse a job whose features (every split and OOD set, held at once, plus the copy made
    while the largest is concatenated) and generated images exceed the memory guard, before
    extracting: the bytes per image come from one image's features (:func:`check_memory`)."""
    if memory_limit(cfg) is None or not sets:
        return
    row = extractor.row_nbytes(sets[0])
    sizes = [len(s) for s in sets]
    images = sum(n * b for _, n, b, _ in planned_images(cfg))
    need = row * (sum(sizes) + max(sizes)) + images
    check_memory(
        cfg,
        need,
        f"features of {sum(sizes):,} images at {row:,} bytes each, plus {_gib(images)} of "
        "generated images",
    )


def check_calib_test_size(size: object, bench: Benchmark) -> None:
    """A ConfigError naming a size that works when ``calib_test_size`` would leave calib or test
    empty: the cut is stratified (each class gives its share, rounded), so a count below about
    half a test set's size over its largest class rounds to no image at all."""
    test = bench.split("test")
    n = len(test)
    fraction = calib_test_fraction(size, n)  # type: ignore[arg-type]
    counts = np.unique(test.labels(), return_counts=True)[1]
    if np.round(fraction * counts).sum() > 0 and np.round((1 - fraction) * counts).sum() > 0:
        return
    # the smallest count whose share of the largest class rounds up to one image (0.5 rounds
    # to even, i.e. down), and the largest leaving one image
    low = n // (2 * int(counts.max())) + 1
    high = n - low
    raise ConfigError(
        f"calib_test_size={size!r} leaves no image in calib or in test: the cut from the "
        f"{n} ID test images of {bench.name!r} is stratified over {len(counts)} classes (the "
        f"largest has {int(counts.max())} images), each class giving its share rounded, so "
        f"fewer than {low} images round to none. Fix: calib_test_size=<a count from {low} to "
        f"{high}>, a fraction between {low / n:.3g} and {high / n:.3g}, or null for the "
        "benchmark's default."
    )


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
    device = check_device(str(cfg.device))
    cache_dir = Path(cfg.cache_dir).expanduser().resolve()
    if bench is None:
        check_memory_plan(cfg)
        bench = build_benchmark(cfg)
    if source != "train" and cfg.get("calib_test_size") is not None:  # fail before training
        check_calib_test_size(cfg.calib_test_size, bench)
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
    extractor = FeatureExtractor(backbone, cache_dir, device=device, batch_size=int(cfg.batch_size))
    check_feature_memory(
        cfg, extractor, [*(bench.split(s) for s in ("fit", "calib", "test")), *bench.ood]
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


def fit_on_splits(detector: Any, prep: Prepared) -> None:
    """The default fit of :func:`fitted_detector`: on the ``fit`` and ``calib`` splits."""
    detector.fit(prep.fit, prep.calib)


def fitted_detector(
    cfg: DictConfig,
    prep: Prepared,
    *,
    calibrate: bool,
    fit: Callable[[Any, Prepared], None] = fit_on_splits,
    detector_cfg: DictConfig | None = None,
) -> Any:
    """The job's one detector step: seed the global generators (once per job; :func:`prepare`
    does not), build ``cfg.detector``, wrap it in the ``calibration`` option when the job wants
    p-values (``calibrate``: :func:`~ood_bench.calibration.with_calibration`), bind it to the
    backbone when it needs the network, and fit it (``fit``: how, by default
    :func:`fit_on_splits`; ``detector_cfg``: another config than ``cfg.detector``, e.g. the
    options a selection chose). The job, the novelty job and the cross-checks all go through
    here."""
    seed = seed_of(cfg)
    seed_everything(seed)
    detector = build(cfg.detector if detector_cfg is None else detector_cfg, "detector")
    if calibrate:
        detector = with_calibration(detector, cfg.get("calibration", "marginal"), seed)
    if "model" in detector.needs:
        detector.bind(prep.backbone.model, cfg.device)
    fit(detector, prep)
    return detector


def detector_aurocs(cfg: DictConfig, prep: Prepared) -> dict[str, float]:
    """``cfg.detector`` through :func:`fitted_detector` (no calibration layer) and its AUROC per
    OOD set: the comparison scripts' one step."""
    from ood_bench.metrics import ood_metrics

    det = fitted_detector(cfg, prep, calibrate=False)
    s_id = det.score(prep.test, "test")
    return {n: ood_metrics(s_id, det.score(f, n))["auroc"] for n, f in prep.ood.items()}

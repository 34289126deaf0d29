"""Score every candidate of a space on cached features and pick the best.

The criterion compares the validation ID split with each validation outlier set: the AUROC of
the candidate's score, averaged over the sets (``mean_auroc``) or its worst set (``min_auroc``);
ties (within 1e-9) go to the earlier candidate of the space, and the first candidate (the
current preset) stays unless another beats it by more than the space's ``margin``. Nothing here
reads a test OOD set.

Candidates of the ``stat_*`` family are scored without refitting a detector each: a layer's
p-values depend only on its feature key and the per-layer options (:data:`LAYER_FIELDS`), so
they are computed once per (key, options) and shared by every candidate that differs only in
the reduction's other keys, the taps, the output test or the combination rule. Any other
detector is built from its config with the overrides, ``fit_reference``-ed on ``fit`` and scored.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from ood_bench.config import build
from ood_bench.detectors.stat import StatDetector, StatOptions
from ood_bench.detectors.stat.layers import layer_array, layer_keys, tapped_layers
from ood_bench.detectors.stat.registry import statistic_class
from ood_bench.detectors.stat.statistics import P_FLOOR
from ood_bench.errors import ConfigError
from ood_bench.features import Features
from ood_bench.pvalues import combine_pvalues
from ood_bench.selection.space import Space, resolve_taps

log = logging.getLogger(__name__)

STAT_TARGET = "ood_bench.detectors.stat.StatDetector"
SELECTED_TARGET = "ood_bench.selection.stat_selected"
# the options a layer's p-values depend on (besides its feature key)
LAYER_FIELDS = ("statistic", "tail", "within", "reference", "center", "k", "normalize")
NOT_OPTIONS = ("_target_", "name", "selection", "protocol")


@dataclass
class Selection:
    """What a search chose: the overrides (taps resolved), the criterion's value, the table of
    every candidate's validation AUROCs, and how long it took."""

    space: str
    protocol: str
    criterion: str
    value: float
    overrides: dict[str, Any]
    label: str
    table: pd.DataFrame
    n_candidates: int
    wall_s: float
    val_sets: dict[str, int] = field(default_factory=dict)  # set name -> size (val_id first)

    def as_dict(self) -> dict[str, Any]:
        """Plain values for the YAML beside the results (the table's top 10 included)."""
        top = self.table.head(10)
        return {
            "space": self.space,
            "protocol": self.protocol,
            "criterion": self.criterion,
            "value": float(self.value),
            "chosen": self.label,
            "overrides": self.overrides,
            "n_candidates": self.n_candidates,
            "wall_s": float(self.wall_s),
            "val_sets": self.val_sets,
            "top": [
                {"candidate": r["candidate"], self.criterion: float(r[self.criterion])}
                for _, r in top.iterrows()
            ],
        }


def is_stat(det_cfg: DictConfig | dict) -> bool:
    """Whether the detector config is of the stat family (scored by the fast path)."""
    return det_cfg.get("_target_") in (STAT_TARGET, SELECTED_TARGET)


def stat_options(det_cfg: DictConfig | dict, overrides: dict[str, Any]) -> StatOptions:
    """The preset's options with ``overrides`` (validated like any preset's)."""
    base = (
        OmegaConf.to_container(det_cfg, resolve=True)
        if isinstance(det_cfg, DictConfig)
        else det_cfg
    )
    values = {k: v for k, v in dict(base).items() if k not in NOT_OPTIONS}
    return StatOptions.from_mapping({**values, **overrides})


class StatScorer:
    """The fast path: layer p-values memoised per (feature key, per-layer options)."""

    def __init__(self, fit: Features, sets: dict[str, Features]):
        """``sets``: the validation sets (``val_id`` first), all scored by every candidate."""
        self.fit, self.sets = fit, sets
        self.pred_fit = fit.predictions()
        self.num_classes = fit.logits.shape[1]
        self.pred = {n: f.predictions() for n, f in sets.items()}
        self.memo: dict[tuple, dict[str, np.ndarray]] = {}

    def column(self, key: str, opts: StatOptions, output: bool) -> dict[str, np.ndarray]:
        """Clipped p-values of every set for one layer test (fitted once, then memoised)."""
        name = opts.output_test if output else opts.statistic
        memo_key = (key, output, name, *(getattr(opts, f) for f in LAYER_FIELDS))
        if memo_key not in self.memo:
            stat = statistic_class(name, output=output).from_options(opts)
            stat.fit(layer_array(self.fit, key), self.pred_fit, self.num_classes)
            self.memo[memo_key] = {
                n: np.clip(stat.pvalues(layer_array(f, key), self.pred[n]), P_FLOOR, stat.p_ceil)
                for n, f in self.sets.items()
            }
        return self.memo[memo_key]

    def scores(self, opts: StatOptions) -> dict[str, np.ndarray] | None:
        """The combined statistic of every set (None: not an at-once candidate)."""
        if opts.across_mode != "at_once":
            return None
        StatDetector("check", **opts.as_dict()).check_fit_size(self.pred_fit, self.num_classes)
        keys = layer_keys(self.fit, opts.reduction, list(opts.layers or []), opts.include_logits)
        cols = [self.column(k, opts, False) for k in keys]
        if opts.output_test:
            cols.append(self.column("logits", opts, True))
        out = {}
        for n in self.sets:
            p = np.stack([c[n] for c in cols], axis=1)
            out[n] = -np.log(np.clip(combine_pvalues(p, opts.across, axis=1), P_FLOOR, 1.0))
        return out


def with_overrides(det_cfg: DictConfig, overrides: dict[str, Any]) -> DictConfig:
    """A detached copy of ``det_cfg`` with ``overrides`` (new keys allowed: a composed config
    is in struct mode)."""
    base = OmegaConf.create(OmegaConf.to_container(det_cfg, resolve=True))
    return OmegaConf.merge(base, OmegaConf.create(overrides))  # type: ignore[return-value]


def detector_scores(
    det_cfg: DictConfig, overrides: dict[str, Any], fit: Features, sets: dict[str, Features]
) -> dict[str, np.ndarray]:
    """The slow path: build the detector with ``overrides``, fit it on ``fit`` alone, score."""
    cfg = with_overrides(det_cfg, overrides)
    det = build(cfg, "detector")
    if "model" in det.needs:
        raise ConfigError(
            f"detector {det.name} needs the network at score time; the selection scores "
            "cached features only. Fix: select a feature detector."
        )
    det.fit_reference(fit)
    return {n: det.score(f, n) for n, f in sets.items()}


def auroc(s_id: np.ndarray, s_ood: np.ndarray) -> float:
    """AUROC of OOD (positive, higher score) against ID by ranks (Mann-Whitney U, ties
    halved): the same value as :func:`ood_bench.metrics.ood_metrics`'s, without its other
    metrics (the search computes thousands)."""
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate([s_id, s_ood]))
    n_id, n_ood = len(s_id), len(s_ood)
    return float((ranks[n_id:].sum() - n_ood * (n_ood + 1) / 2) / (n_id * n_ood))


def criterion_value(aurocs: list[float], criterion: str) -> float:
    """The criterion over the validation sets' AUROCs."""
    return float(np.mean(aurocs) if criterion == "mean_auroc" else np.min(aurocs))


def search(
    det_cfg: DictConfig,
    space: Space,
    fit: Features,
    val_id: Features,
    val_ood: dict[str, Features],
) -> Selection:
    """Score every candidate of ``space`` (overrides of ``det_cfg``) on the validation ID split
    against each validation outlier set; the best by the space's criterion."""
    if not val_ood:
        raise ConfigError("the selection has no validation outlier set to score against")
    t0 = time.perf_counter()
    sets = {"val_id": val_id, **val_ood}
    taps = list(tapped_layers(fit, "max"))
    stat = is_stat(det_cfg)
    scorer = StatScorer(fit, sets) if stat else None
    rows, best, best_value = [], None, -np.inf
    first: tuple[Any, float] | None = None
    candidates = space.candidates()
    for cand in candidates:
        overrides = resolve_taps(cand.as_dict, taps)
        scores = None
        if scorer is not None:
            scores = scorer.scores(stat_options(det_cfg, overrides))
        if scores is None:
            scores = detector_scores(det_cfg, overrides, fit, sets)
        aurocs = {n: auroc(scores["val_id"], scores[n]) for n in val_ood}
        value = criterion_value(list(aurocs.values()), space.criterion)
        rows.append({"candidate": cand.label(), space.criterion: value, **aurocs})
        if first is None:
            first = ((cand, overrides), value)
        if value > best_value + 1e-9:
            best, best_value = (cand, overrides), value
    assert best is not None and first is not None
    if best_value - first[1] <= space.margin:  # not clearly better than the current preset
        best, best_value = first
    table = pd.DataFrame(rows).sort_values(space.criterion, ascending=False, kind="stable")
    wall = time.perf_counter() - t0
    log.info(
        "selection (%s, %s): %d candidates in %.1f s; chosen %s (%s %.4f)",
        space.name,
        space.protocol,
        len(candidates),
        wall,
        best[0].label(),
        space.criterion,
        best_value,
    )
    return Selection(
        space.name,
        space.protocol,
        space.criterion,
        best_value,
        best[1],
        best[0].label(),
        table.reset_index(drop=True),
        len(candidates),
        wall,
        {n: len(f) for n, f in sets.items()},
    )

"""Scenarios and their trials: batches and streams drawn from a benchmark, scored and summed up.

The harness around the method (:mod:`ood_bench.novelty.decision`): each trial recalibrates on a
fresh part of the held-out ID pool, draws its batch, and asks the detector for a decision.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ood_bench.errors import ConfigError
from ood_bench.novelty.decision import NoveltyDetector
from ood_bench.novelty.evaluation import clustering_scores
from ood_bench.novelty.result import NoveltyResult
from ood_bench.novelty.sample import ID, NEW, Sample


@dataclass
class Scenario:
    """A repeated-trial experiment on one benchmark; see ``conf/novelty/scenario/*.yaml``.

    ``kind``: ``batch`` (one decision per trial) or ``stream`` (checks every ``check_every``
    samples, the new class appearing after ``change_at`` ID samples). ``new_sets``: OOD sets
    holding the new classes (``near`` = the benchmark's near sets; empty = a control).
    ``nuisance_sets``: outliers that are not a class (noise). ``n_id``: ID samples per batch or
    stream (null: all the trial's ID test data). ``benchmark``: the benchmark the scenario
    needs (``null``: any). ``other_domain``: the new sets are another domain (FashionMNIST for
    an MNIST network): a new class only when the detector's ``domain`` is ``any``, a control
    when it is ``same``.
    """

    name: str
    benchmark: str | None = None
    kind: str = "batch"
    new_sets: list[str] = field(default_factory=list)
    nuisance_sets: list[str] = field(default_factory=list)
    n_new: int = 400
    n_nuisance: int = 200
    new_classes_per_trial: int | None = None
    n_id: int | None = None
    trials: int | None = None
    change_at: int = 100
    new_rate: float = 0.3
    check_every: int = 10
    window: int | None = None
    spending: str = "bonferroni"
    other_domain: bool = False
    description: str = ""

    def __post_init__(self) -> None:
        """Validate ``kind`` and ``spending``; copy the set lists."""
        if self.kind not in ("batch", "stream"):
            raise ConfigError(f"scenario {self.name}: kind={self.kind!r} is not batch or stream")
        if self.spending not in ("bonferroni", "quadratic"):
            raise ConfigError(f"scenario {self.name}: spending must be bonferroni or quadratic")
        self.new_sets, self.nuisance_sets = list(self.new_sets), list(self.nuisance_sets)

    @property
    def has_new_class(self) -> bool:
        """Whether the batches hold samples of the new sets (not a control of ID data or
        nuisance alone)."""
        return bool(self.new_sets) and self.n_new > 0

    def is_novel(self, domain: str) -> bool:
        """Whether the batches hold a new class for a detector whose ``domain`` is
        ``same`` or ``any`` (another domain is one only under ``any``)."""
        return self.has_new_class and (not self.other_domain or domain == "any")


@dataclass
class TrialResult:
    """The outcome of one batch or stream trial of a scenario."""

    scenario: str
    trial: int
    truth: bool
    declared: bool
    n_new_est: int
    n_new_true: int
    n_rejected: int
    false_bound: int
    true_lower: int
    true_outliers: int  # actual non-ID samples among the rejections
    m: int
    scores: dict[str, float] = field(default_factory=dict)
    alarm_at: int | None = None  # stream: samples seen at the alarm
    delay: int | None = None  # stream: new-class samples seen at the alarm
    false_alarm: bool = False  # stream: alarm before the change


def _draw_new(
    rng: np.random.Generator, new: Sample, n: int, per_trial: int | None
) -> tuple[Sample, int]:
    """n samples of the new sets (of ``per_trial`` randomly chosen classes when labels are
    known); returns them and the number of distinct new classes among them."""
    if len(new) == 0 or n <= 0:
        return new.take(np.empty(0, dtype=np.int64)), 0
    pool = np.arange(len(new))
    known = (new.y >= 0).all()
    if known and per_trial:
        classes = np.unique(new.y)
        pick = rng.choice(classes, size=min(per_trial, len(classes)), replace=False)
        pool = np.flatnonzero(np.isin(new.y, pick))
    idx = rng.choice(pool, size=min(n, len(pool)), replace=False)
    drawn = new.take(idx)
    n_classes = len(np.unique(drawn.y)) if known else 1
    return drawn, n_classes


def _split_pool(
    rng: np.random.Generator, pool: Sample, n_calib: float | int
) -> tuple[Sample, Sample]:
    """Split the ID pool at random into calibration (``n_calib``: a fraction or a count) and
    test samples."""
    perm = rng.permutation(len(pool))
    n_cal = int(round(n_calib * len(pool))) if n_calib < 1 else int(n_calib)
    if not 0 < n_cal < len(pool):
        raise ConfigError(f"n_calib={n_calib} leaves no calibration or no test data")
    return pool.take(perm[:n_cal]), pool.take(perm[n_cal:])


def _trial_scores(res: NoveltyResult, batch: Sample) -> dict[str, float]:
    """ACC / NMI / ARI on the rejected samples of the new classes (known labels only)."""
    rej_kind = batch.kind[res.rejected]
    sel = rej_kind == NEW
    y = batch.y[res.rejected][sel]
    if not sel.any() or (y < 0).any():
        return {}
    return clustering_scores(y, res.labels[sel])


def run_batch_trial(
    nd: NoveltyDetector,
    sc: Scenario,
    pool: Sample,
    new: Sample,
    nuisance: Sample,
    n_calib: float | int,
    rng: np.random.Generator,
    trial: int,
) -> tuple[TrialResult, NoveltyResult, Sample]:
    """One batch trial: calibrate on part of the ID pool, then decide on a shuffled batch of
    the remaining ID samples, drawn new-class samples and nuisance outliers.

    Returns the trial's result, the detector's result and the batch."""
    cal, test_id = _split_pool(rng, pool, n_calib)
    if sc.n_id:
        test_id = test_id.take(rng.permutation(len(test_id))[: sc.n_id])
    drawn, n_classes = _draw_new(rng, new, sc.n_new if sc.new_sets else 0, sc.new_classes_per_trial)
    noise = (
        nuisance.take(
            rng.choice(len(nuisance), size=min(sc.n_nuisance, len(nuisance)), replace=False)
        )
        if len(nuisance)
        else nuisance
    )
    batch = Sample.concat([test_id, drawn, noise])
    batch = batch.take(rng.permutation(len(batch)))
    nd.calibrate(cal)
    res = nd.discover(batch)
    truth = len(drawn) > 0 and sc.is_novel(nd.domain)
    tr = TrialResult(
        scenario=sc.name,
        trial=trial,
        truth=truth,
        declared=res.new_class,
        n_new_est=res.n_new,
        n_new_true=n_classes if truth else 0,
        n_rejected=res.n_rejected,
        false_bound=res.false_bound,
        true_lower=res.true_lower,
        true_outliers=int((batch.kind[res.rejected] != ID).sum()),
        m=res.m,
        scores=_trial_scores(res, batch),
    )
    return tr, res, batch


def run_stream_trial(
    nd: NoveltyDetector,
    sc: Scenario,
    pool: Sample,
    new: Sample,
    n_calib: float | int,
    rng: np.random.Generator,
    trial: int,
) -> TrialResult:
    """ID samples, then after ``change_at`` samples a new class mixed in at ``new_rate``.

    Checks after every ``check_every`` samples on the last ``window`` samples (all so far when
    null), each at level ``level / J`` (Bonferroni over the J planned checks) or
    ``level · 6 / (π² j²)`` (``quadratic``: open-ended), so the probability of any alarm
    before the change is <= level (union bound).
    """
    cal, ids = _split_pool(rng, pool, n_calib)
    if sc.n_id:  # the stream's ID samples (the rest of the pool is not used)
        ids = ids.take(np.arange(min(sc.n_id, len(ids))))
    stream = _stream(rng, sc, ids, new)
    nd.calibrate(cal)
    alarm_at, delay = _first_alarm(nd, sc, stream)
    after = alarm_at is not None and alarm_at > sc.change_at
    return TrialResult(
        scenario=sc.name,
        trial=trial,
        truth=True,
        declared=after,
        n_new_est=0,
        n_new_true=1,
        n_rejected=0,
        false_bound=0,
        true_lower=0,
        true_outliers=0,
        m=len(stream),
        alarm_at=alarm_at,
        delay=delay if after else None,
        false_alarm=alarm_at is not None and not after,
    )


def _stream(rng: np.random.Generator, sc: Scenario, ids: Sample, new: Sample) -> Sample:
    """``change_at`` ID samples, then the other ID samples shuffled with new-class samples
    drawn at ``new_rate``."""
    if sc.change_at >= len(ids):
        raise ConfigError(f"scenario {sc.name}: change_at={sc.change_at} >= {len(ids)} ID samples")
    n_post_id = len(ids) - sc.change_at
    n_post_new = int(round(n_post_id * sc.new_rate / (1 - sc.new_rate)))
    drawn, _ = _draw_new(rng, new, n_post_new, sc.new_classes_per_trial or 1)
    post = Sample.concat([ids.take(np.arange(sc.change_at, len(ids))), drawn])
    post = post.take(rng.permutation(len(post)))
    return Sample.concat([ids.take(np.arange(sc.change_at)), post])


def _check_level(level: float, sc: Scenario, j: int, n_checks: int) -> float:
    """The level of the j-th of ``n_checks`` checks: the union bound over them is ``level``."""
    if sc.spending == "bonferroni":
        return level / n_checks
    return level * 6 / (math.pi**2 * j**2)


def _first_alarm(
    nd: NoveltyDetector, sc: Scenario, stream: Sample
) -> tuple[int | None, int | None]:
    """Samples seen and new-class samples seen at the first check that declares a new class
    (None, None: no alarm)."""
    checks = np.arange(sc.check_every, len(stream) + 1, sc.check_every)
    for j, t in enumerate(checks, start=1):
        lvl = _check_level(nd.level, sc, j, len(checks))
        start = 0 if sc.window is None else max(0, t - sc.window)
        if nd.discover(stream.take(np.arange(start, t)), level=lvl).new_class:
            return int(t), int((stream.kind[:t] == NEW).sum())
    return None, None


def summarise(trials: list[TrialResult], sc: Scenario) -> dict[str, float]:
    """Rates and means over the trials of one scenario (the job's metric values)."""
    out: dict[str, float] = {"n_trials": float(len(trials))}
    out.update(_stream_summary(trials) if sc.kind == "stream" else _batch_summary(trials))
    return out


def _mean(trials: list[TrialResult], value: Callable[[TrialResult], Any]) -> float:
    """Mean of ``value`` over the trials (booleans: a rate)."""
    return float(np.mean([value(t) for t in trials]))


# batch metrics that are a plain mean over the trials, in the order they are reported
BATCH_MEANS: dict[str, Callable[[TrialResult], Any]] = {
    "n_new_est": lambda t: t.n_new_est,
    "n_new_true": lambda t: t.n_new_true,
    "n_new_exact": lambda t: t.n_new_est == t.n_new_true,
    "n_rejected": lambda t: t.n_rejected,
    "true_outliers_lb": lambda t: t.true_lower,
    "true_outliers": lambda t: t.true_outliers,
    "outlier_bound_coverage": lambda t: t.true_lower <= t.true_outliers,
}


def _stream_summary(trials: list[TrialResult]) -> dict[str, float]:
    """Stream metrics: false alarms before the change, detections after it, and their delay."""
    detected = [t for t in trials if t.declared]
    out = {
        "stream_false_alarm": _mean(trials, lambda t: t.false_alarm),
        "stream_detect_rate": len(detected) / len(trials),
    }
    if detected:
        out["stream_delay"] = _mean(detected, lambda t: t.delay)
        out["stream_delay_median"] = float(np.median([t.delay for t in detected]))
    return out


def _batch_summary(trials: list[TrialResult]) -> dict[str, float]:
    """Batch metrics: decisions, counts, and the clustering scores of the trials that have them."""
    out = {"novelty_decision_acc": _mean(trials, lambda t: t.declared == t.truth)}
    if all(t.truth for t in trials):
        out["novelty_miss"] = _mean(trials, lambda t: not t.declared)
    else:
        out["novelty_false_alarm"] = _mean(trials, lambda t: t.declared)
    out.update({key: _mean(trials, value) for key, value in BATCH_MEANS.items()})
    for key in ("cluster_acc", "nmi", "ari"):
        vals = [t.scores[key] for t in trials if key in t.scores]
        if vals:
            out[key] = float(np.mean(vals))
    return out

"""``python -m ood_bench.run_novelty``: new-class discovery among a detector's rejections.

One job = benchmark × backbone × detector × novelty method × seed. The detector is fitted once;
every scenario of ``cfg.scenarios`` that applies to the benchmark then runs ``trials`` times,
each trial redrawing the held-out ID pool into calibration and test parts (so trials are
independent draws of the conformal calibration too). Writes to the Hydra output directory:

- ``metrics.csv``: the tidy schema of :mod:`ood_bench.results`, one row per (scenario, metric)
  with ``ood_dataset`` = scenario, ``ood_group`` = ``novelty``, rates and means over trials;
- ``novelty_trials.csv.gz``: one row per trial (decision, counts, bounds, ACC/NMI/ARI, delay);
- ``novelty_samples.csv.gz``: the rejected samples of the first ``save_samples`` trials of each
  batch scenario (embedding, found cluster, true class) and the ID reference, for figures.

The ``detector`` column reads ``<detector>+<novelty method>``.
"""

from __future__ import annotations

import logging
import textwrap
import time
import zlib
from typing import Any

import hydra
import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from ood_bench.config import CONF_DIR, build
from ood_bench.data.base import Benchmark
from ood_bench.detectors.base import Detector
from ood_bench.errors import ConfigError, one_line_errors
from ood_bench.job import JobResult, peak_rss_mb, run_job
from ood_bench.metrics import accuracy
from ood_bench.novelty import (
    ID,
    KIND_NAMES,
    NEW,
    NUISANCE,
    NoveltyDetector,
    NoveltyResult,
    Sample,
    Scenario,
    TrialResult,
    run_batch_trial,
    run_stream_trial,
    summarise,
    true_classes,
)
from ood_bench.pipeline import Prepared, fitted_detector, prepare
from ood_bench.results import make_row

log = logging.getLogger("ood_bench.run_novelty")
GROUP = "novelty"


def resolve_sets(names: list[str], bench: Benchmark) -> tuple[list[str], list[str]]:
    """OOD set names of the benchmark (``near``/``far`` expand to that group) and the missing."""
    have = [s.name for s in bench.ood]
    found, missing = [], []
    for n in names:
        if n in ("near", "far"):
            found += [s.name for s in bench.ood if s.group == n]
        elif n in have:
            found.append(n)
        else:
            missing.append(n)
    return list(dict.fromkeys(found)), missing


def skip_reason(sc: Scenario, bench: Benchmark) -> str | None:
    """Why a scenario cannot run on this job's benchmark (None: it can)."""
    if sc.benchmark and sc.benchmark != bench.name:
        where = CONF_DIR / "benchmark" / f"{sc.benchmark}.yaml"
        state = "" if where.is_file() else f" (not configured here: {where} is missing)"
        return (
            f"needs benchmark={sc.benchmark}{state}; this job runs {bench.name}. Run it with "
            f"benchmark={sc.benchmark} (and its data under data_root)"
        )
    new, missing_new = resolve_sets(sc.new_sets, bench)
    if sc.new_sets and not new:
        return f"{bench.name} has none of the new-class sets {sc.new_sets}"
    nuisance, _ = resolve_sets(sc.nuisance_sets, bench)
    if sc.nuisance_sets and not nuisance:
        return f"{bench.name} has none of the nuisance sets {sc.nuisance_sets}"
    if missing_new:
        log.warning("scenario %s: sets %s not in %s, left out", sc.name, missing_new, bench.name)
    return None


class SetCache:
    """Per-sample arrays of each OOD set, computed once per job."""

    def __init__(self, nd: NoveltyDetector, prep: Prepared):
        self.nd, self.prep, self.cache = nd, prep, {}

    def get(self, name: str, kind: int) -> Sample:
        """The arrays of OOD set ``name`` as samples of ``kind`` (true classes for new sets)."""
        key = (name, kind)
        if key not in self.cache:
            feats = self.prep.ood[name]
            y = true_classes(feats.source) if kind == NEW else None
            if kind == NEW and y is None:
                log.warning("%s: true classes unknown; it counts as one new class", name)
            self.cache[key] = self.nd.sample(feats, kind, y)
        return self.cache[key]

    def union(self, names: list[str], kind: int) -> Sample:
        """The sets' samples concatenated; new sets without known classes count one class each."""
        parts = []
        for i, n in enumerate(names):
            s = self.get(n, kind)
            if (s.y < 0).all() and kind == NEW:  # unknown classes: one class per set
                s = Sample(s.score, s.low, s.z, np.full(len(s), 1000 + i), s.kind)
            parts.append(s)
        return Sample.concat(parts)


def sample_rows(sc: str, trial: int, res: NoveltyResult, batch: Sample) -> pd.DataFrame:
    """The rejected samples of one trial and the projected ID reference, for figures."""
    rej = res.rejected
    z = res.embedding
    frames = []
    if len(rej):
        is_new = {c.label: c.is_new for c in res.clusters if c.label >= 0}
        frames.append(
            pd.DataFrame(
                {
                    "scenario": sc,
                    "trial": trial,
                    "kind": [KIND_NAMES[k] for k in batch.kind[rej]],
                    "true_class": batch.y[rej],
                    "cluster": res.labels,
                    "cluster_is_new": [bool(is_new.get(int(c), False)) for c in res.labels],
                    **{f"e{i}": z[:, i] for i in range(z.shape[1])},
                }
            )
        )
    if res.reference.size:
        ref = res.reference
        frames.append(
            pd.DataFrame(
                {
                    "scenario": sc,
                    "trial": trial,
                    "kind": "id_reference",
                    "true_class": res.reference_y,
                    "cluster": -1,
                    "cluster_is_new": False,
                    **{f"e{i}": ref[:, i] for i in range(ref.shape[1])},
                }
            )
        )
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def run_scenario(
    cfg: DictConfig, sc: Scenario, nd: NoveltyDetector, pool: Sample, sets: SetCache, bench
) -> tuple[list[TrialResult], list[pd.DataFrame], int, int]:
    """All trials of one scenario; returns them, sample frames, and (n_id, n_ood) per trial."""
    new_names, _ = resolve_sets(sc.new_sets, bench)
    nuis_names, _ = resolve_sets(sc.nuisance_sets, bench)
    new = sets.union(new_names, NEW) if new_names else pool.take(np.empty(0, dtype=np.int64))
    nuisance = sets.union(nuis_names, NUISANCE) if nuis_names else pool.take(np.empty(0, np.int64))
    n_trials = int(cfg.trials if sc.trials is None else sc.trials)
    rng = np.random.default_rng([int(cfg.seed), zlib.crc32(sc.name.encode())])
    trials, frames = [], []
    n_id = n_ood = 0
    for t in range(n_trials):
        if sc.kind == "stream":
            tr = run_stream_trial(nd, sc, pool, new, cfg.n_calib, rng, t)
            n_id = n_ood = 0
        else:
            tr, res, batch = run_batch_trial(nd, sc, pool, new, nuisance, cfg.n_calib, rng, t)
            n_id, n_ood = int((batch.kind == ID).sum()), int((batch.kind != ID).sum())
            if t < int(cfg.save_samples):
                frames.append(sample_rows(sc.name, t, res, batch))
            if t == 0:
                log.info("%s, trial 0:\n%s", sc.name, res.summary())
        trials.append(tr)
    return trials, frames, n_id, n_ood


def check_trials(cfg: DictConfig) -> None:
    """``trials`` and every scenario's own ``trials`` must be integers ≥ 1 (null: the global
    value for a scenario): zero trials would give an ``ok`` job without a single number."""

    def bad(value: object) -> bool:
        """Whether ``value`` is not a whole number of at least one trial."""
        return isinstance(value, bool) or not isinstance(value, int) or value < 1

    if bad(cfg.get("trials")):
        raise ConfigError(
            f"trials={cfg.get('trials')!r}: a novelty job needs at least one trial per scenario, "
            "else it is ok with no result. Fix: trials=<an integer >= 1>, e.g. trials=50 (the "
            "default)."
        )
    for name, sc in (cfg.get("scenarios") or {}).items():
        own = sc.get("trials") if sc is not None else None
        if own is not None and bad(own):
            raise ConfigError(
                f"scenarios.{name}.trials={own!r}: a scenario needs at least one trial. Fix: "
                f"scenarios.{name}.trials=<an integer >= 1>, or null to take trials="
                f"{cfg.get('trials')}."
            )


def fit_detector(detector: Detector, prep: Prepared) -> None:
    """Fit the detector on ``fit`` only: the held-out ID pool (``calib`` ∪ ``test``) is
    re-split into calibration and test data in every trial, so a score fitted on ``calib``
    would break the exchangeability the conformal p-values and the count bound rest on."""
    try:
        detector.fit_reference(prep.fit)
    except ConfigError as e:
        raise ConfigError(
            f"{detector.name} fits on the calib split ({e}); novelty detection calibrates on "
            "that split, which the score must not have seen: choose a detector fitted on fit"
        ) from e


def log_scenario(name: str, n_trials: int, seconds: float, summary: dict[str, Any]) -> None:
    """One log line per scenario: its trials, time and the summary cells that say something."""
    cells = scenario_cells(summary)
    said = ", ".join(f"{k} {v}" for k, v in cells.items() if k != "trials" and v != "–")
    log.info("scenario %s: %d trials in %.1f s: %s", name, n_trials, seconds, said)


def trial_frame(job: dict[str, Any], trials: list[Any]) -> pd.DataFrame:
    """A scenario's trials as rows, with the job's identity."""
    return pd.DataFrame([trial_record(tr) for tr in trials]).assign(
        run_id=job["run_id"], benchmark=job["benchmark"], detector=job["detector"], seed=job["seed"]
    )


def evaluate(
    cfg: DictConfig, job: dict[str, Any], bench: Benchmark | None = None
) -> tuple[list[dict[str, Any]], pd.DataFrame, pd.DataFrame]:
    """Prepared features → detector → novelty method → scenarios → rows, trials, samples."""
    check_trials(cfg)
    prep = prepare(cfg, bench)
    bench = prep.bench
    job.update(
        id_dataset=bench.id_name,
        backbone_sha256=prep.backbone.sha256,
        calib_source=prep.calib_source,
    )
    fit_s = 0.0

    def timed_fit(detector: Detector, prep: Prepared) -> None:
        """:func:`fit_detector`, timed, for a detector that does not tune on OOD data."""
        nonlocal fit_s
        job["library"] = detector.library
        if "ood_validation" in detector.needs:
            raise ConfigError(f"{detector.name} tunes on OOD data: novelty detection cannot use it")
        t0 = time.perf_counter()
        fit_detector(detector, prep)
        fit_s = time.perf_counter() - t0

    detector = fitted_detector(cfg, prep, calibrate=False, fit=timed_fit)
    nd: NoveltyDetector = build(cfg.novelty, GROUP)
    nd.fit(detector, prep.fit, prep.calib)
    pool = Sample.concat([nd.sample(prep.calib), nd.sample(prep.test)])
    sets = SetCache(nd, prep)
    rows = [
        make_row(
            job,
            "id_acc",
            accuracy(prep.test.predictions(), prep.test.labels.numpy()),
            n_id=len(prep.test),
        )
    ]
    trial_frames, sample_frames = [], []
    for name, sc_cfg in cfg.scenarios.items():
        sc = Scenario(name=str(name), **OmegaConf.to_container(sc_cfg, resolve=True))
        reason = skip_reason(sc, bench)
        if reason:
            log.warning("scenario %s skipped: %s", name, reason)
            continue
        t1 = time.perf_counter()
        trials, frames, n_id, n_ood = run_scenario(cfg, sc, nd, pool, sets, bench)
        summary = summarise(trials, sc)
        log_scenario(str(name), len(trials), time.perf_counter() - t1, summary)
        rows += [
            make_row(job, metric, value, sc.name, GROUP, n_id or None, n_ood or None)
            for metric, value in summary.items()
        ]
        trial_frames.append(trial_frame(job, trials))
        sample_frames += frames
    runtime = {
        "extract_s": prep.extractor.extract_s,
        "cache_hits": prep.extractor.cache_hits,
        "fit_s": fit_s,
        "peak_rss_mb": peak_rss_mb(),
    }
    rows += [make_row(job, k, float(v)) for k, v in runtime.items()]
    trials_df = pd.concat(trial_frames, ignore_index=True) if trial_frames else pd.DataFrame()
    samples_df = pd.concat(sample_frames, ignore_index=True) if sample_frames else pd.DataFrame()
    if not samples_df.empty:
        samples_df = samples_df.assign(
            run_id=job["run_id"],
            benchmark=job["benchmark"],
            detector=job["detector"],
            seed=job["seed"],
        )
    return rows, trials_df, samples_df


def trial_record(tr: TrialResult) -> dict[str, Any]:
    """One trial as a flat dict: its fields, with the clustering scores as columns."""
    rec = {k: v for k, v in vars(tr).items() if k != "scores"}
    rec.update({k: tr.scores.get(k, np.nan) for k in ("cluster_acc", "nmi", "ari")})
    return rec


def _pct(v: float) -> str:
    """A rate as a whole percent, ``–`` when the scenario has none."""
    return "–" if pd.isna(v) else f"{100 * v:.0f} %"


def scenario_cells(m: dict[str, float]) -> dict[str, str]:
    """The few numbers that answer a scenario's question, from its metrics (name → value):
    was the decision right, how often a batch without a new class declared one, how many new
    classes were found (of how many), and how well their samples were grouped (ACC). A stream
    says how often and how soon (median delay) it raised its alarm."""
    get = m.get
    if "stream_detect_rate" in m:
        delay = get("stream_delay_median", float("nan"))
        right = f"{_pct(get('stream_detect_rate'))} detected" + (
            "" if pd.isna(delay) else f", delay {delay:.0f}"
        )
        alarms = _pct(get("stream_false_alarm", float("nan")))
        found = acc = "–"
    else:
        right = _pct(get("novelty_decision_acc", float("nan")))
        alarms = _pct(get("novelty_false_alarm", float("nan")))
        est, true = get("n_new_est", float("nan")), get("n_new_true", float("nan"))
        found = "–" if pd.isna(est) else f"{est:.1f} of {true:.0f}"
        acc = "–" if pd.isna(get("cluster_acc", float("nan"))) else f"{get('cluster_acc'):.2f}"
    return {
        "trials": f"{get('n_trials', 0):.0f}",
        "right decision": right,
        "false alarms": alarms,
        "new classes found": found,
        "ACC": acc,
    }


# what the terminal table's columns mean (every metric: docs/novelty.md#metrics)
LEGEND = (
    "right decision: trials whose verdict (new class or not) is right; false alarms: trials "
    "without a new class that declared one; new classes found: mean declared (of the true "
    "number); ACC: clustering accuracy of the rejected new-class samples; a stream: how often "
    "it raised the alarm after the change, delay = median new-class samples seen before it. "
    "Every other metric (NMI, ARI, the outlier bound, misses, mean delays): metrics.csv; per "
    "trial: novelty_trials.csv.gz (docs/novelty.md)."
)


def summary_table(df: pd.DataFrame) -> str:
    """The terminal's summary: per scenario, :func:`scenario_cells` as a Markdown table, then
    its :data:`LEGEND` (the CSVs keep every metric)."""
    d = df[df["ood_group"] == GROUP]
    if d.empty:
        return "(no scenario ran)"
    rows = {
        name: scenario_cells(dict(zip(g["metric"], g["value"], strict=True)))
        for name, g in d.groupby("ood_dataset", sort=True)
    }
    table = pd.DataFrame.from_dict(rows, orient="index").rename_axis("scenario")
    return table.to_markdown(disable_numparse=True) + "\n" + textwrap.fill(LEGEND, 100)


@hydra.main(version_base="1.3", config_path="conf", config_name="novelty")
@one_line_errors
def main(cfg: DictConfig) -> None:
    """Run one novelty job (Hydra entry point) in the shared job scaffold
    (:func:`ood_bench.job.run_job`): every scenario's trials, written as gzip trial and sample
    tables and ``metrics.csv``; a finished job is skipped on a rerun, a failed one writes one
    ``failed`` row."""
    run_job(cfg, evaluate_job, detector_label=label)


def label(cfg: DictConfig) -> str:
    """The ``detector`` column of a novelty job: ``<detector>+<novelty method>``."""
    return f"{cfg.detector.name}+{cfg.novelty.name}"


def evaluate_job(cfg: DictConfig, job: dict[str, Any], bench: Benchmark) -> JobResult:
    """:func:`evaluate` as a :class:`~ood_bench.job.JobResult` (rows, the two tables, summary)."""
    rows, trials_df, samples_df = evaluate(cfg, job, bench)
    tables = {"novelty_trials.csv.gz": trials_df, "novelty_samples.csv.gz": samples_df}
    label = job["detector"]
    return JobResult(rows, tables, lambda df: f"novelty results ({label}):\n{summary_table(df)}")


if __name__ == "__main__":
    main()

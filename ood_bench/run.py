"""``python -m ood_bench.run``: one job = benchmark × backbone × detector × seed.

The job is evaluated on every OOD set of the benchmark and writes ``metrics.csv`` (the tidy
schema of :mod:`ood_bench.results`) into its Hydra output directory. A job that fails writes a
``status=failed`` row; in a multirun the sweep goes on.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import hydra
import numpy as np
import pandas as pd
import yaml
from omegaconf import DictConfig

from ood_bench.calibration import CalibratedDetector
from ood_bench.data.base import Benchmark
from ood_bench.detectors.base import Detector
from ood_bench.errors import ConfigError, one_line_errors
from ood_bench.job import JobResult, peak_rss_mb, run_job
from ood_bench.metrics import ALPHAS, accuracy, fpr_at_alpha, ood_metrics, pvalue_metrics
from ood_bench.pipeline import Prepared, fitted_detector, prepare
from ood_bench.results import make_row
from ood_bench.scores import JobScores, ScoreSet
from ood_bench.selection import run_selection, selection_rows, selection_space
from ood_bench.selection.protocol import chosen_config

log = logging.getLogger("ood_bench.run")


def evaluate(
    cfg: DictConfig, job: dict[str, Any], bench: Benchmark | None = None
) -> list[dict[str, Any]]:
    """Prepared features → detector fit/score → metric rows (``bench``: already built)."""
    return evaluate_scored(cfg, job, bench)[0]


def evaluate_scored(
    cfg: DictConfig,
    job: dict[str, Any],
    bench: Benchmark | None = None,
    extras: dict[str, Any] | None = None,
) -> tuple[list[dict[str, Any]], JobScores]:
    """:func:`evaluate`'s rows and the per-sample scores (and p-values) behind them
    (``extras``: filled with the job's ``selection``, when it selects its options)."""
    prep = prepare(cfg, bench)
    extractor, test_f = prep.extractor, prep.test
    job.update(
        id_dataset=prep.bench.id_name,
        backbone_sha256=prep.backbone.sha256,
        calib_source=prep.calib_source,
    )

    det_cfg, selection, sel_cached = cfg.detector, None, False
    if (space := selection_space(cfg)) is not None:  # options chosen without test OOD data
        selection, sel_cached = run_selection(
            cfg, space, prep.bench, prep.backbone.sha256, extractor, prep.fit
        )
        det_cfg = chosen_config(cfg.detector, selection)
        if extras is not None:
            extras["selection"] = selection
    tuned_on: str | None = None
    fit_s = 0.0

    def tune_and_fit(detector: Detector, prep: Prepared) -> None:
        """Tune on an OOD set when the detector searches its hyperparameters, then fit (timed)."""
        nonlocal tuned_on, fit_s
        job["library"] = detector.library
        t0 = time.perf_counter()
        tuned_on = tune_on_ood(detector, prep)
        detector.fit(prep.fit, prep.calib)
        fit_s = time.perf_counter() - t0

    detector = fitted_detector(cfg, prep, calibrate=True, fit=tune_and_fit, detector_cfg=det_cfg)
    bench, ood_f = prep.bench, prep.ood

    t0 = time.perf_counter()
    s_id = detector.score(test_f, bench.split("test").name)
    s_ood = {name: detector.score(f, name) for name, f in ood_f.items()}
    n_scored = len(s_id) + sum(len(s) for s in s_ood.values())
    score_s = time.perf_counter() - t0

    rows = [
        make_row(
            job, "id_acc", accuracy(test_f.predictions(), test_f.labels.numpy()), n_id=len(s_id)
        ),
        *score_rows(job, s_id, s_ood, bench),
    ]
    p_id: np.ndarray | None = None
    p_ood: dict[str, np.ndarray] = {}
    if detector.gives_pvalues:
        p_id = detector.pvalues(test_f)
        p_ood = {name: detector.pvalues(f) for name, f in ood_f.items()}
        rows += pvalue_rows(detector, job, p_id, p_ood, bench)
    scores = JobScores(
        [ScoreSet(bench.split("test").name, "id", "id", s_id, p_id)]
        + [ScoreSet(s.name, "ood", s.group, s_ood[s.name], p_ood.get(s.name)) for s in bench.ood],
        {k: job.get(k) for k in ("run_id", "config_hash", "benchmark", "detector", "seed")},
    )
    runtime = {
        "extract_s": extractor.extract_s,
        "forward_samples": extractor.forward_samples,
        "detector_forward_samples": float(detector.forward_samples),
        "cache_hits": extractor.cache_hits,
        "forward_ms_per_sample": float(test_f.meta.get("forward_ms_per_sample", np.nan)),
        "fit_s": fit_s,
        "score_ms_per_sample": 1000 * score_s / n_scored,
        "peak_rss_mb": peak_rss_mb(),
    }
    rows += [make_row(job, k, float(v), n_id=len(s_id)) for k, v in runtime.items()]
    rows += [make_row(job, f"param_{k}", float(v)) for k, v in detector.recorded_params().items()]
    if tuned_on:
        rows.append(make_row(job, "tuned_on_ood", 1.0, tuned_on, "validation"))
    if selection is not None:
        rows += selection_rows(selection, job, sel_cached)
    scores.meta["backbone_sha256"] = job.get("backbone_sha256")
    return rows, scores


def score_rows(
    job: dict[str, Any], s_id: np.ndarray, s_ood: dict[str, np.ndarray], bench: Benchmark
) -> list[dict[str, Any]]:
    """The score metrics (:func:`~ood_bench.metrics.ood_metrics`) of every OOD set."""
    return [
        make_row(job, metric, value, s.name, s.group, len(s_id), len(s_ood[s.name]))
        for s in bench.ood
        for metric, value in ood_metrics(s_id, s_ood[s.name]).items()
    ]


def tune_on_ood(detector: Detector, prep: Prepared) -> str | None:
    """The OOD set a detector that searches its hyperparameters on OOD data tunes on (None for
    any other detector): that set is taken out of ``prep`` (not evaluated, and the rows say)."""
    if "ood_validation" not in detector.needs:
        return None
    bench, ood_f = prep.bench, prep.ood
    tuned_on = detector.search_ood or bench.ood[0].name
    if tuned_on not in ood_f:
        raise ConfigError(
            f"search_ood={tuned_on!r} is not an OOD set of {bench.name}: "
            f"choose from {sorted(ood_f)}"
        )
    if set(ood_f) == {tuned_on}:
        raise ConfigError(
            f"{detector.name} tunes its hyperparameters on OOD set {tuned_on!r}, which is "
            "then not evaluated, and no other OOD set is left to evaluate. Fix: select "
            "more sets (ood_sets=[...] or ood_sets=null), or switch the search off."
        )
    detector.tune(prep.calib, ood_f.pop(tuned_on))
    prep.bench = bench.select_ood([s.name for s in bench.ood if s.name != tuned_on])
    log.warning(
        "%s tuned its hyperparameters on OOD set %s (excluded from evaluation)",
        detector.name,
        tuned_on,
    )
    return tuned_on


def pvalue_rows(
    detector, job: dict[str, Any], p_id: np.ndarray, p_ood: dict[str, np.ndarray], bench
) -> list[dict[str, Any]]:
    """Type-I error, power and BH rows of a detector that gives calibrated p-values (``p_id``
    of ID test, ``p_ood`` per OOD set), and what its calibration can reach: ``p_min``, the
    classes each level never rejects, and whether the calibration in use is class-conditional."""
    rows = [make_row(job, m, v, n_id=len(p_id)) for m, v in fpr_at_alpha(p_id).items()]
    for s in bench.ood:
        p = p_ood[s.name]
        rows += [
            make_row(job, m, v, s.name, s.group, len(p_id), len(p))
            for m, v in pvalue_metrics(p_id, p).items()
        ]
    if (nbytes := detector.reference_nbytes()) is not None:
        rows.append(make_row(job, "reference_mb", nbytes / 2**20))
    if (p_min := detector.p_min()) is not None:
        rows.append(make_row(job, "p_min", p_min))
        rows += [
            make_row(job, f"unreachable_classes_{a:g}", float(len(detector.unreachable_classes(a))))
            for a in ALPHAS
        ]
        in_use = float(detector.calibration == "class_conditional")
        rows.append(make_row(job, "calib_class_conditional", in_use))
        rows.append(make_row(job, "calib_corrected", float(detector.calibration == "corrected")))
    if isinstance(detector, CalibratedDetector):
        rows.append(make_row(job, "calib_layer", 1.0))
        rows.append(make_row(job, "calib_n", float(len(detector.calibrator.calib_all_))))
    return rows


def summary(df: pd.DataFrame) -> str:
    """The job's metrics per OOD set as a small Markdown table for the log."""
    per_set = df[(df["ood_dataset"] != "") & (df["ood_group"] != "validation")]
    table = per_set.pivot_table(
        index=["ood_group", "ood_dataset"], columns="metric", values="value"
    )
    cols = [c for c in ("auroc", "fpr95_id", "fpr95_ood", "aupr_out", "tpr_at_0.05") if c in table]
    table = table[cols]
    table.loc[("mean", "all"), :] = table.mean()
    table.index = [f"{group} / {name}" for group, name in table.index]  # plain-text labels
    table.index.name = "OOD group / set"
    return table.to_markdown(floatfmt=".4f")


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
@one_line_errors
def main(cfg: DictConfig) -> None:
    """Run one job (Hydra entry point): :func:`evaluate` inside the shared job scaffold
    (:func:`ood_bench.job.run_job`: skip when complete, ``failed`` row, writing)."""
    run_job(cfg, evaluate_job)


def evaluate_job(cfg: DictConfig, job: dict[str, Any], bench: Benchmark) -> JobResult:
    """:func:`evaluate`'s rows with the log summary (ID accuracy, metrics per OOD set)."""

    def text(df: pd.DataFrame) -> str:
        """The log summary of the job's results frame."""
        acc = df.loc[df.metric == "id_acc", "value"].iloc[0]
        head = f"ID test accuracy {100 * acc:.2f}%; results per OOD set ({job['detector']})"
        return f"{head}:\n{summary(df)}"

    extras: dict[str, Any] = {}
    rows, scores = evaluate_scored(cfg, job, bench, extras)
    result = JobResult(rows, summary=text, scores=scores)
    if (selection := extras.get("selection")) is not None:  # beside metrics.csv
        result.tables["selection.csv"] = selection.table
        result.texts["selection.yaml"] = yaml.safe_dump(selection.as_dict(), sort_keys=False)
    return result


if __name__ == "__main__":
    main()

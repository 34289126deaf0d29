"""The tidy (long) results schema: one row per (job, ID test vs OOD set, metric).

Raw CSVs hold values only — no formatted strings, no aggregates; the report layer computes
those. Rows are sorted and floats written with a fixed format so diffs stay small.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from ood_bench.atomic import atomic_write
from ood_bench.errors import DataError

# identity of the job
JOB_COLUMNS = [
    "run_id",
    "sweep",
    "config_hash",
    "status",
    "error",
    "git_sha",
    "benchmark",
    "id_dataset",
    "backbone",
    "backbone_sha256",
    "detector",
    "library",
    "seed",
    "corruption",
    "severity",
    "calib_source",
]
# columns added after the first schema → the value a CSV written before them implies
LEGACY_DEFAULTS: dict[str, str] = {
    "calib_source": "train",  # calib was always the benchmark's own split, cut from ID train
    "threads": "",  # not recorded then: unknown
}
# what the row measures
VALUE_COLUMNS = ["ood_dataset", "ood_group", "metric", "value", "n_id", "n_ood"]
ENV_COLUMNS = [
    "python",
    "torch",
    "pytorch_ood",
    "sklearn",
    "numpy",
    "hydra",
    "ood_bench",
    "device",
    "threads",
    "hostname",
    "timestamp",
]
COLUMNS = JOB_COLUMNS + VALUE_COLUMNS + ENV_COLUMNS
NUMERIC = ["seed", "severity", "value", "n_id", "n_ood"]
SORT_BY = [
    "benchmark",
    "backbone",
    "detector",
    "seed",
    "corruption",
    "severity",
    "ood_group",
    "ood_dataset",
    "metric",
    "run_id",
]
FLOAT_FORMAT = "%.6g"

# metric name → meaning; tests/test_docs.py checks that docs/metrics.md documents every one
METRICS: dict[str, str] = {
    "auroc": "AUROC, OOD positive, higher score = more OOD",
    "aupr_in": "average precision, ID positive",
    "aupr_out": "average precision, OOD positive",
    "fpr95_id": "fraction of OOD accepted when 95% of ID is accepted (papers' reading)",
    "fpr95_ood": "fraction of ID rejected at 95% OOD recall (pytorch-ood / OpenOOD reading)",
    "det_err": "min over thresholds of 0.5(1-TPR)+0.5 FPR",
    "id_acc": "backbone top-1 accuracy on ID test",
    "extract_s": "seconds spent in forward passes + pooling by this job (0 when all cached)",
    "forward_samples": "images pushed through the network by this job",
    "cache_hits": "feature sets read from the cache by this job",
    "detector_forward_samples": "images a model-level detector pushed through the network itself "
    "(fit and scoring; 0 for feature detectors)",
    "forward_ms_per_sample": "backbone forward time per image when the features were extracted",
    "fit_s": "detector fit time, seconds",
    "score_ms_per_sample": "detector score time per sample (ID test + OOD), milliseconds",
    "peak_rss_mb": "peak resident memory of the process so far, MiB",
    "job": "a failed job's single row (value empty, see status/error)",
    "tuned_on_ood": "1 when the detector tuned hyperparameters on OOD data (ood_dataset = that "
    "set, ood_group = validation; it is left out of the evaluation)",
    "reference_mb": "memory of a statistical detector's fitted references + calibration, MiB",
    "p_min": "smallest p-value the calibration in use can give, largest over predicted classes "
    "(1/(n+1), corrected if set): a level below it never rejects that class",
    "param_dim": "principal-subspace dimension ViM / Residual ran with (the ViM paper's rule "
    "on the backbone's feature dimension when the option's dim is null; APS's or a search's "
    "choice when tuned)",
    "calib_class_conditional": "1 when the p-values were calibrated per predicted class "
    "(Mondrian), 0 when marginally (also after mondrian_fallback=marginal)",
    "calib_corrected": "1 when the conformal p-values carry the calibration-conditional "
    "correction (Simes or DKW)",
    "calib_layer": "1 when the p-values come from the calibration layer around a score-only "
    "detector (ood_bench.calibration; the option `calibration`), not from the detector itself",
    "calib_n": "calibration samples the calibration layer's conformal step used (half of calib "
    "for a detector that learns from calib)",
}
for _a in (0.01, 0.05, 0.1):  # p-value detectors (see ood_bench.metrics.pvalue_metrics)
    METRICS[f"fpr_at_{_a:g}"] = f"fraction of ID test rejected at level {_a:g} (type-I error)"
    METRICS[f"tpr_at_{_a:g}"] = f"fraction of the OOD set rejected at level {_a:g}"
    METRICS[f"bh_fdr_{_a:g}"] = f"realised FDR of Benjamini-Hochberg at {_a:g}, ID test + OOD set"
    METRICS[f"bh_power_{_a:g}"] = f"fraction of the OOD set rejected by BH at {_a:g}"
    METRICS[f"unreachable_classes_{_a:g}"] = (
        f"predicted classes whose p_min exceeds {_a:g}: never rejected at that level"
    )


def make_row(
    job: dict[str, Any],
    metric: str,
    value: float,
    ood_dataset: str = "",
    ood_group: str = "",
    n_id: int | None = None,
    n_ood: int | None = None,
) -> dict:
    return {
        **job,
        "ood_dataset": ood_dataset,
        "ood_group": ood_group,
        "metric": metric,
        "value": value,
        "n_id": n_id,
        "n_ood": n_ood,
    }


def to_frame(rows: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """Rows → a frame with exactly :data:`COLUMNS`, sorted deterministically (a column of
    :data:`LEGACY_DEFAULTS` the rows lack takes its legacy value)."""
    df = with_legacy_columns(pd.DataFrame(list(rows)))
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"result rows lack columns {missing}")
    df = df[COLUMNS]
    for c in NUMERIC:
        df[c] = pd.to_numeric(df[c], errors="coerce")
    for c in set(COLUMNS) - set(NUMERIC):
        df[c] = df[c].fillna("").astype(str)
    return df.sort_values(SORT_BY, kind="stable").reset_index(drop=True)


def with_legacy_columns(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with every column of :data:`LEGACY_DEFAULTS` it lacks, set to its legacy value on
    successful rows (a failed row's is empty): CSVs from before a column existed stay readable."""
    missing = [c for c in LEGACY_DEFAULTS if c not in df.columns]
    if not missing or df.empty:
        return df
    df = df.copy()
    ok = df["status"].eq("ok") if "status" in df.columns else pd.Series(True, index=df.index)
    for c in missing:
        df[c] = ""
        df.loc[ok, c] = LEGACY_DEFAULTS[c]
    return df


def write_csv(df: pd.DataFrame, path: str | Path) -> Path:
    """Write a results frame atomically with the fixed float format."""
    df = to_frame(df.to_dict("records")) if list(df.columns) != COLUMNS else df
    return atomic_write(path, lambda p: df.to_csv(p, index=False, float_format=FLOAT_FORMAT))


NO_ROWS_FIX = (
    "every job writes at least one row (a failed one too). Fix: rerun the job that wrote it, "
    "or delete or leave out that file."
)


CUT_FIX = (
    "Fix: rerun that job (its skip check no longer counts it as complete: run the sweep "
    "again, or the job with rerun=true), or delete that file."
)


def check_ends_with_newline(path: Path) -> None:
    """A DataError when a non-empty CSV does not end with a newline: every writer ends its last
    row with one, so the file was cut mid-row (a copy or a disk that stopped), and its last
    value may be a prefix of the real one (0.770689 read as 0.77)."""
    with open(path, "rb") as fh:
        fh.seek(0, 2)
        if fh.tell() == 0:
            return  # empty: read_results says so
        fh.seek(-1, 2)
        if fh.read(1) != b"\n":
            raise DataError(
                f"{path} is cut mid-row (its last line has no newline): its last value may be "
                f"truncated and later rows lost. {CUT_FIX}"
            )


def check_row_count(path: Path, df: pd.DataFrame) -> None:
    """A DataError when a job's ``metrics.csv`` holds fewer or more rows than the job wrote, as
    its ``job_status.json`` records (a file cut at a row boundary, or changed since)."""
    from ood_bench.sweep import STATUS_FILE

    status = path.with_name(STATUS_FILE)
    if path.name != "metrics.csv" or not status.is_file():
        return
    try:
        record = json.loads(status.read_text())
        expected, run_ids = int(record["metrics_rows"]), set(record["metrics_run_ids"])
    except (OSError, ValueError, KeyError, TypeError):
        return  # an older or foreign status: nothing to compare with
    if set(df["run_id"]) == run_ids and len(df) != expected:
        raise DataError(
            f"{path} holds {len(df)} rows, but its job wrote {expected} ({status}): the file "
            f"was cut or changed after the job wrote it. {CUT_FIX}"
        )


def read_results(*paths: str | Path) -> pd.DataFrame:
    """Read and validate result CSVs (a file or a folder of them); a foreign CSV is an error."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(p.rglob("*.csv"))
        elif p.is_file():
            files.append(p)
        else:
            raise DataError(f"no results at {p}: give a CSV written by ood_bench or a folder")
    if not files:
        raise DataError(f"no CSV files under {[str(p) for p in paths]}")
    frames = []
    for f in files:
        check_ends_with_newline(f)
        try:
            df = pd.read_csv(f, dtype=str, keep_default_na=False)
        except pd.errors.EmptyDataError as e:
            raise DataError(f"{f} is empty: {NO_ROWS_FIX}") from e
        df = with_legacy_columns(df)
        missing = [c for c in COLUMNS if c not in df.columns]
        if missing:
            raise DataError(
                f"{f} is not an ood_bench results CSV: it lacks columns {missing}. "
                "Fix: pass the metrics.csv files of jobs or the output of "
                "ood-bench collect."
            )
        if df.empty:  # a table of nothing would look like a finished report
            raise DataError(f"{f} has the results header but no result rows: {NO_ROWS_FIX}")
        df = df[COLUMNS].copy()
        check_row_count(f, df)
        for c in NUMERIC:
            df[c] = pd.to_numeric(df[c].replace("", None), errors="coerce")
        bad = df["status"].eq("ok") & df["value"].isna() & df["metric"].ne("job")
        if bad.any():
            raise DataError(
                f"{f}: {int(bad.sum())} ok row(s) without a numeric value, e.g. "
                f"line {int(bad.idxmax()) + 2}"
            )
        frames.append(df)
    return (
        pd.concat(frames, ignore_index=True)
        .sort_values(SORT_BY, kind="stable")
        .reset_index(drop=True)
    )


def one_result_per_job(df: pd.DataFrame) -> pd.DataFrame:
    """Count every run once, and keep one result set per job.

    - A run's rows appear in several files when a skipped job copied an earlier result into its
      own folder, or when overlapping folders are collected: one copy per ``run_id`` is kept.
    - A job run several times (a rerun, ``rerun=true``, the same sweep collected twice) keeps
      its newest run per (``config_hash``, ``backbone_sha256``): results of another backbone
      checkpoint stay apart (see :func:`backbone_conflicts`).
    - A failed run is dropped when the same config later succeeded.
    """
    if df.empty:
        return df
    d = df.drop_duplicates(["run_id", "ood_dataset", "ood_group", "metric"])
    newest = d.groupby(["config_hash", "backbone_sha256", "status"])["run_id"].transform("max")
    d = d[d["run_id"] == newest]
    ok = d["status"] == "ok"
    last_ok = d[ok].groupby("config_hash")["run_id"].max()
    fixed = ~ok & d["run_id"].lt(d["config_hash"].map(last_ok).fillna(""))
    return d[~fixed].sort_values(SORT_BY, kind="stable").reset_index(drop=True)


def backbone_conflicts(df: pd.DataFrame) -> pd.DataFrame:
    """(benchmark, backbone, seed) whose successful rows come from more than one checkpoint:
    tables over them would mix backbones. Columns: the keys, ``n_checkpoints``, ``sha256``."""
    keys = ["benchmark", "backbone", "seed"]
    d = df[(df["status"] == "ok") & (df["backbone_sha256"] != "")]
    g = d.groupby(keys)["backbone_sha256"]
    out = pd.DataFrame({"n_checkpoints": g.nunique(), "sha256": g.unique()}).reset_index()
    return out[out["n_checkpoints"] > 1].reset_index(drop=True)


def keep_newest_backbone(df: pd.DataFrame) -> pd.DataFrame:
    """Per (benchmark, backbone, seed), only the rows of the checkpoint of the newest run."""
    keys = ["benchmark", "backbone", "seed"]
    d = df[(df["status"] == "ok") & (df["backbone_sha256"] != "")]
    newest = d.sort_values("run_id").groupby(keys)["backbone_sha256"].last().rename("_keep")
    merged = df.merge(newest.reset_index(), on=keys, how="left")
    keep = (merged["status"] != "ok") | merged["_keep"].isna()
    keep |= merged["backbone_sha256"] == merged["_keep"]
    return df[keep.to_numpy()].reset_index(drop=True)


def collect(*sweep_dirs: str | Path, pattern: str = "metrics.csv") -> pd.DataFrame:
    """Merge every job's ``metrics.csv`` under the ``sweep_dirs`` (or the CSVs of a
    ``results_dir/jobs`` folder; no Hydra callback needed), each run counted once and one result
    set per job (:func:`one_result_per_job`)."""
    files: list[Path] = []
    for d in map(Path, sweep_dirs):
        found = sorted(d.rglob(pattern)) if d.is_dir() else ([d] if d.is_file() else [])
        if not found and d.is_dir():  # a results_dir/jobs folder: <config hash>-<sha>.csv files
            found = sorted(d.glob("*.csv"))
        if not found:
            raise DataError(
                f"no {pattern} under {d}: give a sweep or run directory, a results_dir/jobs "
                "folder or a results CSV"
            )
        files += found
    return one_result_per_job(read_results(*dict.fromkeys(files)))


# novelty detection (ood_bench.run_novelty): scenario in ood_dataset, ood_group = novelty
NOVELTY_METRICS: dict[str, str] = {
    "n_trials": "repeated trials of a novelty scenario (each redraws calibration and test data)",
    "novelty_decision_acc": "fraction of a scenario's trials with the right new-class decision",
    "novelty_miss": "fraction of trials with a new class in which none was declared",
    "novelty_false_alarm": "fraction of a control's trials (no new class) declaring a new class",
    "n_new_est": "estimated number of new classes (clusters declared new), mean over trials",
    "n_new_true": "true number of new classes in a trial's batch, mean over trials",
    "n_new_exact": "fraction of trials whose estimated number of new classes is the true one",
    "n_rejected": "samples rejected (conformal p <= alpha) per trial, mean",
    "true_outliers": "rejected samples that are not ID per trial, mean",
    "true_outliers_lb": "(1 - level) lower confidence bound on the true outliers among the "
    "rejections (Beta-binomial count), mean over trials",
    "outlier_bound_coverage": "fraction of trials in which true_outliers_lb <= true_outliers",
    "cluster_acc": "clustering accuracy of the rejected new-class samples, Hungarian matching "
    "(unclustered = wrong), mean over trials",
    "nmi": "normalised mutual information, found clusters vs true new classes, mean over trials",
    "ari": "adjusted Rand index, found clusters vs true new classes, mean over trials",
    "stream_false_alarm": "fraction of stream trials alarming before the new class appears",
    "stream_detect_rate": "fraction of stream trials alarming after the new class appears",
    "stream_delay": "new-class samples seen before the alarm, mean over detecting trials",
    "stream_delay_median": "new-class samples seen before the alarm, median over detecting trials",
}
METRICS.update(NOVELTY_METRICS)

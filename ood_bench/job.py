"""The scaffold every job shares (``ood_bench.run`` and ``ood_bench.run_novelty``): identity,
skip-if-complete (same config hash **and** backbone sha256), the ``failed`` row, and writing.

A job's own work is an ``evaluate(cfg, job, bench) -> JobResult`` function; :func:`run_job`
does the rest, so every kind of job resumes, fails and records itself the same way.
"""

from __future__ import annotations

import logging
import resource
import shutil
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from ood_bench.atomic import atomic_write, atomic_write_text
from ood_bench.backbones import known_sha256
from ood_bench.config import config_hash
from ood_bench.data.base import Benchmark
from ood_bench.environment import environment
from ood_bench.errors import ConfigError
from ood_bench.pipeline import build_benchmark
from ood_bench.results import make_row, read_results, to_frame, write_csv
from ood_bench.scores import SCORES_FILE, JobScores
from ood_bench.scores import save as save_scores
from ood_bench.sweep import write_status
from ood_bench.threads import set_job_threads

log = logging.getLogger("ood_bench.job")


@dataclass
class JobResult:
    """What a job's ``evaluate`` returns: its tidy rows, extra tables written beside
    ``metrics.csv`` (file name → frame; ``.csv.gz`` names are gzip-compressed) and how to
    summarise the job's results frame for the log."""

    rows: list[dict[str, Any]]
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    summary: Callable[[pd.DataFrame], str] | None = None
    scores: JobScores | None = None  # per-sample scores, written as scores.npz (store_scores)
    texts: dict[str, str] = field(default_factory=dict)  # file name -> text, beside metrics.csv


Evaluate = Callable[[DictConfig, dict[str, Any], Benchmark], JobResult]


def peak_rss_mb() -> float:
    """Peak resident set size of this process (Linux reports KiB, macOS bytes)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def complete_sha(path: Path, chash: str) -> str | None:
    """The backbone sha256 of the complete, successful result set of config ``chash`` that the
    CSV at ``path`` holds (one backbone per file), or None when it holds no such result."""
    if not path.is_file():
        return None
    try:
        df = read_results(path)
    except Exception:  # unreadable or foreign: not complete, the job runs again
        return None
    complete = (
        bool(len(df))
        and (df["config_hash"] == chash).all()
        and (df["status"] == "ok").all()
        and "id_acc" in set(df["metric"])
        and df["backbone_sha256"].nunique() == 1
    )
    return str(df["backbone_sha256"].iloc[0]) if complete else None


def shared_result(results_dir: str | Path, chash: str, backbone_sha256: str) -> Path:
    """Where a finished job leaves its rows in ``results_dir``: one file per (config, backbone)."""
    return Path(results_dir).expanduser() / "jobs" / f"{chash}-{backbone_sha256[:12]}.csv"


def seed_of(cfg: DictConfig) -> int:
    """The job's seed as an int; a clear error for anything else (e.g. ``seed=abc``)."""
    try:
        return int(str(cfg.seed))
    except (TypeError, ValueError):
        raise ConfigError(f"seed must be an integer, got {cfg.seed!r}. Fix: e.g. seed=0") from None


def _int_or_none(value: Any) -> int | None:
    """``int(value)``, or None when it is not an integer (the failed row still gets written)."""
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return None


def job_identity(cfg: DictConfig, sweep: str) -> dict[str, Any]:
    """The columns every row of this job shares (the backbone's sha is filled in later)."""
    stamp = datetime.now(timezone.utc)
    env = environment(str(cfg.device))
    return {
        "run_id": f"{stamp:%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:6]}",
        "sweep": sweep,
        "config_hash": config_hash(cfg),
        "status": "ok",
        "error": "",
        "git_sha": env["git_sha"],
        "benchmark": str(cfg.benchmark.name),
        "id_dataset": "",
        "backbone": str(cfg.backbone.name),
        "backbone_sha256": "",
        "detector": str(cfg.detector.name),
        "library": "",
        "seed": _int_or_none(cfg.seed),
        "corruption": str(cfg.corruption.name) if cfg.get("corruption") else "none",
        "severity": _int_or_none(cfg.corruption.severity) if cfg.get("corruption") else 0,
        "calib_source": "",  # train or test once the backbone is known (pipeline.choose_calib)
        **{k: v for k, v in env.items() if k not in ("git_sha", "cpu_count")},
        "threads": str(torch.get_num_threads()),  # the count in force (run_job sets it first)
        "timestamp": stamp.isoformat(timespec="seconds"),
    }


def expected_backbone_sha256(cfg: DictConfig, bench: Benchmark) -> str | None:
    """The sha256 of the checkpoint this job will use, when known before training (None)."""
    params = OmegaConf.to_container(cfg.backbone, resolve=True)
    params.pop("_target_", None)
    cache_dir = Path(cfg.cache_dir).expanduser().resolve()
    return known_sha256(benchmark=bench, cache_dir=cache_dir, **params)


def find_complete(
    cfg: DictConfig, job: dict[str, Any], out_csv: Path, bench: Benchmark
) -> Path | None:
    """A complete result of this job (same config hash **and** backbone sha256) in its output
    folder or in ``results_dir``, or None; the log says why a result that exists is not used."""
    chash = job["config_hash"]
    sha = expected_backbone_sha256(cfg, bench)
    candidates = [out_csv]
    if cfg.get("results_dir"):
        jobs = Path(cfg.results_dir).expanduser() / "jobs"
        candidates += sorted(jobs.glob(f"{chash}-*.csv"))
    found = {p: complete_sha(p, chash) for p in candidates}
    for path, done_sha in found.items():
        if sha is not None and done_sha == sha:
            return path
    others = sorted({s[:12] for s in found.values() if s})
    if others:
        why = (
            "this job's self-trained checkpoint is not in cache_dir yet, so whether they come "
            "from the same weights is unknown (they depend on the thread count)"
            if sha is None
            else f"this job's checkpoint has sha256 {sha[:12]}…"
        )
        log.info(
            "results for config %s exist with backbone sha256 %s, but %s: running the job",
            chash,
            ", ".join(f"{o}…" for o in others),
            why,
        )
    return None


def write_table(df: pd.DataFrame, path: Path) -> Path:
    """Write an extra table of a job atomically (gzip-compressed for ``.gz`` names)."""
    gz = "gzip" if path.name.endswith(".gz") else None
    return atomic_write(
        path, lambda p: df.to_csv(p, index=False, float_format="%.6g", compression=gz)
    )


def run_job(cfg: DictConfig, evaluate: Evaluate, detector_label: str | None = None) -> None:
    """Run one job under Hydra: skip it when a complete result of the same config and backbone
    exists (unless ``rerun``), else ``evaluate`` it and write its tables, then ``metrics.csv``
    last (the mark of a complete job) and its copy in ``results_dir``. A failure writes one
    ``failed`` row, and re-raises outside a multirun (a sweep goes on). In a multirun every
    outcome also leaves ``job_status.json`` for the sweep's summary (:mod:`ood_bench.sweep`)."""
    hc = HydraConfig.get()
    out_dir = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    job = job_identity(cfg, Path(hc.sweep.dir).name if multirun else "run")
    if detector_label:
        job["detector"] = detector_label
    chash = job["config_hash"]
    out_csv = out_dir / "metrics.csv"
    try:
        job["threads"] = str(set_job_threads(cfg, hc.launcher))  # once, before any work
        seed_of(cfg)
        bench = build_benchmark(cfg)
        done = None if cfg.get("rerun", False) else find_complete(cfg, job, out_csv, bench)
        if done is not None:
            if done != out_csv:
                shutil.copyfile(done, out_csv)  # so collect on this sweep finds it (same run_id)
            log.info(
                "skipping job %s (%s/%s/%s seed %s): complete results for config %s and this "
                "backbone checkpoint already in %s (rerun=true forces it)",
                out_dir.name,
                job["benchmark"],
                job["backbone"],
                job["detector"],
                job["seed"],
                chash,
                done,
            )
            if multirun:
                write_status(out_dir, "skipped", job)
            return
        atomic_write_text(out_dir / "resolved_config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        log.info(
            "job %s: benchmark=%s backbone=%s detector=%s seed=%s config %s → %s",
            job["run_id"],
            job["benchmark"],
            job["backbone"],
            job["detector"],
            job["seed"],
            chash,
            out_dir,
        )
        result = evaluate(cfg, job, bench)
    except Exception as e:
        log.exception("job failed: %s", e)
        job.update(status="failed", error=f"{type(e).__name__}: {e}"[:1000])
        path = write_csv(to_frame([make_row(job, "job", float("nan"))]), out_csv)
        log.error("wrote failed row to %s", path)
        if not multirun:
            raise
        write_status(out_dir, "failed", job, job["error"])
        return
    for name, table in result.tables.items():
        if not table.empty:
            write_table(table, out_dir / name)
    for name, text in result.texts.items():
        atomic_write_text(out_dir / name, text)
    if result.scores is not None and cfg.get("store_scores", True):
        path = save_scores(result.scores, out_dir / SCORES_FILE)
        log.info("per-sample scores: %s (%.1f KiB)", path, path.stat().st_size / 1024)
    df = to_frame(result.rows)
    path = write_csv(df, out_csv)
    shared = None
    if cfg.get("results_dir"):
        shared = write_csv(df, shared_result(cfg.results_dir, chash, job["backbone_sha256"]))
    if result.summary is not None:
        log.info("%s", result.summary(df))
    log.info("wrote %d rows to %s%s", len(df), path, f" and {shared}" if shared else "")
    if multirun:
        write_status(out_dir, "ok", job)

"""The scaffold every job shares (``ood_bench.run`` and ``ood_bench.run_novelty``): identity,
skip-if-complete (same config hash **and** backbone sha256), the ``failed`` row, and writing.

A job's own work is an ``evaluate(cfg, job, bench) -> JobResult`` function; :func:`run_job`
does the rest, so every kind of job resumes, fails and records itself the same way.
"""

from __future__ import annotations

import functools
import logging
import resource
import shutil
import sys
import tempfile
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
from ood_bench.config import ENV_KEYS, NOT_IN_HASH, config_hash, env_reads
from ood_bench.data.base import Benchmark
from ood_bench.environment import check_device, environment
from ood_bench.errors import USER_ERRORS, ConfigError, debug
from ood_bench.hashing import hash_obj
from ood_bench.interrupt import JobInterrupted, interruptible
from ood_bench.names import check_name, check_names, is_valid_name, suggest_name
from ood_bench.pipeline import build_benchmark, check_memory_plan, seed_of
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
    except Exception as e:  # unreadable, foreign or cut: not complete, the job runs again
        log.warning("%s does not count as a complete result (%s): running the job", path, e)
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


def _int_or_none(value: Any) -> int | None:
    """``int(value)``, or None when it is not an integer (the failed row still gets written)."""
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return None


def check_job_config(cfg: DictConfig) -> None:
    """Refuse, before any value resolves into a row, a log line or ``resolved_config.yaml``:
    a value read from the environment outside :data:`~ood_bench.config.ENV_KEYS` (a secret in
    ``${oc.env:…}`` would be copied into every file the job writes), a detector, backbone,
    novelty method or scenario name outside :data:`ood_bench.names.NAME_PATTERN`, and a
    device this machine does not have (cached features would otherwise record it unused)."""
    reads = env_reads(cfg)
    if reads:
        listed = ", ".join(f"{k}={v}" for k, v in sorted(reads.items())[:5])
        raise ConfigError(
            f"{listed}: these values read the environment, and a job writes its values into "
            "result rows, logs and resolved_config.yaml, so an environment variable (a token, a "
            "password) would end up in files meant to be shared and committed. Only where things "
            f"are may come from the environment ({', '.join(ENV_KEYS)}). Fix: give the value "
            "itself on the command line or in the YAML "
            "(docs/sweeps.md#values-from-the-environment)."
        )
    for key, what in (
        ("detector.name", "detector name"),
        ("backbone.name", "backbone name"),
        ("novelty.name", "novelty method name"),
    ):
        if OmegaConf.select(cfg, key) is not None:
            check_name(OmegaConf.select(cfg, key), what, key)
    if OmegaConf.select(cfg, "scenarios") is not None:
        check_names([str(k) for k in cfg.scenarios], "novelty scenario name", "scenarios")
    check_device(str(cfg.device))


def job_identity(cfg: DictConfig, sweep: str, resolve: bool = True) -> dict[str, Any]:
    """The columns every row of this job shares (the backbone's sha is filled in later).

    ``resolve=False``: for the failed row of a config :func:`check_job_config` refused, built
    from the unresolved text (nothing read from the environment) with invalid names replaced
    by :func:`~ood_bench.names.suggest_name` (the error column says what was wrong)."""
    stamp = datetime.now(timezone.utc)
    if resolve:
        value = functools.partial(OmegaConf.select, cfg)
        chash = config_hash(cfg)
    else:
        raw = OmegaConf.to_container(cfg, resolve=False)
        plain = {k: v for k, v in raw.items() if k not in NOT_IN_HASH and k != "hydra"}
        chash = hash_obj(plain)[:16]

        def value(key: str, default: Any = None) -> Any:
            """The unresolved text at dotted ``key`` (``default`` when absent)."""
            node: Any = raw
            for part in key.split("."):
                if not isinstance(node, dict) or part not in node:
                    return default
                node = node[part]
            return node

    def name(key: str) -> str:
        """The name at ``key``, made a valid name when it is not one (unresolved configs)."""
        v = str(value(key, default=""))
        return v if resolve or is_valid_name(v) else suggest_name(v)

    device = str(value("device", default="cpu"))
    env = environment(device if resolve or is_valid_name(device) else "")
    has_corruption = value("corruption", default=None) is not None
    return {
        "run_id": f"{stamp:%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:6]}",
        "sweep": sweep,
        "config_hash": chash,
        "status": "ok",
        "error": "",
        "git_sha": env["git_sha"],
        "benchmark": name("benchmark.name"),
        "id_dataset": "",
        "backbone": name("backbone.name"),
        "backbone_sha256": "",
        "detector": name("detector.name"),
        "library": "",
        "seed": _int_or_none(value("seed")),
        "corruption": name("corruption.name") if has_corruption else "none",
        "severity": _int_or_none(value("corruption.severity")) if has_corruption else 0,
        "calib_source": "",  # train or test once the backbone is known (pipeline.choose_calib)
        **{k: v for k, v in env.items() if k not in ("git_sha", "cpu_count")},
        "threads": str(torch.get_num_threads()),  # the count in force (run_job sets it first)
        "timestamp": stamp.isoformat(timespec="seconds"),
    }


def check_results_dir(results_dir: str | Path) -> None:
    """A ConfigError naming the fix when ``results_dir/jobs`` cannot be created or written:
    checked before the work, so a job never computes everything and then fails to save it."""
    jobs = Path(results_dir).expanduser() / "jobs"
    try:
        jobs.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=jobs, prefix=".write-check-"):
            pass
    except OSError as e:
        raise ConfigError(
            f"results_dir={results_dir} cannot take this job's results: {jobs}: "
            f"{e.strerror or e}. Fix: give a writable folder (results_dir=... or "
            "OOD_BENCH_RESULTS), or results_dir=null to keep the results in the job's output "
            "folder only."
        ) from e


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


@interruptible  # SLURM's SIGTERM/SIGUSR2: a failed row saying why (ood_bench.interrupt)
def run_job(
    cfg: DictConfig,
    evaluate: Evaluate,
    detector_label: Callable[[DictConfig], str] | None = None,
) -> None:
    """Run one job under Hydra: skip it when a complete result of the same config and backbone
    exists (unless ``rerun``), else ``evaluate`` it and write its tables, its copy in
    ``results_dir``, then ``metrics.csv`` last (the mark of a complete job). A failure —
    refused config, the work, or writing — writes one ``failed`` row, and re-raises outside a
    multirun (a sweep goes on). Every outcome also leaves ``job_status.json`` (for a multirun's
    summary, :mod:`ood_bench.sweep`, and the row count :func:`ood_bench.results.read_results`
    checks). ``detector_label(cfg)``: the detector column when it is not ``detector.name``."""
    hc = HydraConfig.get()
    out_dir = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    sweep = Path(hc.sweep.dir).name if multirun else "run"
    out_csv = out_dir / "metrics.csv"
    try:  # before anything resolves: nothing read from the environment reaches a file
        check_job_config(cfg)
        job = job_identity(cfg, sweep)
        if detector_label is not None:
            job["detector"] = check_name(detector_label(cfg), "detector label")
    except ConfigError as e:
        fail(e, job_identity(cfg, sweep, resolve=False), out_csv, multirun)
        return
    chash = job["config_hash"]
    try:
        job["threads"] = str(set_job_threads(cfg, hc.launcher))  # once, before any work
        seed_of(cfg)
        if cfg.get("results_dir"):
            check_results_dir(cfg.results_dir)
        check_memory_plan(cfg)
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
            write_status(out_dir, "skipped", job, rows=read_results(out_csv))
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
        for name, table in result.tables.items():
            if not table.empty:
                write_table(table, out_dir / name)
        for name, text in result.texts.items():
            atomic_write_text(out_dir / name, text)
        if result.scores is not None and cfg.get("store_scores", True):
            saved = save_scores(result.scores, out_dir / SCORES_FILE)
            log.info("per-sample scores: %s (%.1f KiB)", saved, saved.stat().st_size / 1024)
        df = to_frame(result.rows)
        shared = None
        if cfg.get("results_dir"):  # before metrics.csv: a complete job has both
            shared = write_csv(df, shared_result(cfg.results_dir, chash, job["backbone_sha256"]))
        path = write_csv(df, out_csv)
    except (Exception, JobInterrupted) as e:
        fail(e, job, out_csv, multirun)
        return
    log.info("wrote %d rows to %s%s", len(df), path, f" and {shared}" if shared else "")
    try:  # the results are written: nothing after them may fail the job or escape a multirun
        if result.summary is not None:
            log.info("%s", result.summary(df))
        write_status(out_dir, "ok", job, rows=df)
    except Exception as e:
        log.error("job %s wrote its results, but then: %s", job["run_id"], e, exc_info=e)


def fail(error: Exception, job: dict[str, Any], out_csv: Path, multirun: bool) -> None:
    """Record a failed job: its ``failed`` row in ``metrics.csv`` and its status, then re-raise
    ``error`` outside a multirun. In a multirun nothing escapes (not even a failure to write the
    row), so the sweep goes on and its summary counts this job."""
    # the project's errors name cause and fix: their traceback only under OOD_BENCH_DEBUG=1
    quiet = isinstance(error, USER_ERRORS) and not debug()
    log.error("job failed: %s", error, exc_info=None if quiet else error)
    job = {**job, "status": "failed", "error": f"{type(error).__name__}: {error}"[:1000]}
    df = to_frame([make_row(job, "job", float("nan"))])
    try:
        log.error("wrote failed row to %s", write_csv(df, out_csv))
        write_status(out_csv.parent, "failed", job, job["error"], rows=df)
    except OSError as e:
        log.error("could not record the failure in %s: %s", out_csv.parent, e)
    if not multirun:
        raise error

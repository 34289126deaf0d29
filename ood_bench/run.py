"""``python -m ood_bench.run``: one job = benchmark × backbone × detector × seed.

The job is evaluated on every OOD set of the benchmark and writes ``metrics.csv`` (the tidy
schema of :mod:`ood_bench.results`) into its Hydra output directory. A job that fails writes a
``status=failed`` row; in a multirun the sweep goes on.
"""

from __future__ import annotations

import logging
import resource
import shutil
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import pandas as pd
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from ood_bench.backbones import known_sha256
from ood_bench.config import build, config_hash
from ood_bench.environment import environment
from ood_bench.errors import ConfigError
from ood_bench.io import atomic_write_text
from ood_bench.metrics import accuracy, fpr_at_alpha, ood_metrics, pvalue_metrics
from ood_bench.pipeline import build_benchmark, prepare, seed_everything
from ood_bench.results import make_row, read_results, to_frame, write_csv

log = logging.getLogger("ood_bench.run")


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
        **{k: v for k, v in env.items() if k != "git_sha"},
        "timestamp": stamp.isoformat(timespec="seconds"),
    }


def evaluate(cfg: DictConfig, job: dict[str, Any], bench=None) -> list[dict[str, Any]]:
    """Prepared features → detector fit/score → metric rows (``bench``: already built)."""
    prep = prepare(cfg, bench)
    bench, extractor = prep.bench, prep.extractor
    fit_f, calib_f, test_f, ood_f = prep.fit, prep.calib, prep.test, prep.ood
    job.update(id_dataset=bench.id_name, backbone_sha256=prep.backbone.sha256)

    seed_everything(seed_of(cfg))
    detector = build(cfg.detector, "detector")
    job["library"] = detector.library
    if "model" in detector.needs:
        detector.bind(prep.backbone.model, cfg.device)
    tuned_on: str | None = None
    t0 = time.perf_counter()
    if "ood_validation" in detector.needs:
        # hyperparameter search on OOD data: the set it tunes on is not evaluated, and the rows say
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
        detector.tune(calib_f, ood_f.pop(tuned_on))
        bench = bench.select_ood([s.name for s in bench.ood if s.name != tuned_on])
        log.warning(
            "%s tuned its hyperparameters on OOD set %s (excluded from evaluation)",
            detector.name,
            tuned_on,
        )
    detector.fit(fit_f, calib_f)
    fit_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    s_id = detector.score(test_f, bench.split("test").name)
    s_ood = {name: detector.score(f, name) for name, f in ood_f.items()}
    n_scored = len(s_id) + sum(len(s) for s in s_ood.values())
    score_s = time.perf_counter() - t0

    rows = [
        make_row(
            job, "id_acc", accuracy(test_f.predictions(), test_f.labels.numpy()), n_id=len(s_id)
        )
    ]
    for s in bench.ood:
        for metric, value in ood_metrics(s_id, s_ood[s.name]).items():
            rows.append(
                make_row(job, metric, value, s.name, s.group, len(s_id), len(s_ood[s.name]))
            )
    if detector.gives_pvalues:
        rows += pvalue_rows(detector, job, test_f, ood_f, bench)
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
    if tuned_on:
        rows.append(make_row(job, "tuned_on_ood", 1.0, tuned_on, "validation"))
    return rows


def pvalue_rows(detector, job: dict[str, Any], test_f, ood_f, bench) -> list[dict[str, Any]]:
    """Type-I error, power and BH rows of a detector that gives calibrated p-values."""
    p_id = detector.pvalues(test_f)
    rows = [make_row(job, m, v, n_id=len(p_id)) for m, v in fpr_at_alpha(p_id).items()]
    for s in bench.ood:
        p_ood = detector.pvalues(ood_f[s.name])
        rows += [
            make_row(job, m, v, s.name, s.group, len(p_id), len(p_ood))
            for m, v in pvalue_metrics(p_id, p_ood).items()
        ]
    if (nbytes := detector.reference_nbytes()) is not None:
        rows.append(make_row(job, "reference_mb", nbytes / 2**20))
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


def expected_backbone_sha256(cfg: DictConfig, bench) -> str | None:
    """The sha256 of the checkpoint this job will use, when known before training (None)."""
    params = OmegaConf.to_container(cfg.backbone, resolve=True)
    params.pop("_target_", None)
    cache_dir = Path(cfg.cache_dir).expanduser().resolve()
    return known_sha256(benchmark=bench, cache_dir=cache_dir, **params)


def find_complete(cfg: DictConfig, job: dict[str, Any], out_csv: Path, bench) -> Path | None:
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


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    """Run one job (Hydra entry point) and write its ``metrics.csv`` (and the shared copy).

    Skips the job when complete results for its config hash and backbone checkpoint exist
    (unless ``rerun``); a failed job writes one ``failed`` row, and re-raises outside a
    multirun."""
    hc = HydraConfig.get()
    out_dir = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    sweep = Path(hc.sweep.dir).name if multirun else "run"
    job = job_identity(cfg, sweep)
    chash = job["config_hash"]
    out_csv = out_dir / "metrics.csv"
    try:
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
        rows = evaluate(cfg, job, bench)
    except Exception as e:
        log.exception("job failed: %s", e)
        job.update(status="failed", error=f"{type(e).__name__}: {e}"[:1000])
        path = write_csv(to_frame([make_row(job, "job", float("nan"))]), out_csv)
        log.error("wrote failed row to %s", path)
        if not multirun:
            raise
        return
    df = to_frame(rows)
    path = write_csv(df, out_csv)
    shared = None
    if cfg.get("results_dir"):
        shared = write_csv(df, shared_result(cfg.results_dir, chash, job["backbone_sha256"]))
    acc = df.loc[df.metric == "id_acc", "value"].iloc[0]
    log.info(
        "ID test accuracy %.2f%%; results per OOD set (%s):\n%s",
        100 * acc,
        job["detector"],
        summary(df),
    )
    log.info("wrote %d rows to %s%s", len(df), path, f" and {shared}" if shared else "")


if __name__ == "__main__":
    main()

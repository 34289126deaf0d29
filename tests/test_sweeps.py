"""Sweeps at scale, tested for real without a cluster: resumable jobs, a kill mid-sweep and a
restart, parallel jobs hammering one cache entry, submitit's local executor."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from ood_bench.results import read_results
from tests.conftest import FAST_TRAIN, run_module

SMALL = ["ood_sets=[uniform_noise]", FAST_TRAIN]


def job_rows(sweep: Path) -> pd.DataFrame:
    return read_results(*sorted(sweep.rglob("metrics.csv")))


def test_rerun_skips_complete_jobs_and_rerun_true_forces(tmp_path):
    args = [
        "-m",
        "ood_bench.run",
        "-m",
        "detector=pood_msp,pood_energy",
        f"hydra.sweep.dir={tmp_path / 's'}",
        f"cache_dir={tmp_path / 'c'}",
        *SMALL,
    ]
    run_module(*args, cwd=tmp_path)
    first = job_rows(tmp_path / "s")
    second = run_module(*args, cwd=tmp_path)
    assert second.stdout.count("skipping job") + second.stderr.count("skipping job") == 2
    assert job_rows(tmp_path / "s")["run_id"].tolist() == first["run_id"].tolist()
    run_module(*args, "rerun=true", cwd=tmp_path)
    assert set(job_rows(tmp_path / "s")["run_id"]).isdisjoint(first["run_id"])


def test_shared_results_dir_serves_other_sweeps(tmp_path):
    common = [
        "-m",
        "ood_bench.run",
        "detector=pood_msp",
        f"cache_dir={tmp_path / 'c'}",
        f"results_dir={tmp_path / 'shared'}",
        *SMALL,
    ]
    run_module(*common, f"hydra.run.dir={tmp_path / 'a'}", cwd=tmp_path)
    assert len(list((tmp_path / "shared" / "jobs").glob("*.csv"))) == 1
    proc = run_module(*common, f"hydra.run.dir={tmp_path / 'b'}", cwd=tmp_path)
    assert "skipping job" in proc.stdout + proc.stderr
    a, b = (
        read_results(tmp_path / "a" / "metrics.csv"),
        read_results(tmp_path / "b" / "metrics.csv"),
    )
    assert a["run_id"].tolist() == b["run_id"].tolist()  # copied, not recomputed
    assert (tmp_path / "a" / "resolved_config.yaml").is_file()


@pytest.mark.slow
def test_killed_sweep_resumes_with_no_duplicates(tmp_path):
    sweep = tmp_path / "s"
    args = [
        sys.executable,
        "-m",
        "ood_bench.run",
        "-m",
        "detector=pood_msp,pood_energy,pood_maxlogit,pood_entropy,pood_mahalanobis,pood_knn",
        f"hydra.sweep.dir={sweep}",
        f"cache_dir={tmp_path / 'c'}",
        *SMALL,
    ]
    proc = subprocess.Popen(
        args,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 300
    while time.time() < deadline and len(list(sweep.rglob("metrics.csv"))) < 2:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=60)
    done_before = len(list(sweep.rglob("metrics.csv")))
    assert 2 <= done_before < 6, "the kill must land mid-sweep"
    rows_before = job_rows(sweep)
    run_module(*args[1:], cwd=tmp_path)
    rows = job_rows(sweep)
    assert rows["run_id"].nunique() == 6 and (rows["status"] == "ok").all()
    assert not rows.duplicated(["config_hash", "ood_dataset", "metric"]).any()
    kept = rows[rows["run_id"].isin(rows_before["run_id"])]
    assert len(kept) == len(rows_before)  # the jobs finished before the kill were not redone


def test_joblib_workers_share_one_cache_entry(tmp_path):
    run_module(
        "-m",
        "ood_bench.run",
        "-m",
        "hydra/launcher=local_parallel",
        "hydra.launcher.n_jobs=2",
        "detector=pood_msp,pood_energy,pood_maxlogit,pood_knn",
        f"hydra.sweep.dir={tmp_path / 's'}",
        f"cache_dir={tmp_path / 'c'}",
        *SMALL,
        cwd=tmp_path,
    )
    rows = job_rows(tmp_path / "s")
    assert rows["run_id"].nunique() == 4 and (rows["status"] == "ok").all()
    entries = list((tmp_path / "c" / "features").glob("*.pt"))
    assert len(entries) == 4  # train(=fit), calib, test, uniform_noise: once each
    assert len(list((tmp_path / "c" / "checkpoints").glob("*.pt"))) == 1  # trained once
    fwd = rows[rows["metric"] == "forward_samples"]["value"]
    assert (fwd == 0).sum() >= 2  # jobs that came after the first read the cache
    shas = rows["backbone_sha256"].unique()
    assert len(shas) == 1


@pytest.mark.slow
def test_submitit_local_executor_runs_a_sweep(tmp_path):
    run_module(
        "-m",
        "ood_bench.run",
        "-m",
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=10",
        "detector=pood_msp,pood_energy",
        f"hydra.sweep.dir={tmp_path / 's'}",
        f"cache_dir={tmp_path / 'c'}",
        *SMALL,
        cwd=tmp_path,
    )
    rows = job_rows(tmp_path / "s")
    assert rows["run_id"].nunique() == 2 and (rows["status"] == "ok").all()
    assert list((tmp_path / "s").rglob("*.log")), "per-job logs sit next to the CSVs"
    run_module(
        "-m",
        "ood_bench.cli",
        "collect",
        str(tmp_path / "s"),
        "--out",
        str(tmp_path / "all.csv"),
        cwd=tmp_path,
    )
    assert read_results(tmp_path / "all.csv")["run_id"].nunique() == 2


def _job_files(tmp_path: Path) -> tuple[Path, str]:
    """A job folder as run_job leaves it: metrics.csv (two rows) and job_status.json."""
    from ood_bench.results import COLUMNS, make_row, to_frame, write_csv
    from ood_bench.sweep import write_status

    job = {c: "" for c in COLUMNS[:16]} | {c: "x" for c in COLUMNS[22:]}
    job.update(run_id="r1", config_hash="h", status="ok", seed=0, severity=0)
    job.update(benchmark="b", backbone="n", detector="d", backbone_sha256="a" * 64)
    df = to_frame([make_row(job, "id_acc", 0.9), make_row(job, "auroc", 0.770689, "s", "far")])
    out = tmp_path / "job" / "metrics.csv"
    write_csv(df, out)
    write_status(out.parent, "ok", job, rows=df)
    return out, "h"


def test_metrics_csv_cut_mid_row_is_reported_and_not_complete(tmp_path):
    from ood_bench.errors import DataError
    from ood_bench.job import complete_sha
    from ood_bench.results import collect

    out, chash = _job_files(tmp_path)
    assert complete_sha(out, chash) == "a" * 64
    text = out.read_text()
    out.write_text(text[: text.index("0.770689") + 4])  # AUROC 0.770689 would read as 0.77
    with pytest.raises(DataError, match=r"metrics.csv is cut mid-row.*Fix: rerun"):
        collect(tmp_path)
    assert complete_sha(out, chash) is None  # the skip check runs the job again


def test_metrics_csv_cut_at_a_row_boundary_is_caught_by_the_row_count(tmp_path):
    from ood_bench.errors import DataError
    from ood_bench.job import complete_sha
    from ood_bench.results import collect

    out, chash = _job_files(tmp_path)
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:-1]))  # the auroc row lost, the file still ends a row
    with pytest.raises(DataError, match=r"holds 1 rows, but its job wrote 2 .*job_status.json"):
        collect(tmp_path)
    assert complete_sha(out, chash) is None

"""A multirun reports its failures: one summary line (ok / failed / skipped), the failed jobs'
reasons, and exit status 1 when a job failed unless allow_failures=true."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from ood_bench import sweep
from ood_bench.config import compose, config_hash
from tests.conftest import run_module

JOB = {"benchmark": "digits", "backbone": "digits_cnn", "detector": "d", "seed": 0}


def test_summary_counts_this_multiruns_jobs_only(tmp_path, monkeypatch):
    monkeypatch.setenv(sweep.TOKEN_ENV, "mine")
    for name, status, error in [
        ("a", "ok", ""),
        ("b", "skipped", ""),
        ("c", "failed", "ConfigError: dim too large\ntraceback"),
        ("d", "failed", "NotApplicable: openood_mcd: training-time method"),
    ]:
        (tmp_path / name).mkdir()
        sweep.write_status(tmp_path / name, status, {**JOB, "detector": name}, error)
    (tmp_path / "old").mkdir()  # another multirun's job in the same sweep folder
    monkeypatch.setenv(sweep.TOKEN_ENV, "other")
    sweep.write_status(tmp_path / "old", "failed", JOB, "boom")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / sweep.STATUS_FILE).write_text("{not json")
    s = sweep.summarise(sweep.read_statuses(tmp_path, "mine", since=0.0))
    assert s.line() == (
        "4 jobs: 1 ok, 2 failed (1 not applicable), 1 skipped (complete results existed)"
    )
    assert s.reasons() == [
        "  c (digits/digits_cnn/c seed 0): ConfigError: dim too large",
        "  d (digits/digits_cnn/d seed 0): NotApplicable: openood_mcd: training-time method",
    ]


def test_status_without_token_counts_when_written_after_the_start(tmp_path, monkeypatch):
    monkeypatch.delenv(sweep.TOKEN_ENV, raising=False)
    sweep.write_status(tmp_path, "ok", JOB)
    when = json.loads((tmp_path / sweep.STATUS_FILE).read_text())["time"]
    assert len(sweep.read_statuses(tmp_path, "t", since=when - 1)) == 1
    assert sweep.read_statuses(tmp_path, "t", since=when + 1) == []


def test_allow_failures_is_not_part_of_the_config_hash():
    assert config_hash(compose()) == config_hash(compose(["allow_failures=true"]))
    assert compose()["allow_failures"] is False
    assert compose(config_name="novelty")["allow_failures"] is False


@pytest.mark.parametrize("entry", ["ood_bench.run", "ood_bench.run_novelty"])
def test_multirun_with_a_failed_job_exits_nonzero_unless_allowed(entry, tmp_path):
    """seed=abc fails at once in the job scaffold (no training): the sweep goes on to its end,
    reports the job, and its exit status says so."""
    args = ["-m", entry, "-m", "seed=abc", f"cache_dir={tmp_path / 'c'}"]
    proc = run_module(*args, f"hydra.sweep.dir={tmp_path / 's'}", cwd=tmp_path, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "1 job: 0 ok, 1 failed, 0 skipped" in out
    assert "seed must be an integer" in out and "allow_failures=true" in out
    proc = run_module(
        *args, "allow_failures=true", f"hydra.sweep.dir={tmp_path / 't'}", cwd=tmp_path
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0
    assert "1 job: 0 ok, 1 failed, 0 skipped" in out and "failures allowed" in out


def test_a_second_multirun_into_a_busy_sweep_folder_is_refused(tmp_path):
    """Two multiruns in one folder share its job folders: the second would overwrite the first's
    job_status.json files and one would report fewer jobs than it launched."""
    lock = sweep.claim_sweep_dir(tmp_path, "first")
    with pytest.raises(sweep.SweepBusy, match=rf"another multirun \(pid {os.getpid()} .*"):
        sweep.claim_sweep_dir(tmp_path, "second")
    sweep.release_sweep_dir(tmp_path, "second")  # not its mark: left alone
    assert lock.is_file()
    sweep.release_sweep_dir(tmp_path, "first")
    assert not lock.exists()
    sweep.claim_sweep_dir(tmp_path, "second")  # free again
    assert json.loads(lock.read_text())["token"] == "second"


def test_the_mark_of_a_dead_multirun_is_taken_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    mark = {"token": "old", "pid": dead.pid, "host": socket.gethostname(), "time": 0}
    (tmp_path / sweep.LOCK_FILE).write_text(json.dumps(mark))
    sweep.claim_sweep_dir(tmp_path, "new")
    assert json.loads((tmp_path / sweep.LOCK_FILE).read_text())["token"] == "new"
    # another host's mark cannot be checked: refused, naming the file to delete
    (tmp_path / sweep.LOCK_FILE).write_text(json.dumps({**mark, "host": "elsewhere"}))
    with pytest.raises(sweep.SweepBusy, match="delete .*ood_bench_multirun.json"):
        sweep.claim_sweep_dir(tmp_path, "newer")


def test_multirun_into_a_folder_another_multirun_writes_to_stops_before_any_job(tmp_path):
    sweep.claim_sweep_dir(tmp_path / "s", "running")  # this process: alive
    proc = run_module(
        "-m",
        "ood_bench.run",
        "-m",
        "detector=pood_msp,pood_energy",
        f"hydra.sweep.dir={tmp_path / 's'}",
        f"cache_dir={tmp_path / 'c'}",
        cwd=tmp_path,
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "refusing to start this multirun: another multirun" in out
    assert "hydra.sweep.dir=" in out
    assert not list((tmp_path / "s").rglob("metrics.csv"))


def test_unwritable_results_dir_fails_each_job_and_the_multirun_still_reports(tmp_path):
    """Checked before the work: each job fails at once with the fix, leaves its failed row and
    status, and the sweep ends with its summary (the OSError used to escape the multirun)."""
    (tmp_path / "afile").write_text("not a folder")
    proc = run_module(
        "-m",
        "ood_bench.run",
        "-m",
        "detector=pood_msp,pood_energy",
        f"results_dir={tmp_path / 'afile'}",
        f"hydra.sweep.dir={tmp_path / 's'}",
        f"cache_dir={tmp_path / 'c'}",
        cwd=tmp_path,
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "2 jobs: 0 ok, 2 failed, 0 skipped" in out
    assert "cannot take this job's results" in out and "results_dir=null" in out
    assert len(list((tmp_path / "s").rglob(sweep.STATUS_FILE))) == 2
    assert not (tmp_path / "c").exists(), "nothing was computed"

"""SLURM: ``hydra/launcher=slurm`` against a real scheduler (marker ``slurm``: ``make test-slurm``,
run by ``.ci/run`` around ``.ci/slurm_cluster.sh start|stop``), and the launcher's pieces
that need none (the request check, the config, the signal handler).

The ``slurm`` tests skip, naming the set-up command, where no cluster answers ``sinfo``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from ood_bench.errors import ConfigError
from ood_bench.results import read_results
from ood_bench.slurm import NodeLimits, check_request, log_cause, parse_sinfo
from tests.conftest import CONF, DATA, FAST_TRAIN, ROOT, run_module

SMALL = ["ood_sets=[uniform_noise]", FAST_TRAIN]
SETUP = ".ci/slurm_cluster.sh start (as root; SLURM_ACCOUNTING=1 adds slurmdbd + MariaDB)"
# the runtime rows (timings, cache hits, memory) differ between any two runs
RUNTIME = {
    "extract_s",
    "forward_samples",
    "detector_forward_samples",
    "cache_hits",
    "forward_ms_per_sample",
    "fit_s",
    "score_ms_per_sample",
    "peak_rss_mb",
}


def cluster_answers() -> bool:
    if shutil.which("sinfo") is None:
        return False
    return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=30).returncode == 0


needs_cluster = pytest.mark.skipif(
    "not cluster_answers()", reason=f"no SLURM cluster answers sinfo: {SETUP}"
)


def job_rows(sweep: Path) -> pd.DataFrame:
    return read_results(*sorted(sweep.rglob("metrics.csv")))


def slurm_sweep(tmp_path: Path, sweep: str, *args: str, check: bool = True, **kw):
    """A multirun through hydra/launcher=slurm, one thread per job (as the local reference)."""
    return run_module(
        "-m",
        "ood_bench.run",
        "-m",
        "hydra/launcher=slurm",
        f"hydra.sweep.dir={tmp_path / sweep}",
        *args,
        cwd=tmp_path,
        env={"OMP_NUM_THREADS": "1"},
        check=check,
        **kw,
    )


def submitted(proc: subprocess.CompletedProcess) -> int:
    """How many tasks the launcher submitted (its log line), 0 when it submitted none."""
    found = re.findall(r"submitted (\d+) jobs as SLURM array", proc.stdout + proc.stderr)
    return sum(int(n) for n in found)


# --- no cluster needed ---------------------------------------------------------------------

SINFO = "debug*|2|22899|(null)\ngpu|64|512000|gpu:a100:4(S:0-1)\ngpu|32|256000|gpu:2\n"


def test_parse_sinfo_takes_the_largest_node_of_the_partition():
    assert parse_sinfo(SINFO, None) == NodeLimits("debug", 2, 22899, 0)
    assert parse_sinfo(SINFO, "gpu") == NodeLimits("gpu", 64, 512000, 4)
    assert parse_sinfo(SINFO, "nope") is None


def test_a_request_no_node_can_meet_is_refused_with_the_override():
    limits = parse_sinfo(SINFO, None)
    with pytest.raises(ConfigError, match=r"has 2: .*Fix: hydra.launcher.cpus_per_task=2"):
        check_request({"cpus_per_task": 4, "tasks_per_node": 1}, limits)
    with pytest.raises(ConfigError, match=r"22899 MB.*Fix: hydra.launcher.mem_gb=22"):
        check_request({"cpus_per_task": 1, "mem_gb": 64}, limits)
    with pytest.raises(ConfigError, match=r"gpus_per_node=0 \(and device=cpu\)"):
        check_request({"gpus_per_node": 1}, limits)
    check_request({"cpus_per_task": 2, "mem_gb": 22, "gpus_per_node": 0}, limits)
    check_request({"cpus_per_task": 8, "gpus_per_node": 4}, parse_sinfo(SINFO, "gpu"))


def compose_slurm(*overrides: str):
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        return compose(
            "config", overrides=["hydra/launcher=slurm", *overrides], return_hydra_config=True
        )


def test_slurm_defaults_start_on_a_two_cpu_node():
    launcher = compose_slurm().hydra.launcher
    assert launcher._target_.endswith("OodBenchSlurmLauncher")
    check_request(dict(launcher), NodeLimits("debug", 2, 3800, 0))  # a small 2-CPU, 4 GB node


def test_gpu_request_composes_for_a_gpu_partition():
    cfg = compose_slurm(
        "hydra.launcher.partition=gpu", "hydra.launcher.gpus_per_node=1", "device=cuda"
    )
    assert cfg.device == "cuda" and cfg.hydra.launcher.gpus_per_node == 1
    check_request(dict(cfg.hydra.launcher), parse_sinfo(SINFO, "gpu"))
    with pytest.raises(ConfigError, match="gpus_per_node"):
        check_request(dict(cfg.hydra.launcher), parse_sinfo(SINFO, None))


def test_the_cause_is_read_from_slurmstepds_last_words():
    assert log_cause("slurmstepd: error: *** JOB 9 ON vm CANCELLED AT 2026 ***") == "CANCELLED"
    timeout = "*** JOB 9 ON vm CANCELLED AT 2026-12-02T01:00 DUE TO TIME LIMIT ***"
    assert log_cause(timeout) == "TIMEOUT"
    assert log_cause("slurmstepd: error: Exceeded job memory limit") == "OUT_OF_MEMORY"
    assert log_cause("all fine") is None


@pytest.mark.slow
@pytest.mark.parametrize(
    "sig, cause", [(signal.SIGTERM, "cancelled"), (signal.SIGUSR2, "time limit")]
)
def test_a_signal_in_a_slurm_job_writes_a_failed_row_and_ends(tmp_path, sig, cause):
    """SLURM's SIGTERM / SIGUSR2 (SLURM_JOB_ID set) during training: a failed row within
    seconds, and the process ends."""
    out = tmp_path / "r"
    env = {
        **os.environ,
        "SLURM_JOB_ID": "1",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(ROOT),
    }
    cmd = [sys.executable, "-m", "ood_bench.run", "detector=pood_msp", "backbone.train.epochs=5000"]
    cmd += [f"hydra.run.dir={out}", f"cache_dir={tmp_path / 'c'}", "ood_sets=[uniform_noise]"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and "epoch" not in _read(out / "run.log"):
        time.sleep(0.2)
    assert "epoch" in _read(out / "run.log"), "the job did not start training"
    t0 = time.time()
    proc.send_signal(sig)
    proc.wait(timeout=30)
    elapsed = time.time() - t0
    row = read_results(out / "metrics.csv").iloc[0]
    assert row["status"] == "failed" and row["error"].startswith(f"JobInterrupted: {cause}")
    assert elapsed < 10, f"the job took {elapsed:.1f} s to end"


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


# --- a real cluster ------------------------------------------------------------------------


@pytest.mark.slurm
@needs_cluster
def test_slurm_sweep_matches_a_local_sweep_and_a_rerun_submits_nothing(tmp_path):
    dets = "detector=pood_msp,pood_energy"
    run_module(
        "-m",
        "ood_bench.run",
        "-m",
        dets,
        f"hydra.sweep.dir={tmp_path / 'local'}",
        f"cache_dir={tmp_path / 'c_local'}",
        *SMALL,
        cwd=tmp_path,
        env={"OMP_NUM_THREADS": "1"},
    )
    first = slurm_sweep(tmp_path, "slurm", dets, f"cache_dir={tmp_path / 'c_slurm'}", *SMALL)
    assert submitted(first) == 2
    local, remote = job_rows(tmp_path / "local"), job_rows(tmp_path / "slurm")
    key = ["detector", "ood_dataset", "metric"]

    def comparable(df: pd.DataFrame) -> pd.DataFrame:
        df = df[~df["metric"].isin(RUNTIME)]
        return df[[*key, "config_hash", "backbone_sha256", "value"]].sort_values(key)

    pd.testing.assert_frame_equal(
        comparable(local).reset_index(drop=True), comparable(remote).reset_index(drop=True)
    )
    assert set(local["run_id"]).isdisjoint(remote["run_id"])
    t0 = time.time()
    again = slurm_sweep(tmp_path, "slurm", dets, f"cache_dir={tmp_path / 'c_slurm'}", *SMALL)
    wall = time.time() - t0
    assert submitted(again) == 0
    assert "resume: 2 of 2 jobs skipped before submission" in again.stdout + again.stderr
    assert "2 jobs: 0 ok, 0 failed, 2 skipped" in again.stdout
    print(f"rerun of a finished 2-job sweep: 0 jobs submitted, {wall:.1f} s")


@pytest.mark.slurm
@needs_cluster
def test_a_request_the_partition_cannot_meet_is_refused_before_submission(tmp_path):
    cpus = parse_sinfo(
        subprocess.run(["sinfo", "-h", "-o", "%P|%c|%m|%G"], capture_output=True, text=True).stdout,
        None,
    ).cpus
    proc = slurm_sweep(
        tmp_path, "s", "detector=pood_msp", f"hydra.launcher.cpus_per_task={cpus + 1}", check=False
    )
    assert proc.returncode != 0 and submitted(proc) == 0
    assert f"Fix: hydra.launcher.cpus_per_task={cpus}" in proc.stdout + proc.stderr


def run_until(proc: subprocess.Popen, timeout: float) -> tuple[int, str]:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        out, _ = proc.communicate()
        pytest.fail(f"the multirun did not end within {timeout:.0f} s:\n{out[-3000:]}")
    return proc.returncode, out


def start_sweep(tmp_path: Path, *args: str) -> subprocess.Popen:
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "ood_bench.run", "-m", "hydra/launcher=slurm", *args]
    return subprocess.Popen(
        cmd,
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


@pytest.mark.slurm
@needs_cluster
def test_a_cancelled_task_is_a_failed_row_and_the_others_are_collected(tmp_path):
    # task 1 trains its own backbone for minutes (3000 epochs), so it is surely running when it
    # is cancelled; task 0 (15 epochs) finishes in seconds. Both are pood_msp: the job
    # directories differ by their config hash, the victim is the one whose config asks 3000.
    sweep = tmp_path / "s"
    proc = start_sweep(
        tmp_path,
        "detector=pood_msp",
        "backbone.train.epochs=15,3000",
        f"hydra.sweep.dir={sweep}",
        f"cache_dir={tmp_path / 'c'}",
        "ood_sets=[uniform_noise]",
    )
    deadline = time.time() + 240
    victim = None
    while time.time() < deadline and victim is None:
        for log in sweep.glob("*pood_msp_*/run.log"):
            config = _read(log.parent / "resolved_config.yaml")
            if "epochs: 3000" in config and "job " in _read(log):
                victim = log.parent
        time.sleep(0.5)
    assert victim is not None, "the 3000-epoch task did not start"
    task = next((sweep / ".submitit").glob("*_1")).name  # the second sweep value is task 1
    subprocess.run(["scancel", task], check=True)
    code, out = run_until(proc, 240)
    assert code == 1, out[-3000:]
    rows = job_rows(sweep)
    victim_hash = victim.name.rsplit("_", 1)[1]
    failed = rows[rows["status"] == "failed"]
    assert list(failed["config_hash"].unique()) == [victim_hash]
    assert "cancelled" in failed["error"].iloc[0]
    ok = rows[rows["status"] == "ok"]
    assert victim_hash not in set(ok["config_hash"]) and "id_acc" in set(ok["metric"])
    assert "2 jobs: 1 ok, 1 failed" in out
    named = rf"pood_msp_s0_{victim_hash} \(digits/digits_cnn/pood_msp seed 0\): .*cancelled"
    assert re.search(named, out), out[-3000:]


@pytest.mark.slurm
@needs_cluster
def test_a_task_over_its_time_limit_is_a_failed_row_time_limit(tmp_path):
    sweep = tmp_path / "s"
    proc = start_sweep(
        tmp_path,
        "detector=pood_msp",
        "hydra.launcher.timeout_min=1",
        "hydra.launcher.signal_delay_s=20",
        f"hydra.sweep.dir={sweep}",
        f"cache_dir={tmp_path / 'c'}",
        "ood_sets=[uniform_noise]",
        "backbone.train.epochs=100000",  # trains past the limit
    )
    code, out = run_until(proc, 300)
    assert code == 1, out[-3000:]
    row = job_rows(sweep).iloc[0]
    assert row["status"] == "failed" and "time limit" in row["error"], row["error"]
    assert "1 job: 0 ok, 1 failed" in out


@pytest.mark.slurm
@needs_cluster
def test_a_task_over_its_memory_is_a_failed_row_out_of_memory(tmp_path):
    if not (DATA / "MNIST").is_dir() or not (DATA / "FashionMNIST").is_dir():
        pytest.skip(f"needs MNIST and FashionMNIST under {DATA} (OOD_BENCH_DATA)")
    sweep = tmp_path / "s"
    proc = start_sweep(
        tmp_path,
        "detector=pood_msp",
        "hydra.launcher.mem_gb=1",  # MNIST's jobs peak at ~1.35 GB (digits' under 1 GB)
        "benchmark=mnist_fashion",
        "backbone=lenet",
        "backbone.train.epochs=1",
        f"data_root={DATA}",
        f"hydra.sweep.dir={sweep}",
        f"cache_dir={tmp_path / 'c'}",
    )
    code, out = run_until(proc, 300)
    assert code == 1, out[-3000:]
    row = job_rows(sweep).iloc[0]
    assert row["status"] == "failed" and "out of memory" in row["error"], row["error"]
    assert "1 job: 0 ok, 1 failed" in out

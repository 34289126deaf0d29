"""``hydra/launcher=slurm``: Hydra's submitit SLURM launcher with what a real cluster needs.

- **Resume before submission**: jobs whose complete results exist (same config hash and backbone
  sha256, :func:`ood_bench.job.find_complete`) are not submitted; the log says how many.
- **No silent pending**: the request (CPUs, memory, GPUs per node) is checked against the
  partition's nodes (``sinfo``) before submission; a request no node can meet is refused with the
  limit and the override. Jobs that wait anyway get a log line a minute with ``squeue``'s reason.
- **No hang, no lost task**: job states come from ``squeue -t all`` (and ``sacct`` when the
  cluster has accounting), not from ``sacct`` alone, so a cancelled task of a cluster without
  accounting is seen ending. A task that ends without a result (cancelled, time limit, out of
  memory) gets a ``failed`` row with the cause unless it wrote one itself
  (:mod:`ood_bench.interrupt`); the other tasks are collected and the sweep's summary names it.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import re
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import (
    SlurmLauncher as SubmititSlurmLauncher,
)
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from ood_bench.errors import ConfigError

log = logging.getLogger(__name__)

# states of a job that has ended (squeue -t all keeps them for MinJobAge; sacct for good)
ENDED = {
    "BOOT_FAIL",
    "CANCELLED",
    "COMPLETED",
    "DEADLINE",
    "FAILED",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "PREEMPTED",
    "TIMEOUT",
}
# a task that ended without a result: the cause in the failed row, by SLURM state
CAUSES = {
    "CANCELLED": "cancelled (scancel or preemption). Fix: rerun the sweep (complete jobs skip)",
    "TIMEOUT": "time limit. Fix: raise hydra.launcher.timeout_min",
    "OUT_OF_MEMORY": "out of memory. Fix: raise hydra.launcher.mem_gb",
    "NODE_FAIL": "node failure. Fix: rerun the sweep, complete jobs are skipped",
    "PREEMPTED": "preempted. Fix: rerun the sweep, complete jobs are skipped",
}
# the same causes, from the lines slurmstepd writes into the job's log (no accounting needed)
LOG_CAUSES = [
    (re.compile(r"CANCELLED AT .* DUE TO TIME LIMIT"), "TIMEOUT"),
    (re.compile(r"Exceeded job memory limit|oom-kill|Out Of Memory", re.I), "OUT_OF_MEMORY"),
    (re.compile(r"CANCELLED AT"), "CANCELLED"),
]
POLL_S = 1.0  # how often result files and squeue are read
PENDING_LOG_S = 60.0  # how often waiting jobs are reported with their reason
GRACE_S = 5.0  # a result file may land just after the task leaves the queue


@dataclass
class NodeLimits:
    """The largest node of a partition (``sinfo``): CPUs, memory (MiB), GPUs."""

    partition: str
    cpus: int
    mem_mb: int
    gpus: int


def _gpus(gres: str) -> int:
    """GPUs in a ``sinfo %G`` field (``gpu:2``, ``gpu:a100:4(S:0)``, ``(null)``)."""
    total = 0
    for item in gres.split(","):
        parts = item.split("(")[0].split(":")
        if parts[0] == "gpu" and parts[-1].isdigit():
            total += int(parts[-1])
    return total


def parse_sinfo(text: str, partition: str | None) -> NodeLimits | None:
    """The largest node of ``partition`` (None: the default, marked ``*``) in the output of
    ``sinfo -h -o "%P|%c|%m|%G"``, or None when the partition is not listed."""
    best: NodeLimits | None = None
    for line in text.splitlines():
        fields = line.strip().split("|")
        if len(fields) != 4:
            continue
        name, cpus, mem, gres = fields
        default = name.endswith("*")
        name = name.rstrip("*")
        if (partition is None and not default) or (partition is not None and name != partition):
            continue
        node = NodeLimits(name, int(cpus.rstrip("+")), int(mem.rstrip("+")), _gpus(gres))
        if best is None:
            best = node
        else:
            best = NodeLimits(
                name,
                max(best.cpus, node.cpus),
                max(best.mem_mb, node.mem_mb),
                max(best.gpus, node.gpus),
            )
    return best


def partition_limits(partition: str | None) -> NodeLimits | None:
    """:func:`parse_sinfo` of this cluster's ``sinfo`` (None when sinfo is not there)."""
    if shutil.which("sinfo") is None:
        return None
    out = subprocess.run(
        ["sinfo", "-h", "-o", "%P|%c|%m|%G"], capture_output=True, text=True, timeout=30
    )
    if out.returncode != 0:
        raise ConfigError(
            f"sinfo failed ({out.stderr.strip()}): the SLURM cluster does not answer. Fix: "
            "check `sinfo` on this machine (.ci/slurm_cluster.sh start for a local one)"
        )
    limits = parse_sinfo(out.stdout, partition)
    if limits is None:
        names = sorted({line.split("|")[0].rstrip("*") for line in out.stdout.splitlines()})
        which = f"partition {partition!r}" if partition else "a default partition"
        raise ConfigError(
            f"sinfo lists no {which} (partitions: {', '.join(names) or 'none'}). Fix: "
            f"hydra.launcher.partition=<one of them>"
        )
    return limits


def check_request(params: dict[str, Any], limits: NodeLimits) -> None:
    """Refuse a request no node of the partition can meet (SLURM would leave it pending for
    ever, reason ``PartitionConfig``), naming the limit and the override."""
    where = f"the largest node of partition {limits.partition!r} (sinfo)"
    tasks = int(params.get("tasks_per_node") or 1)
    cpus = int(params.get("cpus_per_task") or 1) * tasks
    if cpus > limits.cpus:
        fix = max(1, limits.cpus // tasks)
        raise ConfigError(
            f"the SLURM jobs ask for {cpus} CPUs per node (hydra.launcher.cpus_per_task="
            f"{params.get('cpus_per_task')} x tasks_per_node={tasks}), but {where} has "
            f"{limits.cpus}: they would stay pending for ever. "
            f"Fix: hydra.launcher.cpus_per_task={fix}"
        )
    mem_gb = params.get("mem_gb")
    if mem_gb is not None and int(mem_gb) * 1024 > limits.mem_mb:
        raise ConfigError(
            f"the SLURM jobs ask for {mem_gb} GB of memory per node (hydra.launcher.mem_gb), "
            f"but {where} has {limits.mem_mb} MB: they would stay pending for ever. "
            f"Fix: hydra.launcher.mem_gb={max(1, limits.mem_mb // 1024)}"
        )
    gpus = int(params.get("gpus_per_node") or 0)
    if gpus > limits.gpus:
        raise ConfigError(
            f"the SLURM jobs ask for {gpus} GPUs per node (hydra.launcher.gpus_per_node), but "
            f"{where} has {limits.gpus}: they would stay pending for ever. Fix: "
            f"hydra.launcher.gpus_per_node={limits.gpus}"
            + ("" if limits.gpus else " (and device=cpu), or a GPU partition")
        )


def queue_states(array_ids: Sequence[str]) -> dict[str, tuple[str, str]] | None:
    """``{task id: (state, reason)}`` of the tasks of these arrays that SLURM still knows
    (``squeue -t all``, ended ones included), or None when squeue does not answer."""
    cmd = ["squeue", "-h", "-r", "-t", "all", "-o", "%i|%T|%r", "-j", ",".join(array_ids)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        # squeue refuses ids it no longer knows; every task has then left the queue
        return {} if "Invalid job id" in out.stderr else None
    states = {}
    for line in out.stdout.splitlines():
        fields = line.strip().split("|")
        if len(fields) == 3:
            states[fields[0]] = (fields[1], fields[2])
    return states


def accounting_state(task_id: str) -> str | None:
    """The task's final state from ``sacct``, or None without accounting."""
    if shutil.which("sacct") is None:
        return None
    try:
        out = subprocess.run(
            ["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", task_id],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in out.stdout.splitlines() if out.returncode == 0 else []:
        jid, _, state = line.partition("|")
        if jid == task_id and state:
            return state.split()[0]  # "CANCELLED by 0" → CANCELLED
    return None


def log_cause(text: str) -> str | None:
    """The SLURM state a job's log reveals (slurmstepd's last words), or None."""
    for pattern, state in LOG_CAUSES:
        if pattern.search(text):
            return state
    return None


@dataclass
class Planned:
    """One job of the sweep: its overrides, config, output folder and, once submitted, its
    submitit job."""

    idx: int
    overrides: list[str]
    config: DictConfig  # with its hydra node (as the job will see it)
    task_cfg: DictConfig
    out_dir: Path
    job: Any = None
    result: JobReturn | None = None
    ended_at: float | None = None


class SlurmLauncher(SubmititSlurmLauncher):
    """The submitit SLURM launcher with resume before submission, a resource check, a poll
    loop that sees cancelled tasks without accounting, and a ``failed`` row for each task that
    ended without a result (see the module's docstring)."""

    def plan(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[Planned]:
        """Each job's config and output folder, resolved as Hydra's ``run_job`` will."""
        assert self.hydra_context is not None and self.config is not None
        saved = HydraConfig.instance().cfg
        out = []
        try:
            for i, overrides in enumerate(job_overrides):
                cfg = self.hydra_context.config_loader.load_sweep_config(
                    self.config, list(overrides)
                )
                with open_dict(cfg.hydra.job):
                    cfg.hydra.job.num = initial_job_idx + i
                HydraConfig.instance().set_config(cfg)
                out_dir = Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir)
                with read_write(cfg.hydra.runtime), open_dict(cfg.hydra.runtime):
                    cfg.hydra.runtime.output_dir = str(out_dir.absolute())
                task_cfg = copy.deepcopy(cfg)
                with read_write(task_cfg), open_dict(task_cfg):
                    del task_cfg["hydra"]
                out.append(Planned(initial_job_idx + i, list(overrides), cfg, task_cfg, out_dir))
        finally:
            if saved is not None:
                HydraConfig.instance().set_config(saved)
        return out

    def skip_complete(self, planned: list[Planned]) -> list[Planned]:
        """Leave out the jobs whose complete results exist (same config hash and backbone
        sha256), as each job would skip itself, but before any is submitted: each gets its
        results copied into its folder and a ``skipped`` status. Returns the jobs to submit."""
        from ood_bench.job import find_complete, job_identity
        from ood_bench.pipeline import build_benchmark
        from ood_bench.sweep import write_status

        todo = []
        saved = HydraConfig.instance().cfg
        try:
            for p in planned:
                cfg = p.task_cfg
                done = None
                if not cfg.get("rerun", False):
                    HydraConfig.instance().set_config(p.config)
                    try:
                        job = job_identity(cfg, p.out_dir.parent.name)
                        out_csv = p.out_dir / "metrics.csv"
                        done = find_complete(cfg, job, out_csv, build_benchmark(cfg))
                    except Exception as e:  # the job itself will say what is wrong
                        log.debug("resume check of %s: %s", p.out_dir.name, e)
                if done is None:
                    todo.append(p)
                    continue
                p.out_dir.mkdir(parents=True, exist_ok=True)
                if done != out_csv:
                    shutil.copyfile(done, out_csv)
                write_status(p.out_dir, "skipped", job)
                p.result = JobReturn(
                    overrides=p.overrides,
                    cfg=cfg,
                    hydra_cfg=p.config,
                    working_dir=os.getcwd(),
                    task_name=str(p.config.hydra.job.name),
                    status=JobStatus.COMPLETED,
                    _return_value=None,
                )
        finally:
            if saved is not None:
                HydraConfig.instance().set_config(saved)
        skipped = len(planned) - len(todo)
        log.info(
            "resume: %d of %d jobs skipped before submission (complete results with the same "
            "config hash and backbone sha256; rerun=true forces them), %d to submit",
            skipped,
            len(planned),
            len(todo),
        )
        return todo

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        """Plan, skip complete jobs, check the request, submit one array, wait and collect."""
        import submitit

        assert self.config is not None
        planned = self.plan(job_overrides, initial_job_idx)
        todo = self.skip_complete(planned)
        if todo:
            try:
                limits = partition_limits(self.params.get("partition"))
                if limits is not None:
                    check_request(self.params, limits)
            except ConfigError as e:  # the message, not a traceback through Hydra's sweeper
                log.error("%s", e)
                raise SystemExit(1) from None
            self.submit(todo, submitit)
            self.wait(todo)
        return [p.result for p in planned]  # type: ignore[misc]

    def submit(self, todo: list[Planned], submitit: Any) -> None:
        """One array for the jobs to run (as the submitit launcher does)."""
        params = dict(self.params)
        init_keys = {"submitit_folder", "max_num_timeout"}
        executor = submitit.AutoExecutor(
            cluster=self._EXECUTOR,
            folder=params["submitit_folder"],
            **{f"{self._EXECUTOR}_max_num_timeout": params.get("max_num_timeout", 0)},
        )
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(
            **{
                (k if k in base else f"{self._EXECUTOR}_{k}"): v
                for k, v in params.items()
                if k not in init_keys
            }
        )
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        log.info("Submitit '%s' sweep output dir : %s", self._EXECUTOR, sweep_dir)
        for p in todo:
            log.info("\t#%d : %s", p.idx, " ".join(filter_overrides(p.overrides)))
        state = Singleton.get_state()
        args = [(p.overrides, "hydra.sweep.dir", p.idx, f"job_id_for_{p.idx}", state) for p in todo]
        self.submitted_at = time.time()
        jobs = executor.map_array(self, *zip(*args, strict=True))
        for p, job in zip(todo, jobs, strict=True):
            p.job = job
        log.info("submitted %d jobs as SLURM array %s", len(jobs), jobs[0].job_id.split("_")[0])

    def wait(self, todo: list[Planned]) -> None:
        """Until every task has a result or has ended without one (then a ``failed`` row)."""
        arrays = sorted({p.job.job_id.split("_")[0] for p in todo})
        last_report = time.time()
        waiting = list(todo)
        while waiting:
            states = queue_states(arrays)
            now = time.time()
            for p in list(waiting):
                if p.job.paths.result_pickle.exists():
                    p.result = self.collect(p)
                    waiting.remove(p)
                    continue
                if states is None:
                    continue  # squeue did not answer: ask again
                state = states.get(p.job.job_id, ("", ""))[0]
                if state and state not in ENDED:
                    continue
                p.ended_at = p.ended_at or now
                if now - p.ended_at >= GRACE_S:
                    p.result = self.ended_without_result(p, state)
                    waiting.remove(p)
            if waiting and now - last_report >= PENDING_LOG_S:
                last_report = now
                self.report_waiting(waiting, states or {})
            if waiting:
                time.sleep(POLL_S)

    @staticmethod
    def report_waiting(waiting: list[Planned], states: dict[str, tuple[str, str]]) -> None:
        """One log line: how many tasks run, how many wait and why (squeue's reason)."""
        by_state: dict[str, list[str]] = {}
        for p in waiting:
            state, reason = states.get(p.job.job_id, ("UNKNOWN", ""))
            key = f"{state} ({reason})" if state == "PENDING" else state
            by_state.setdefault(key, []).append(p.job.job_id)
        log.info(
            "waiting for %d SLURM tasks: %s",
            len(waiting),
            "; ".join(f"{k}: {', '.join(v)}" for k, v in sorted(by_state.items())),
        )
        if any("PartitionConfig" in k or "QOS" in k or "Assoc" in k for k in by_state):
            log.warning(
                "pending tasks wait for a limit of the partition, QoS or account (the reason "
                "above): they may never start. Fix: lower hydra.launcher.cpus_per_task / "
                "mem_gb / timeout_min, or choose hydra.launcher.partition / qos / account"
            )

    def collect(self, p: Planned) -> JobReturn:
        """The task's result; an exception in its result file becomes a ``failed`` row."""
        try:
            return p.job.results()[0]
        except Exception as e:
            first = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
            return self.failed(p, f"the task raised {type(e).__name__}: {first}", "")

    def ended_without_result(self, p: Planned, queue_state: str) -> JobReturn:
        """A task that left the queue with no result: its state (sacct, squeue or its log)
        names the cause."""
        state = accounting_state(p.job.job_id) or queue_state
        text = ""
        for path in (p.job.paths.stderr, p.job.paths.stdout):
            with contextlib.suppress(OSError):
                text += Path(path).read_text(errors="replace")
        if state in ("", "FAILED", "COMPLETED") or state not in CAUSES:
            state = log_cause(text) or state or "UNKNOWN"
        cause = CAUSES.get(state, "ended without a result")
        return self.failed(
            p,
            f"{cause} (SLURM task {p.job.job_id} ended {state} without a result; "
            f"log: {p.job.paths.stderr})",
            state,
        )

    def failed(self, p: Planned, why: str, state: str) -> JobReturn:
        """Record the task as failed (its ``failed`` row and status) unless it wrote its own
        failed row while being stopped (ood_bench.interrupt); the sweep goes on."""
        from ood_bench.job import job_identity
        from ood_bench.results import make_row, to_frame, write_csv
        from ood_bench.sweep import STATUS_FILE, write_status

        status_file = p.out_dir / STATUS_FILE
        own = status_file.is_file() and status_file.stat().st_mtime >= self.submitted_at
        if own and '"failed"' in status_file.read_text():
            log.error("SLURM task %s (%s) failed: %s", p.job.job_id, p.out_dir.name, why)
        else:
            saved = HydraConfig.instance().cfg
            HydraConfig.instance().set_config(p.config)
            try:
                job = job_identity(p.task_cfg, p.out_dir.parent.name)
            finally:
                if saved is not None:
                    HydraConfig.instance().set_config(saved)
            job.update(status="failed", error=f"SlurmTaskEnded: {why}"[:1000])
            p.out_dir.mkdir(parents=True, exist_ok=True)
            write_csv(to_frame([make_row(job, "job", float("nan"))]), p.out_dir / "metrics.csv")
            write_status(p.out_dir, "failed", job, job["error"])
            log.error("SLURM task %s (%s): %s", p.job.job_id, p.out_dir.name, why)
        return JobReturn(
            overrides=p.overrides,
            cfg=p.task_cfg,
            hydra_cfg=p.config,
            working_dir=os.getcwd(),
            task_name=str(p.config.hydra.job.name),
            status=JobStatus.COMPLETED,  # recorded as a failed row: the sweep goes on
            _return_value=None,
        )

"""How many CPU threads a job uses (the ``threads`` option), chosen once at its start.

torch's default, one thread per core, oversubscribes a machine where several jobs run at once
(a parallel launcher) or other users' processes are busy: on a 2-core machine at load 8, training
the digits CNN took 277 s with 2 threads and 36 s with 1. ``threads=auto`` (the default) takes
``OMP_NUM_THREADS`` when it is set, else the cores this process may run on (its CPU affinity:
``taskset``, SLURM's ``cpus_per_task``) divided by the jobs a parallel launcher runs at once, at
most :data:`AUTO_MAX`. The count applies to torch (intra- and inter-op) and to the BLAS/OpenMP
pools of numpy, scipy and scikit-learn (threadpoolctl), and is recorded in every result row.

The thread count changes the weights of a self-trained backbone (floating-point sums in another
order: 1 and 2 threads train different digits CNNs), not what a given checkpoint computes: the
backbone's sha256, recorded beside it, tells which weights a result used (docs/sweeps.md).
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any

import torch
from threadpoolctl import threadpool_limits

from ood_bench.errors import ConfigError

log = logging.getLogger(__name__)
# auto never takes more: the harness's CPU models gain little beyond, and a few cores stay free
AUTO_MAX = 4
_limits: Any = None  # the threadpoolctl limit in force (kept: it lasts as long as the object)


def available_cores() -> int:
    """Cores this process may run on: its CPU affinity where the OS tells it, else all."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except (AttributeError, OSError):  # macOS, Windows
        return max(os.cpu_count() or 1, 1)


def parallel_jobs(launcher: Any, cores: int) -> int:
    """Jobs a launcher runs at once on this machine: joblib's ``n_jobs`` (negative: counted
    from the cores, as joblib does), 1 for any other launcher (basic: one after another;
    SLURM: each task has its own cores, which the affinity shows)."""
    if launcher is None or "joblib" not in str(launcher.get("_target_", "")):
        return 1
    n = int(launcher.get("n_jobs", 1) or 1)
    return max(cores + 1 + n if n < 0 else n, 1)


def resolve_threads(value: Any, launcher: Any = None) -> int:
    """The thread count of ``threads=value``: a positive integer as given, or for ``auto``
    ``OMP_NUM_THREADS`` when set, else ``min(AUTO_MAX, cores // parallel jobs)`` (at least 1)."""
    if str(value).strip().lower() == "auto":
        env = os.environ.get("OMP_NUM_THREADS", "").strip()
        if env.isdigit() and int(env) > 0:
            return int(env)
        cores = available_cores()
        return max(1, min(AUTO_MAX, cores // parallel_jobs(launcher, cores)))
    try:
        n = int(str(value))
    except ValueError:
        n = 0
    if n < 1:
        raise ConfigError(
            f"threads={value!r} is neither auto nor a positive integer. Fix: threads=auto "
            "(the default: the cores this job may use, shared with the jobs running beside it) "
            "or e.g. threads=1 on a machine other people are using."
        )
    return n


def apply_threads(n: int) -> int:
    """Use ``n`` threads in this process from now on (torch and the BLAS/OpenMP pools); warns
    when the machine looks busier than its cores, where fewer threads are faster."""
    global _limits
    torch.set_num_threads(n)
    # settable once per process, before any inter-op work (a sweep's 2nd job): keep the first
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(n)
    _limits = threadpool_limits(limits=n)
    cores = available_cores()
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        load = 0.0
    if n > 1 and load > cores:
        log.warning(
            "threads=%d on a busy machine (load %.1f on %d cores): other processes compete for "
            "the cores, and fewer threads are often faster there (threads=1)",
            n,
            load,
            cores,
        )
    return n


def set_job_threads(cfg: Any, launcher: Any = None) -> int:
    """Resolve the job's ``threads`` option (``auto`` when absent) and apply it; the count."""
    value = cfg.get("threads", "auto") if hasattr(cfg, "get") else "auto"
    n = apply_threads(resolve_threads(value, launcher))
    log.info("threads=%s: %d thread(s) for torch and the BLAS pools", value, n)
    return n

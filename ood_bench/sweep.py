"""The end of a multirun (``python -m ood_bench.run -m ...``, ``ood_bench.run_novelty -m``): one
summary line (jobs ok / failed / skipped), the failed jobs' reasons, and a non-zero exit status
when a job failed, unless ``allow_failures=true``.

Every job leaves ``job_status.json`` in its output folder (:func:`write_status`, called by
:func:`ood_bench.job.run_job`): ``ok``, ``failed`` (with the error, as in its ``failed`` row) or
``skipped`` (complete results existed), and the rows its ``metrics.csv`` holds.
:class:`SweepSummary`, a Hydra callback registered under ``hydra.callbacks`` in
``conf/config.yaml`` and ``conf/novelty.yaml``, reads the statuses of this multirun's jobs when
the sweep ends. A job counts for the multirun whose token it carries (``OOD_BENCH_MULTIRUN``, set
when the multirun starts and inherited by local, joblib and SLURM jobs), or, without a token,
when it wrote its status after the multirun started. Jobs of other invocations in the same sweep
folder are not counted, and a second multirun into a folder another one is still writing into is
refused (:func:`claim_sweep_dir`).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from ood_bench.atomic import atomic_write_text

if TYPE_CHECKING:
    import pandas as pd

STATUS_FILE = "job_status.json"
# the mark of the multirun writing into a sweep folder (claim_sweep_dir)
LOCK_FILE = ".ood_bench_multirun.json"
TOKEN_ENV = "OOD_BENCH_MULTIRUN"
# the error type of a job that cannot apply (ood_bench.errors.NotApplicable): counted apart
NOT_APPLICABLE = "NotApplicable"


def write_status(
    out_dir: str | Path,
    status: str,
    job: dict[str, Any],
    error: str = "",
    rows: pd.DataFrame | None = None,
) -> None:
    """Leave the job's outcome (``ok``, ``failed``, ``skipped``) for the multirun's summary,
    with the rows its ``metrics.csv`` holds (``rows``: that frame): how many and of which run,
    so a file cut after the job wrote it is caught (:func:`ood_bench.results.read_results`)."""
    record = {
        "status": status,
        "error": error,
        "job": Path(out_dir).name,
        "benchmark": job.get("benchmark", ""),
        "backbone": job.get("backbone", ""),
        "detector": job.get("detector", ""),
        "seed": job.get("seed"),
        "token": os.environ.get(TOKEN_ENV, ""),
        "time": time.time(),
    }
    if rows is not None:
        record["metrics_rows"] = len(rows)
        record["metrics_run_ids"] = sorted(set(map(str, rows["run_id"])))
    atomic_write_text(Path(out_dir) / STATUS_FILE, json.dumps(record, indent=1) + "\n")


class SweepBusy(RuntimeError):
    """Another multirun is writing into the same sweep folder."""


def claim_sweep_dir(sweep_dir: str | Path, token: str) -> Path:
    """Mark ``sweep_dir`` as this multirun's (:data:`LOCK_FILE`), or raise :class:`SweepBusy`
    naming the multirun that holds it. Two multiruns in one folder share its job folders (one
    per config), so each overwrites the other's ``job_status.json`` and its summary counts
    fewer jobs than it launched. A mark left by a multirun that died on this host is taken
    over; one from another host is not (its liveness cannot be checked here)."""
    d = Path(sweep_dir)
    d.mkdir(parents=True, exist_ok=True)
    lock = d / LOCK_FILE
    mine = {"token": token, "pid": os.getpid(), "host": socket.gethostname(), "time": time.time()}
    for _ in range(3):
        tmp = atomic_write_text(d / f".{LOCK_FILE}.{token}", json.dumps(mine) + "\n")
        try:
            try:
                os.link(tmp, lock)  # creates the mark with its content, or fails when it exists
            except FileExistsError:
                raise
            except OSError:  # a file system without hard links: create-exclusive, then write
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                with os.fdopen(fd, "w") as f:
                    f.write(json.dumps(mine) + "\n")
            return lock
        except FileExistsError:
            other = _read_json(lock)
            if other is not None and not _dead(other):
                raise SweepBusy(_busy_message(d, lock, other)) from None
            lock.unlink(missing_ok=True)  # a dead multirun's mark
        finally:
            tmp.unlink(missing_ok=True)
    raise SweepBusy(f"cannot mark {d} as this multirun's ({lock} keeps reappearing)")


def release_sweep_dir(sweep_dir: str | Path, token: str) -> None:
    """Remove this multirun's mark from ``sweep_dir`` (another's is left alone)."""
    lock = Path(sweep_dir) / LOCK_FILE
    other = _read_json(lock)
    if other is not None and other.get("token") == token:
        lock.unlink(missing_ok=True)


def _read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from ``path``, or None when absent, unreadable or not an object."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _dead(record: dict[str, Any]) -> bool:
    """Whether the multirun of a mark is known to be gone (its process, on this host)."""
    if record.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(record.get("pid", 0)), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError, OSError):
        return False
    return False


def _busy_message(d: Path, lock: Path, other: dict[str, Any]) -> str:
    """Which multirun holds ``d``, why this one cannot share it, and the fixes."""
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(other.get("time", 0))))
    return (
        f"another multirun (pid {other.get('pid')} on {other.get('host')}, started {started}) "
        f"is writing into the sweep folder {d}. Two multiruns in one folder share its job "
        "folders (one per config), so each would overwrite the other's job_status.json and "
        "report fewer jobs than it launched. Fix: wait for it to end (then this sweep skips "
        "the jobs it completed), or give this multirun its own folder (hydra.sweep.dir=...). "
        f"If no multirun is running there any more, delete {lock}."
    )


def read_statuses(sweep_dir: str | Path, token: str, since: float) -> list[dict[str, Any]]:
    """The statuses of one multirun's jobs under ``sweep_dir``: those carrying ``token``, and
    those without a token written at or after ``since`` (a launcher that did not pass the
    environment on)."""
    out = []
    for path in sorted(Path(sweep_dir).rglob(STATUS_FILE)):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # being written or foreign: not this multirun's
        if not isinstance(record, dict):
            continue
        mine = record["token"] == token if record.get("token") else record.get("time", 0) >= since
        if mine:
            out.append(record)
    return out


@dataclass
class Summary:
    """A multirun's outcome: counts and the failed jobs' records."""

    ok: int = 0
    skipped: int = 0
    failed: list[dict[str, Any]] = field(default_factory=list)

    @property
    def not_applicable(self) -> int:
        """Failed jobs whose detector cannot apply (:class:`~ood_bench.errors.NotApplicable`)."""
        return sum(is_not_applicable(r) for r in self.failed)

    def line(self) -> str:
        """The one summary line: ``N jobs: a ok, b failed (c not applicable), d skipped``."""
        n = self.ok + self.skipped + len(self.failed)
        na = f" ({self.not_applicable} not applicable)" if self.not_applicable else ""
        return (
            f"{n} job{'s' if n != 1 else ''}: {self.ok} ok, {len(self.failed)} failed{na}, "
            f"{self.skipped} skipped (complete results existed)"
        )

    def reasons(self) -> list[str]:
        """One line per failed job: its folder, what it ran, and the first line of its error."""
        out = []
        for r in sorted(self.failed, key=lambda r: r["job"]):
            what = f"{r['benchmark']}/{r['backbone']}/{r['detector']} seed {r['seed']}"
            first = (r.get("error") or "no error recorded").strip().splitlines()[0]
            out.append(f"  {r['job']} ({what}): {first}")
        return out


def is_not_applicable(record: dict[str, Any]) -> bool:
    """Whether a failed job's error is a NotApplicable refusal."""
    return str(record.get("error", "")).startswith(f"{NOT_APPLICABLE}:")


def summarise(records: list[dict[str, Any]]) -> Summary:
    """Count the statuses of a multirun's jobs."""
    s = Summary()
    for r in records:
        if r["status"] == "ok":
            s.ok += 1
        elif r["status"] == "skipped":
            s.skipped += 1
        else:
            s.failed.append(r)
    return s


class SweepSummary(Callback):
    """Hydra callback: at the end of a multirun, print the summary line and the failed jobs'
    reasons, and exit with status 1 when a job failed unless ``allow_failures=true``."""

    def __init__(self) -> None:
        self.token = ""
        self.since = 0.0
        self.sweep_dir: str | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Give this multirun's jobs a token, and note where they write and when it started."""
        self.token = uuid.uuid4().hex
        self.since = time.time()
        sweep_dir = str(OmegaConf.select(config, "hydra.sweep.dir"))
        try:
            claim_sweep_dir(sweep_dir, self.token)
        except SweepBusy as e:  # an exception would only be a warning: stop before any job
            print(f"[ood_bench] refusing to start this multirun: {e}", file=sys.stderr, flush=True)
            sys.exit(1)
        os.environ[TOKEN_ENV] = self.token
        self.sweep_dir = sweep_dir

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Report, then ``sys.exit(1)`` when a job failed and failures are not allowed (an
        exception would not do: Hydra turns a callback's exception into a warning)."""
        os.environ.pop(TOKEN_ENV, None)
        if self.sweep_dir is None:
            return
        release_sweep_dir(self.sweep_dir, self.token)
        s = summarise(read_statuses(self.sweep_dir, self.token, self.since))
        allow = bool(OmegaConf.select(config, "allow_failures", default=False))
        lines = [f"[ood_bench] sweep {self.sweep_dir}: {s.line()}"]
        if s.failed:
            lines.append("[ood_bench] failed jobs (the error column of their metrics.csv):")
            lines += s.reasons()
            lines.append(
                "[ood_bench] failures allowed (allow_failures=true): exit status 0"
                if allow
                else "[ood_bench] exit status 1 (allow_failures=true accepts failed jobs, e.g. "
                "options that cannot apply)"
            )
        print("\n".join(lines), flush=True)
        if s.failed and not allow:
            sys.stdout.flush()
            sys.exit(1)

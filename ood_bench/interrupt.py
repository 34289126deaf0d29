"""A clean end for a job that SLURM stops: SIGTERM (``scancel``, preemption, the time limit)
and SIGUSR2 (SLURM's signal before the time limit, ``hydra.launcher.signal_delay_s`` ahead)
raise :class:`JobInterrupted` in the job, so :func:`ood_bench.job.run_job` writes its ``failed``
row ("cancelled" or "time limit") within seconds and the job ends.

Without this, submitit's job runner logs "Bypassing signal SIGTERM" and the job runs on until
SLURM's SIGKILL (``KillWait`` later, 30 s by default), leaving no row that says why it stopped.
The handlers are installed only inside a SLURM job (``SLURM_JOB_ID`` set): a local sweep keeps
the default (a SIGTERM ends the process at once, and a restart resumes it).
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import threading
from collections.abc import Callable
from typing import Any, TypeVar

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

CAUSES = {
    signal.SIGTERM: (
        "cancelled: SIGTERM from SLURM (scancel, preemption or the job's time limit); "
        "the job stopped before finishing. Fix: rerun the sweep, complete jobs are skipped"
    ),
    signal.SIGUSR2: (
        "time limit: SIGUSR2, SLURM's warning before the job's time limit "
        "(hydra.launcher.signal_delay_s before it). Fix: raise hydra.launcher.timeout_min"
    ),
}


class JobInterrupted(BaseException):
    """The job was stopped by a signal; the message says which and why. A BaseException (as
    KeyboardInterrupt) so that code wrapping errors (``instantiate``, imports) lets it through
    to the job scaffold, which writes the failed row."""


def _raise(signum: int, frame: Any) -> None:
    """Signal handler: turn the signal into an exception in the job's main thread."""
    log.error("caught %s: stopping the job", signal.Signals(signum).name)
    raise JobInterrupted(CAUSES[signal.Signals(signum)])


def in_slurm_job() -> bool:
    """Whether this runs inside a SLURM job, in the main thread (where handlers can be set)."""
    main = threading.current_thread() is threading.main_thread()
    return main and bool(os.environ.get("SLURM_JOB_ID"))


def interruptible(run: F) -> F:
    """Decorate a job scaffold: inside a SLURM job, SIGTERM and SIGUSR2 raise
    :class:`JobInterrupted` while it runs; the previous handlers are restored after."""

    @functools.wraps(run)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not in_slurm_job():
            return run(*args, **kwargs)
        previous = {s: signal.signal(s, _raise) for s in CAUSES}
        try:
            return run(*args, **kwargs)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    return wrapper  # type: ignore[return-value]

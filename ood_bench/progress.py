"""Progress of long work as log lines, for runs whose output is not a terminal (tqdm's bar is off
there: batch jobs, SLURM, ``> file``): elapsed time and an estimate of the time left."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


def duration(seconds: float) -> str:
    """``seconds`` for a log line: "42 s", "3.5 min", "1.2 h"."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def eta(elapsed: float, done: float, total: float) -> str:
    """Time left at the rate so far, or "?" before any work is done."""
    if done <= 0:
        return "?"
    return duration(elapsed * max(total - done, 0) / done)


class ProgressLog:
    """Logs "<what>: done/total <unit> (pct), elapsed, ~left" at every ``step`` of the total or
    every ``interval`` seconds, whichever comes first (the first time-based line after ``first``
    seconds, ``interval`` by default). Work of fewer than ``1 / step`` updates (a few batches),
    or ``step=0``, logs only on time; once anything was logged the end is logged too. Disabled
    (``enabled=False``) it does nothing: a terminal shows tqdm's bar. ``detail(elapsed)`` adds
    to each line what the caller knows best (e.g. images per second, the epoch)."""

    def __init__(
        self,
        logger: logging.Logger,
        what: str,
        total: int,
        unit: str = "images",
        updates: int | None = None,
        step: float = 0.1,
        interval: float = 60.0,
        enabled: bool = True,
        clock: Callable[[], float] = time.monotonic,
        first: float | None = None,
        detail: Callable[[float], str] | None = None,
    ):
        """``updates``: how many :meth:`update` calls the work takes (e.g. batches), when known;
        below ``1 / step`` the percentage milestones are skipped."""
        self.log, self.what, self.total, self.unit = logger, what, max(int(total), 0), unit
        self.enabled = enabled and self.total > 0
        self.milestones = step > 0 and (updates is None or updates * step >= 1)
        self.step, self.interval, self.clock = step, interval, clock
        self.first = interval if first is None else first
        self.detail = detail
        self.start = self.last = clock()
        self.done = 0
        self.mark = 0  # milestones passed: floor(fraction done / step)
        self.logged = False
        self.timed = False  # a line was logged (here or by the caller, see note_line)

    def note_line(self) -> None:
        """The caller just logged progress of its own (e.g. an epoch's line): the next
        time-based line is due ``interval`` seconds from now."""
        self.last, self.timed = self.clock(), True

    def update(self, n: int) -> None:
        """``n`` more units done; log when a milestone or the interval is reached."""
        self.done += n
        if not self.enabled:
            return
        now = self.clock()
        if self.done >= self.total:
            if self.logged:
                self._emit(now)
            self.enabled = False  # logged the end (or nothing at all): no more lines
            return
        mark = int(self.done / self.total / self.step + 1e-9) if self.milestones else 0
        wait = self.interval if self.timed else self.first
        if (self.milestones and mark > self.mark) or now - self.last >= wait:
            self._emit(now)
        self.mark = mark

    def _emit(self, now: float) -> None:
        elapsed = now - self.start
        self.log.info(
            "%s: %d/%d %s (%.0f%%), elapsed %s, ~%s left%s",
            self.what,
            self.done,
            self.total,
            self.unit,
            100 * self.done / self.total,
            duration(elapsed),
            eta(elapsed, self.done, self.total),
            f" ({self.detail(elapsed)})" if self.detail else "",
        )
        self.last, self.logged, self.timed = now, True, True

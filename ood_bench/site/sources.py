"""Where every number of the site comes from: the file under results/ and the command that
wrote it, and the commit and date the site is generated from (taken from the data, never from
the clock, so the same results give the same bytes)."""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatch
from functools import cache

import pandas as pd

from ood_bench import paper


@cache
def producers() -> tuple[tuple[str, str], ...]:
    """(pattern of a path under results/, the commands that write it); first match wins.
    Derived from the paper's stages (conf/paper.yaml, :func:`ood_bench.paper.producers`)."""
    return tuple(paper.producers())


@dataclass(frozen=True, order=True)
class Source:
    """A file under the results folder (``path`` relative to it, with ``/``)."""

    path: str

    @property
    def name(self) -> str:
        """The repository path a reader can open: ``results/<path>``."""
        return f"results/{self.path}"

    @property
    def command(self) -> str:
        """The command that writes this file."""
        for pattern, command in producers():
            if fnmatch(self.path, pattern):
                return command
        return "(no known command)"


def stamp(df: pd.DataFrame) -> tuple[str, str]:
    """(commit, date) of the newest row of the results: what the site is generated from."""
    d = df[df["timestamp"].astype(str) != ""]
    if d.empty:
        return "unknown", "unknown"
    newest = d.sort_values(["timestamp", "git_sha"], kind="stable").iloc[-1]
    return str(newest["git_sha"]) or "unknown", str(newest["timestamp"])

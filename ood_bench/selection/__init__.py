"""Choosing a detector's options without test OOD data (issue 29).

A declared design space (:mod:`.space`, conf/selection/*.yaml) of detector config overrides is
searched on cached features (:mod:`.search`): the validation ID split against validation
outliers made from ID images alone (:mod:`.transforms`, the ``id_only`` protocol) or against a
declared validation OOD set disjoint from the test ones (``ood_validation``); the choice is
cached and recorded in the job's rows (:mod:`.protocol`). ``stat_selected`` is the preset that
runs it at fit time.
"""

from __future__ import annotations

from typing import Any

from ood_bench.detectors.stat import StatDetector
from ood_bench.selection.protocol import run_selection, selection_rows, selection_space
from ood_bench.selection.search import Selection, search
from ood_bench.selection.space import Candidate, Space, load_space
from ood_bench.selection.transforms import TRANSFORMS, outlier_sets


def stat_selected(
    name: str, selection: str = "stat", protocol: str | None = None, **options: Any
) -> StatDetector:
    """The ``stat_selected`` preset: a :class:`StatDetector` whose ``options`` are the base the
    runner's selection (``selection``: the space, ``protocol``: its protocol) overrides."""
    return StatDetector(name, **options)


__all__ = [
    "TRANSFORMS",
    "Candidate",
    "Selection",
    "Space",
    "load_space",
    "outlier_sets",
    "run_selection",
    "search",
    "selection_rows",
    "selection_space",
    "stat_selected",
]

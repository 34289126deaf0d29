"""Per-sample scores of a job, kept beside its metrics so every number can be re-derived.

One compressed ``.npz`` per job (``scores.npz`` in the job's folder; collected as
``<run_id>.npz``): for the ID test split and every OOD set, the detector's scores (higher = more
OOD), its p-values when it gives them, and each sample's position in the set as evaluated. A
JSON entry ``meta`` names the sets (name, group, role) and the job (run id, config hash,
backbone sha256, detector, benchmark, seed).

Why npz with float64: numpy reads and writes it with no extra dependency (parquet needs
pyarrow), zip-deflate compresses the many repeated values of saturated scores and grid
p-values, and float64 keeps the ranks: float32 merges distinct scores into ties (MSP scores of
confident samples differ past the 7th digit) and moves p-values that sit exactly on a level
(5/100 = 0.05) above it, so metrics recomputed from float32 would not equal the rows. The
budget this gives (bytes per job, measured by ``ood-bench verify --sizes``) is in
docs/statistics.md.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ood_bench.atomic import atomic_write
from ood_bench.errors import DataError

SCORES_FILE = "scores.npz"
FORMAT_VERSION = 1


@dataclass
class ScoreSet:
    """The scores (and p-values) of one evaluated set: the ID test split or an OOD set."""

    name: str
    role: str  # "id" or "ood"
    group: str
    score: np.ndarray
    pvalue: np.ndarray | None = None
    index: np.ndarray | None = None  # positions in the set as evaluated (default 0..n-1)

    def __post_init__(self) -> None:
        self.score = np.asarray(self.score, dtype=np.float64).reshape(-1)
        if self.pvalue is not None:
            self.pvalue = np.asarray(self.pvalue, dtype=np.float64).reshape(-1)
            if self.pvalue.shape != self.score.shape:
                raise ValueError(
                    f"{self.name}: {len(self.pvalue)} p-values, {len(self.score)} scores"
                )
        n = len(self.score)
        self.index = (
            np.arange(n, dtype=np.int64)
            if self.index is None
            else np.asarray(self.index, dtype=np.int64)
        )


@dataclass
class JobScores:
    """Every scored set of one job, with the job's identity."""

    sets: list[ScoreSet]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def id_set(self) -> ScoreSet:
        """The ID test split's scores."""
        ids = [s for s in self.sets if s.role == "id"]
        if len(ids) != 1:
            raise DataError(f"a scores file holds {len(ids)} ID sets, expected 1")
        return ids[0]

    @property
    def ood_sets(self) -> dict[str, ScoreSet]:
        """OOD set name → its scores."""
        return {s.name: s for s in self.sets if s.role == "ood"}

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The arrays of :func:`save` (``score_<i>``, ``pvalue_<i>``, ``index_<i>``, ``meta``)."""
        arrays: dict[str, np.ndarray] = {}
        sets = []
        for i, s in enumerate(self.sets):
            arrays[f"score_{i}"] = s.score
            arrays[f"index_{i}"] = s.index  # type: ignore[assignment]
            if s.pvalue is not None:
                arrays[f"pvalue_{i}"] = s.pvalue
            sets.append({"name": s.name, "role": s.role, "group": s.group, "n": len(s.score)})
        meta = {**self.meta, "format": FORMAT_VERSION, "sets": sets}
        arrays["meta"] = np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8)
        return arrays


def save(scores: JobScores, path: str | Path) -> Path:
    """Write ``scores`` to ``path`` atomically (compressed npz, float64)."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **scores.to_arrays())

    return atomic_write(path, write)


def load(path: str | Path) -> JobScores:
    """Read a scores file written by :func:`save` (never unpickles: ``allow_pickle=False``)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"cannot read scores file {path}: {e}. Fix: rerun the job") from e
    if "meta" not in arrays:
        raise DataError(f"{path} is not an ood-bench scores file (no meta entry)")
    meta = json.loads(arrays.pop("meta").tobytes().decode())
    sets = [
        ScoreSet(
            d["name"],
            d["role"],
            d["group"],
            arrays[f"score_{i}"],
            arrays.get(f"pvalue_{i}"),
            arrays[f"index_{i}"],
        )
        for i, d in enumerate(meta.pop("sets"))
    ]
    return JobScores(sets, meta)


def nbytes(scores: JobScores) -> int:
    """Bytes the scores take on disk (compressed), without writing a file."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **scores.to_arrays())
    return buf.getbuffer().nbytes

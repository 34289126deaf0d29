"""Stable content hashes for cache keys and checkpoints."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np


def _json_default(o: Any) -> Any:
    """JSON form of sets (sorted), paths and numpy scalars; refuse anything else."""
    if isinstance(o, (set, frozenset)):
        return sorted(o, key=repr)
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"cannot hash {type(o).__name__} stably; put plain data in specs")


def stable_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: the same object always gives the same text."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_json_default)


def hash_obj(obj: Any) -> str:
    """sha256 (hex) of an object's stable JSON form."""
    return hashlib.sha256(stable_json(obj).encode()).hexdigest()


def hash_arrays(*arrays: np.ndarray) -> str:
    """sha256 (hex) of the bytes, dtypes and shapes of arrays: a fingerprint of their content."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha256 (hex) of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()

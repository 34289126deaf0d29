"""The environment columns of every result row: versions, git sha, device, host."""

from __future__ import annotations

import functools
import platform
import socket
import subprocess
from importlib import metadata
from pathlib import Path

PACKAGES = {
    "torch": "torch",
    "pytorch_ood": "pytorch-ood",
    "sklearn": "scikit-learn",
    "numpy": "numpy",
    "hydra": "hydra-core",
    "ood_bench": "ood-bench",
}


def installed_version(dist: str) -> str:
    """Installed version of distribution ``dist``, or ``""`` when it is absent."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return ""


@functools.cache
def git_sha() -> str:
    """Short sha of ood_bench's checkout, ``+dirty`` with uncommitted tracked changes."""
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short=10", "HEAD"],
            cwd=root,
            text=True,
            capture_output=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            text=True,
            capture_output=True,
            timeout=10,
        ).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@functools.cache
def environment(device: str = "cpu") -> dict[str, str]:
    """Versions and machine facts; identical for every row of a job."""
    env = {"python": platform.python_version()}
    env.update({col: installed_version(dist) for col, dist in PACKAGES.items()})
    env.update({"device": device, "hostname": socket.gethostname(), "git_sha": git_sha()})
    return env

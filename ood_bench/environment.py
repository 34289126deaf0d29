"""The environment columns of every result row: versions, git sha, device, host."""

from __future__ import annotations

import functools
import logging
import os
import platform
import socket
import subprocess
from importlib import metadata
from pathlib import Path

import torch

from ood_bench.errors import ConfigError

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


log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parent.parent
# what computes a result: an uncommitted change here makes a result irreproducible ("+dirty").
# Generated outputs (results/, README.md, docs/) and tests are left out, so writing the committed
# results mid-way through `make paper` does not mark the jobs that follow as dirty.
CODE_PATHS = ("ood_bench", "conf", "scripts", "pyproject.toml", "Makefile")


def _git(*args: str) -> str:
    """stdout of ``git ARGS`` in the repository (raises when git or the checkout is missing)."""
    return subprocess.run(
        ["git", *args], cwd=REPO, text=True, capture_output=True, timeout=10, check=True
    ).stdout


def uncommitted_code() -> list[str]:
    """Paths under :data:`CODE_PATHS` with uncommitted changes (tracked or new, not ignored)."""
    out = _git("status", "--porcelain", "--untracked-files=all", "--", *CODE_PATHS)
    return [line[3:] for line in out.splitlines() if line.strip()]  # "XY path"


@functools.cache
def git_sha() -> str:
    """Short sha of ood_bench's checkout, ``+dirty`` with uncommitted changes to its code
    (:data:`CODE_PATHS`); ``unknown`` outside a git checkout (an installed package)."""
    try:
        sha = _git("rev-parse", "--short=10", "HEAD").strip()
        return sha + ("+dirty" if uncommitted_code() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# set by ``ood-bench paper`` (make paper) for its stages: only they write the committed results/
PAPER_ENV = "OOD_BENCH_PAPER"


def require_clean_tree(out: str | Path, what: str) -> None:
    """Refuse to write committed results (``out`` inside the repository's ``results/``) unless
    the paper runs (``OOD_BENCH_PAPER=1``): a user's sweep in ``results/raw`` would overwrite the
    paper's tables and break the repository's tests. From uncommitted code, refuse too unless
    ``ALLOW_DIRTY=1``: then warn, and the rows carry ``+dirty``."""
    results = REPO / "results"
    target = Path(out).expanduser().resolve()
    if target != results and results not in target.parents:
        return
    if os.environ.get(PAPER_ENV) != "1":
        raise SystemExit(
            f"{what}: refusing to write into the committed results ({target}): only the paper "
            f"(make paper, ood-bench paper) writes under {results}. Fix: write to a scratch "
            f"folder, e.g. --out scratch/{target.name} (git-ignored), or set {PAPER_ENV}=1 to "
            "regenerate the committed results on purpose."
        )
    try:
        changed = uncommitted_code()
    except (OSError, subprocess.SubprocessError):
        return  # not a git checkout: nothing to compare with
    if not changed:
        return
    listed = ", ".join(changed[:5]) + (" …" if len(changed) > 5 else "")
    if os.environ.get("ALLOW_DIRTY") == "1":
        log.warning(
            "ALLOW_DIRTY=1: %s writes %s from uncommitted code (%s); git_sha is recorded as %s",
            what,
            target,
            listed,
            git_sha(),
        )
        return
    raise SystemExit(
        f"{what}: refusing to write committed results under {results} from uncommitted code "
        f"({listed}). Fix: commit (or stash) the change first, so git_sha names the code that "
        "made them, or set ALLOW_DIRTY=1 to write them anyway (recorded as +dirty)."
    )


@functools.cache
def environment(device: str = "cpu") -> dict[str, str]:
    """Versions and machine facts; identical for every row of a job."""
    env = {"python": platform.python_version()}
    env.update({col: installed_version(dist) for col, dist in PACKAGES.items()})
    env.update(
        {
            "device": device,
            "hostname": socket.gethostname(),
            "cpu_count": str(os.cpu_count()),
            "git_sha": git_sha(),
        }
    )
    return env


def check_device(device: str) -> str:
    """``device`` when this machine has it, else a ConfigError naming the fix: a job asking for
    ``cuda`` on a CPU-only machine must not run (and record ``cuda``) on features a cache holds."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(
            f"device={device!r} is not a torch device. Fix: device=cpu, or cuda / cuda:<index> "
            "on a machine with a GPU."
        ) from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (dev.index or 0) >= count:
            have = f"{count} CUDA device(s)" if count else "no CUDA device"
            raise ConfigError(
                f"device={device} but torch sees {have} on {socket.gethostname()} (torch "
                f"{torch.__version__}, CUDA build {torch.version.cuda or 'none'}). Fix: "
                "device=cpu, or run the job on a machine with that GPU."
            )
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device={device} but MPS is not available here. Fix: device=cpu.")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device={device} is not supported by ood_bench. Fix: device=cpu.")
    return device

"""Errors that tell the user the cause and the fix."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value is wrong (unknown option, bad type, missing data root...)."""


class NotApplicable(ConfigError):
    """The detector cannot apply to this backbone or benchmark (a training-time method on a
    post-hoc classifier, a ResNet-only method on another network...); the message says why.
    A sweep's summary counts these jobs apart from other failures."""


class DataError(RuntimeError):
    """Data could not be found, read or is malformed."""


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt or does not fit the architecture."""


class ScoreError(RuntimeError):
    """A detector produced unusable scores (NaN, infinite, wrong shape)."""


class CacheError(RuntimeError):
    """The cache cannot serve or store an entry (e.g. a read-only cache that lacks it)."""


# the project's own errors name their cause and fix: one line is the whole message
USER_ERRORS = (ConfigError, DataError, CheckpointError)


def debug() -> bool:
    """Whether a user error shows its traceback (``OOD_BENCH_DEBUG=1`` or Hydra's
    ``HYDRA_FULL_ERROR=1``)."""
    return "1" in (os.environ.get("OOD_BENCH_DEBUG"), os.environ.get("HYDRA_FULL_ERROR"))


def one_line_errors(func: Callable[..., T]) -> Callable[..., T]:
    """Wrap a Hydra task function: a :data:`USER_ERRORS` exception prints ``error: <message>``
    and exits with status 1, instead of Hydra's traceback (kept under :func:`debug`)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return func(*args, **kwargs)
        except USER_ERRORS as e:
            if debug():
                raise
            print(f"error: {e}", file=sys.stderr)
            raise SystemExit(1) from None

    return wrapper

"""Errors that tell the user the cause and the fix."""


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

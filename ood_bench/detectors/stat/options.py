"""The statistical detector's options: one typed, frozen dataclass, validated when built.

Types are checked by :func:`ood_bench.config.check_types` against the dataclass's fields (the
same error as for any other option), choices against their ``Literal`` type or the registry of
statistics and combiners; ``dataclasses.replace`` validates again.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ood_bench.config import check_types
from ood_bench.detectors.stat.registry import statistic_class
from ood_bench.errors import ConfigError
from ood_bench.pvalues import COMBINERS, Tail

PREFIX = "detector"  # where the options live in a job's config (the error names detector.<key>)
OWNER = "ood_bench.detectors.stat.StatDetector"  # check_types names it: "... but OWNER expects"


@dataclass(frozen=True)
class StatOptions:
    """What a ``stat_*`` preset chooses (conf/detector/stat_*.yaml); see :class:`StatDetector`.

    ``reduction`` (``max``/``mean`` over space, ``both``: one test each), ``statistic`` (a
    registered layer statistic), ``tail`` (channel-wise test), ``within`` (combination inside a
    layer), ``across`` (between
    layers) and ``across_mode``, ``layers`` (tap names; None = every tap), ``include_logits``
    (the logits as one more layer, tested with ``statistic``), ``output_test`` (a registered
    output test: one more p-value from the logits), ``calibrate`` (the conformal step on
    ``calib``; only switch off to show why it is needed), ``class_conditional`` (Mondrian
    calibration per predicted class), ``correction`` and ``delta`` (calibration-conditional),
    ``k`` (k-NN), ``alpha`` (the default decision level), ``reference`` (channel references
    pooled or per predicted class), ``center`` (vector statistics: the predicted class's mean or
    the global one), ``mondrian_fallback`` (when a class's calibration samples cannot reach
    ``alpha``: ``marginal``, ``refuse`` or ``none``), ``extra_tests`` (other feature detectors
    whose scores become more p-values of the combination, :mod:`.extra`), ``normalize``
    (class-mean statistics: each layer vector scaled to unit L2 norm before the distance, as
    Mahalanobis++, Mueller & Hein, ICML 2025; cosine and k-NN normalise anyway).
    """

    reduction: Literal["max", "mean", "both"] = "max"
    statistic: str = "channel"
    tail: Tail = "two-sided"
    within: str = "simes"
    across: str = "fisher"
    across_mode: Literal["at_once", "successive"] = "at_once"
    layers: tuple[str, ...] | None = None
    include_logits: bool = False
    output_test: str | None = None
    calibrate: bool = True
    class_conditional: bool = False
    correction: Literal["simes", "dkw"] | None = None
    delta: float = 0.1
    k: int = 10
    alpha: float = 0.05
    reference: Literal["pooled", "class"] = "pooled"
    center: Literal["class", "global"] = "class"
    mondrian_fallback: Literal["marginal", "refuse", "none"] = "marginal"
    extra_tests: tuple[str, ...] = ()
    normalize: bool = False

    def __post_init__(self) -> None:
        """Check choices, types and ranges: a ConfigError that names the option and the fix."""
        if isinstance(self.layers, list):  # YAML gives a list; keep the frozen value immutable
            object.__setattr__(self, "layers", tuple(self.layers))
        if isinstance(self.extra_tests, (list, str)):
            extra = [self.extra_tests] if isinstance(self.extra_tests, str) else self.extra_tests
            object.__setattr__(self, "extra_tests", tuple(extra))
        statistic_class(self.statistic)  # unknown: the registered ones and a did-you-mean
        if self.output_test is not None:
            statistic_class(self.output_test, output=True)
        values = dataclasses.asdict(self)
        for key, allowed in choices().items():
            if values[key] not in allowed:
                close = difflib.get_close_matches(str(values[key]), map(str, allowed), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ConfigError(
                    f"{PREFIX}.{key}={values[key]!r} is not one of {list(allowed)}{hint}"
                )
        check_types(StatOptions, values, PREFIX, OWNER, option_types())
        if not 0 < self.alpha < 1:
            raise ConfigError(f"{PREFIX}.alpha={self.alpha!r} must lie in (0, 1)")
        if self.k < 1:
            raise ConfigError(
                f"{PREFIX}.k={self.k!r}: k-NN needs k >= 1 (the k-th nearest fit feature). "
                f"Fix: give {PREFIX}.k a positive integer (the presets use 10)."
            )

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> StatOptions:
        """Options from config values; an unknown key is a ConfigError with a did-you-mean."""
        names = [f.name for f in dataclasses.fields(cls)]
        for key in values:
            if key not in names:
                close = difflib.get_close_matches(key, names, n=1)
                hint = f" Did you mean {PREFIX}.{close[0]}?" if close else ""
                raise ConfigError(
                    f"{PREFIX}.{key} is not an option of {OWNER}.{hint} Its options: "
                    f"{', '.join(names)}."
                )
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        """Plain values (``layers`` as a list), for logs and :meth:`StatDetector.params`."""
        out = dataclasses.asdict(self)
        out["layers"] = list(self.layers) if self.layers else None
        out["extra_tests"] = list(self.extra_tests)
        return out


def option_types() -> dict[str, tuple[Any, Any]]:
    """Field name → (type hint, default): what :func:`check_types` judges each value by."""
    hints = typing.get_type_hints(StatOptions)
    return {f.name: (hints[f.name], f.default) for f in dataclasses.fields(StatOptions)}


def _literal_values(hint: Any) -> tuple[Any, ...] | None:
    """The values a ``Literal[...]`` (or ``Literal[...] | None``) hint allows; None otherwise."""
    if typing.get_origin(hint) is Literal:
        return typing.get_args(hint)
    args = typing.get_args(hint)
    literals = [a for a in args if typing.get_origin(a) is Literal]
    if literals and all(a is type(None) or a in literals for a in args):
        return (*typing.get_args(literals[0]), None)
    return None


def choices() -> dict[str, tuple[Any, ...]]:
    """Option → allowed values: the ``Literal`` fields and the combination rules of
    :mod:`ood_bench.pvalues` (``statistic`` and ``output_test``: the registry's names)."""
    out: dict[str, tuple[Any, ...]] = {
        "within": COMBINERS,
        "across": COMBINERS,
    }
    for name, (hint, _) in option_types().items():
        allowed = _literal_values(hint)
        if allowed is not None:
            out[name] = allowed
    return out

"""The registry of per-layer statistics: option value → class. The classes of
:mod:`.statistics` register themselves when it is imported (the package imports it)."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from ood_bench.errors import ConfigError

if TYPE_CHECKING:
    from ood_bench.detectors.stat.statistics import LayerStatistic

REGISTRY: dict[str, type[LayerStatistic]] = {}
S = TypeVar("S", bound="type[LayerStatistic]")


def register(name: str, *, output: bool = False) -> Callable[[S], S]:
    """Class decorator: register a statistic under ``name`` (``output``: an output-layer test
    on the logits, chosen with ``output_test``, not a layer statistic)."""

    def add(cls: S) -> S:
        if name in REGISTRY:
            raise ValueError(f"statistic {name!r} is registered twice")
        cls.name, cls.output = name, output
        REGISTRY[name] = cls
        return cls

    return add


def registered(output: bool = False) -> tuple[str, ...]:
    """Names of the registered layer statistics (or output tests, ``output=True``)."""
    return tuple(n for n, cls in REGISTRY.items() if cls.output == output)


def statistic_class(name: str, output: bool = False) -> type[LayerStatistic]:
    """The class registered as ``name``; a ConfigError listing the registered ones otherwise."""
    known = registered(output)
    if name in known:
        return REGISTRY[name]
    option = "output_test" if output else "statistic"
    close = difflib.get_close_matches(str(name), known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ConfigError(
        f"detector.{option}={name!r} is not a registered statistic{hint}: choose one of "
        f"{list(known)} (ood_bench/detectors/stat/statistics.py registers them)"
    )

"""Which features the statistical detector tests: tapped layers as feature keys."""

from __future__ import annotations

import numpy as np

from ood_bench.errors import ConfigError
from ood_bench.features import Features

REDUCTIONS = ("max", "mean")


def tapped_layers(feats: Features, reduction: str) -> dict[str, str]:
    """Tap name → feature key in network order: ``<layer>.<reduction>`` for a pooled map, the
    key itself for a flat tap (penultimate features, an fc layer)."""
    found: dict[str, str] = {}
    for key in feats.taps:
        base, _, red = key.rpartition(".")
        if red in REDUCTIONS and base:
            if red == reduction:
                found[base] = key
        else:
            found.setdefault(key, key)
    return found


def layer_keys(
    feats: Features, reduction: str, layers: list[str] | None, include_logits: bool = False
) -> list[str]:
    """The feature keys to test, in network order: ``<layer>.<reduction>`` or a flat ``<layer>``;
    ``reduction=both``: ``<layer>.max`` and ``<layer>.mean`` of every pooled layer (two tests)."""
    reductions = REDUCTIONS if reduction == "both" else (reduction,)
    per = [tapped_layers(feats, r) for r in reductions]
    found = per[0]
    if layers:
        missing = [name for name in layers if name not in found]
        if missing:
            raise ConfigError(f"layers {missing} are not tapped; tapped layers: {list(found)}")
        names = list(layers)
    else:
        names = list(found)
    keys = list(dict.fromkeys(f[name] for name in names for f in per))
    if include_logits:
        keys.append("logits")
    if not keys:
        raise ConfigError("no tapped layers to test: the backbone declares no taps")
    return keys


def layer_array(feats: Features, key: str) -> np.ndarray:
    """Logits or cached tap ``key`` as a float64 numpy array."""
    t = feats.logits if key == "logits" else feats.taps[key]
    return t.detach().cpu().double().numpy()


def first_items(items: list, k: int = 10) -> str:
    """The first ``k`` items, comma-separated, and how many more there are."""
    text = ", ".join(map(str, items[:k]))
    return text + (f" and {len(items) - k} more" if len(items) > k else "")

"""What the pytorch-ood adapter's :class:`~.bound.BoundNet` and :mod:`~.feeds` read of their
detector: a narrow context, not the detector itself, so that they do not import the adapter
(no cycle adapter → bound/feeds → adapter)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass
class AdapterContext:
    """One pytorch-ood detector as its bound network and feeds see it.

    Fixed at construction: ``name`` (the option, for messages), ``cls_name`` / ``klass`` / ``base``
    (the library's class and its base class name), ``features_key`` (what it reads),
    ``layers`` (its taps, None = all), ``batch_size``, ``needs``. Live, owned by the detector:
    ``model`` and ``device`` (set by ``bind``), ``impl`` (the constructed library object),
    ``bound`` (its :class:`~.bound.BoundNet`)."""

    name: str
    cls_name: str = ""
    klass: type | None = None
    base: str = ""
    features_key: str = "penultimate"
    layers: list[str] | None = None
    batch_size: int = 256
    needs: frozenset[str] = frozenset()
    model: nn.Module | None = None
    device: torch.device = torch.device("cpu")
    impl: Any = None
    bound: Any = None  # the BoundNet serving this context (not imported: it imports this)

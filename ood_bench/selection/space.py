"""A declared design space: candidates are detector config overrides (conf/selection/*.yaml).

A space file names the ``protocol`` (``id_only`` or ``ood_validation``), the ``transforms`` of
the ``id_only`` protocol, the validation split (``val_size``, ``val_max``), the ``criterion``
and the ``axes``: each axis a list of values, a value either a scalar (the axis name is the
detector option) or a mapping of options set together (``{statistic: mahalanobis, normalize:
true}``). The candidates are the product of the axes, in the file's order (the first value of
every axis first: ties go to the earlier candidate). ``margin``: the first candidate (the
current preset) is kept unless another beats it by more than this in the criterion (a
difference within the validation sets' sampling noise is no reason to change). ``taps`` is
resolved against the backbone: ``all`` (every tap), ``last_<n>`` (the deepest n), or a list
of tap names.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ood_bench.errors import ConfigError
from ood_bench.hashing import hash_obj

CONF = Path(__file__).resolve().parent.parent / "conf" / "selection"
PROTOCOLS = ("id_only", "ood_validation")
CRITERIA = ("mean_auroc", "min_auroc")


@dataclass(frozen=True)
class Candidate:
    """One point of a design space: detector config overrides (``taps`` not yet resolved)."""

    overrides: tuple[tuple[str, Any], ...]

    @property
    def as_dict(self) -> dict[str, Any]:
        """The overrides as a mapping."""
        return dict(self.overrides)

    def label(self) -> str:
        """A short, readable name: ``key=value`` joined by spaces."""
        return " ".join(f"{k}={_text(v)}" for k, v in self.overrides)


def _text(v: Any) -> str:
    """A value as written in a label (lists comma-joined)."""
    if isinstance(v, (list, tuple)):
        return ",".join(map(str, v))
    return str(v).lower() if isinstance(v, bool) or v is None else str(v)


@dataclass
class Space:
    """A parsed space file (see the module docstring)."""

    name: str
    protocol: str
    axes: dict[str, list[Any]]
    transforms: list[str] = field(default_factory=list)
    val_size: float = 0.2
    val_max: int = 2000
    criterion: str = "mean_auroc"
    seed: int = 0
    margin: float = 0.0

    def __post_init__(self) -> None:
        """Check the protocol, the criterion and that every axis has values."""
        if self.protocol not in PROTOCOLS:
            raise ConfigError(
                f"selection.protocol={self.protocol!r} is not one of {list(PROTOCOLS)}"
            )
        if self.criterion not in CRITERIA:
            raise ConfigError(
                f"selection.criterion={self.criterion!r} is not one of {list(CRITERIA)}"
            )
        empty = [k for k, v in self.axes.items() if not isinstance(v, list) or not v]
        if empty or not self.axes:
            raise ConfigError(
                f"selection space {self.name!r}: axes {empty or '(none)'} have no values. Fix: "
                "give each axis a non-empty list (conf/selection/*.yaml)."
            )
        if self.protocol == "id_only" and not self.transforms:
            raise ConfigError(
                f"selection space {self.name!r}: the id_only protocol needs transforms. Fix: "
                "list some in selection.transforms (ood_bench/selection/transforms.py)."
            )

    def candidates(self) -> list[Candidate]:
        """The product of the axes, in order, without duplicates."""
        out: dict[Candidate, None] = {}
        for combo in itertools.product(*self.axes.values()):
            merged: dict[str, Any] = {}
            for axis, value in zip(self.axes, combo, strict=True):
                merged.update(value if isinstance(value, Mapping) else {axis: value})
            out[Candidate(tuple((k, _frozen(v)) for k, v in merged.items()))] = None
        return list(out)

    def spec(self) -> dict[str, Any]:
        """Everything that decides the choice (part of the selection cache key)."""
        return {
            "name": self.name,
            "protocol": self.protocol,
            "axes": self.axes,
            "transforms": self.transforms,
            "val_size": self.val_size,
            "val_max": self.val_max,
            "criterion": self.criterion,
            "seed": self.seed,
            "margin": self.margin,
        }

    def key(self) -> str:
        """Hash of :meth:`spec`."""
        return hash_obj(self.spec())


def _frozen(v: Any) -> Any:
    """Lists as tuples (candidates are hashable)."""
    return tuple(v) if isinstance(v, list) else v


def load_space(cfg: str | Mapping | DictConfig) -> Space:
    """A space from a name (conf/selection/<name>.yaml) or a mapping (the composed group)."""
    if isinstance(cfg, str):
        path = CONF / f"{cfg}.yaml"
        if not path.is_file():
            known = sorted(p.stem for p in CONF.glob("*.yaml"))
            raise ConfigError(f"no selection space {cfg!r} in {CONF}: choose from {known}")
        cfg = OmegaConf.load(path)
    raw = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    known_keys = {"name", "protocol", "axes", "transforms", "val_size", "val_max", "criterion"}
    known_keys |= {"seed", "margin"}
    extra = sorted(set(raw) - known_keys)
    if extra:
        raise ConfigError(f"selection keys {extra} are unknown: the keys are {sorted(known_keys)}")
    raw.setdefault("name", "space")
    raw["axes"] = {k: list(v) for k, v in (raw.get("axes") or {}).items()}
    raw["transforms"] = list(raw.get("transforms") or [])
    return Space(**raw)


def resolve_taps(overrides: dict[str, Any], taps: list[str]) -> dict[str, Any]:
    """``taps`` (all, last_<n>, or names) as the detector's ``layers`` option."""
    if "taps" not in overrides:
        return overrides
    out = dict(overrides)
    value = out.pop("taps")
    if value in (None, "all"):
        out["layers"] = None
    elif isinstance(value, str) and value.startswith("last_") and value[5:].isdigit():
        n = int(value[5:])
        out["layers"] = list(taps[-n:]) if n < len(taps) else None
    elif isinstance(value, (list, tuple)):
        out["layers"] = list(value)
    else:
        raise ConfigError(
            f"selection axis taps={value!r}: use all, last_<n> or a list of tap names"
        )
    return out

"""One wrapper around ``hydra.utils.instantiate`` that logs what it built and explains failures."""

from __future__ import annotations

import collections.abc
import inspect
import logging
import numbers
import re
import types
import typing
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal, Union

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ood_bench.errors import ConfigError
from ood_bench.hashing import hash_obj

log = logging.getLogger(__name__)

# The config groups. In a checkout ``ood_bench/conf`` links to the top-level ``conf/``; an
# installed (non-editable) ood-bench carries a copy, so the entry points run from anywhere.
CONF_DIR = Path(__file__).resolve().parent / "conf"


def compose(overrides: Iterable[str] = (), config_name: str = "config") -> DictConfig:
    """The config ``config_name`` (``config``: a job; ``novelty``; ``train``) composed from
    :data:`CONF_DIR` with Hydra overrides, outside any Hydra app (scripts, tests, notebooks)."""
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        return hydra_compose(config_name=config_name, overrides=list(overrides))


def build(cfg: DictConfig, what: str, **kwargs: Any) -> Any:
    """Instantiate ``cfg`` (a config group's node) with extra runtime ``kwargs``.

    Errors raised by our own constructors (bad option, missing data...) reach the user
    unchanged; Hydra's wrapper around them is removed.
    """
    if cfg is None or "_target_" not in cfg:
        raise ConfigError(
            f"the {what} config has no _target_: choose an option of the {what!r} "
            "group (see conf/) or give a _target_"
        )
    target = cfg._target_
    # a node inside the composed config reports full keys (backbone.arch); a standalone one not
    node = cfg._get_full_key(None) if hasattr(cfg, "_get_full_key") else ""
    missing = sorted(k if node else f"{what}.{k}" for k in OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(
            f"the {what} option needs {', '.join(missing)} (??? in its YAML): pass e.g. "
            f"{missing[0]}=... on the command line"
        )
    try:
        # partial first, then call: runtime objects in kwargs must not pass through OmegaConf
        factory = instantiate(cfg, _convert_="all", _partial_=True)
    except InstantiationException as e:
        raise ConfigError(f"cannot build {what} from {target}: {e.__cause__ or e}") from e
    try:
        inspect.signature(factory.func).bind(*factory.args, **{**factory.keywords, **kwargs})
    except TypeError as e:
        raise ConfigError(
            f"cannot build {what} from {target}: {e}. Fix: check the option's "
            "arguments in its YAML against the target's signature."
        ) from e
    check_types(factory.func, factory.keywords, node or what, target)
    obj = factory(**kwargs)
    log.info("built %s: %s", what, target)
    return obj


def _fits(value: Any, hint: Any) -> bool | None:
    """Whether ``value`` (plain YAML data) fits type ``hint``: True, False, or None when the
    hint is not one a config value can be judged against (a tensor, a callable, Any...)."""
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        verdicts = [_fits(value, h) for h in typing.get_args(hint)]
        return True if True in verdicts else (None if None in verdicts else False)
    if origin is Literal:
        return value in typing.get_args(hint)
    base = origin or hint
    if base is type(None):
        return value is None
    if base is bool:
        return isinstance(value, bool)
    if base is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if base in (float, numbers.Real):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if base is str:
        return isinstance(value, str)
    if base in (list, tuple, collections.abc.Sequence):
        return isinstance(value, (list, tuple))
    if base in (dict, collections.abc.Mapping):
        return isinstance(value, dict)
    return None


def expected_types(func: Any) -> dict[str, tuple[Any, Any]]:
    """Argument name → (expected type, default) of ``func`` (a function or class): its type
    hints, else the type of a number / bool / str default (numbers accept int and float)."""
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):
        return {}
    try:
        hints = typing.get_type_hints(func.__init__ if inspect.isclass(func) else func)
    except Exception:  # unresolvable annotations: judge by the defaults only
        hints = {}
    out = default_types({n: par.default for n, par in sig.parameters.items()})
    out.update({n: (hints[n], par.default) for n, par in sig.parameters.items() if n in hints})
    return out


def default_types(defaults: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Argument name → (type, default) judged from number / bool / str defaults alone (numbers
    accept int and float; other defaults are not judged)."""
    out: dict[str, tuple[Any, Any]] = {}
    for name, default in defaults.items():
        if isinstance(default, bool):
            out[name] = (bool, default)
        elif isinstance(default, (int, float)):
            out[name] = (numbers.Real, default)
        elif isinstance(default, str):
            out[name] = (str, default)
    return out


def type_text(hint: Any) -> str:
    """A type hint as a short readable string (``int``, ``float | None``)."""
    if hint is numbers.Real:
        return "a number"
    return hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")


def check_types(
    func: Any, values: dict[str, Any], prefix: str, owner: str, types_: dict | None = None
) -> None:
    """A ConfigError naming the key, the given value and the expected type when a config value
    does not fit ``func``'s type hints (or its default's type; or ``types_``, name → (type,
    default), when given). ``None`` is never judged (``null`` often means "the library's
    default"); values of types it cannot judge pass."""
    types_ = expected_types(func) if types_ is None else types_
    for key, value in values.items():
        if value is None or key not in types_:
            continue
        hint, default = types_[key]
        if _fits(value, hint) is False:
            example = (
                f" (its default: {prefix}.{key}={default})"
                if default is not inspect.Parameter.empty and default is not None
                else ""
            )
            raise ConfigError(
                f"{prefix}.{key}={value!r} is a {type(value).__name__}, but {owner} expects "
                f"{key} to be {type_text(hint)}. Fix: give {prefix}.{key} a value of that "
                f"type{example}."
            )


def to_container(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as plain Python (for hashing and saving)."""
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


# keys that say where things are or how to run, not what is computed: not part of the job hash
# (threads: how fast, not what: a given checkpoint computes the same numbers; rows record it)
NOT_IN_HASH = (
    "cache_dir",
    "results_dir",
    "data_root",
    "rerun",
    "batch_size",
    "allow_failures",
    "store_scores",
    "threads",
    "max_memory_fraction",
)


def config_hash(cfg: DictConfig) -> str:
    """Hash of the resolved job config minus :data:`NOT_IN_HASH` and Hydra's own node: equal
    hash ⇒ same computation (the backbone's weights aside: results also carry its sha256)."""
    plain = {}
    for k in cfg:
        if k in NOT_IN_HASH or k == "hydra":
            continue
        v = cfg[k]  # a sub-node resolves its interpolations against the whole config
        plain[k] = OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
    return hash_obj(plain)[:16]


def _config_hash_resolver(*, _root_: DictConfig) -> str:
    """``${config_hash:}``: the job's :func:`config_hash`, for Hydra's ``sweep.subdir``."""
    return config_hash(_root_)


if not OmegaConf.has_resolver("config_hash"):
    OmegaConf.register_new_resolver("config_hash", _config_hash_resolver)


# keys that may take their value from the environment (``${oc.env:…}``): where things are, never
# a row's cell, a name or an option (conf/shared.yaml's locations, OpenOOD's configs folder)
ENV_KEYS = ("cache_dir", "data_root", "results_dir", "config_root")
# resolvers that read the process environment (OmegaConf's, and the legacy ``env`` of 2.0)
_ENV_RESOLVER = re.compile(r"\$\{\s*(?:oc\.env|env)\s*:")
_REFERENCE = re.compile(r"\$\{\s*([A-Za-z_][\w.]*)\s*\}")  # ${key.path}: another key's value


def _leaves(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, raw value) of every leaf of an unresolved config container."""
    items = node.items() if isinstance(node, dict) else enumerate(node)
    for k, v in items:
        key = f"{prefix}{k}"
        if isinstance(v, (dict, list)):
            yield from _leaves(v, key + ".")
        else:
            yield key, v


def env_reads(cfg: DictConfig) -> dict[str, str]:
    """Keys outside :data:`ENV_KEYS` whose value reads the environment — an env resolver in
    their text, or an interpolation of a key that reads it — mapped to their unresolved text.

    Such a value would be resolved into result rows, logs and ``resolved_config.yaml`` (an
    ``${oc.env:API_TOKEN}`` in a detector's name ends up in every CSV): the job refuses them."""
    raw = OmegaConf.to_container(cfg, resolve=False)
    leaves = {k: v for k, v in _leaves(raw) if not k.startswith("hydra.") and k != "hydra"}

    def reads(key: str, seen: frozenset[str]) -> bool:
        """Whether the value of ``key`` (a leaf or a node) reads the environment."""
        values = [v for k, v in leaves.items() if k == key or k.startswith(key + ".")]
        for v in values:
            if not isinstance(v, str):
                continue
            if _ENV_RESOLVER.search(v):
                return True
            if any(reads(r, seen | {key}) for r in _REFERENCE.findall(v) if r not in seen):
                return True
        return False

    return {
        k: str(v)
        for k, v in leaves.items()
        if k.rsplit(".", 1)[-1] not in ENV_KEYS and reads(k, frozenset())
    }

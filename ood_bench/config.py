"""One wrapper around ``hydra.utils.instantiate`` that logs what it built and explains failures."""

from __future__ import annotations

import inspect
import logging
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ood_bench.errors import ConfigError
from ood_bench.hashing import hash_obj

log = logging.getLogger(__name__)


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
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(
            f"the {what} option needs {', '.join(f'{what}.{k}' for k in missing)}"
            f" (??? in its YAML): pass e.g. {what}.{missing[0]}=... on the command "
            "line"
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
    obj = factory(**kwargs)
    log.info("built %s: %s", what, target)
    return obj


def to_container(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as plain Python (for hashing and saving)."""
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


# keys that say where things are or how to run, not what is computed: not part of the job hash
NOT_IN_HASH = ("cache_dir", "results_dir", "data_root", "rerun", "batch_size")


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

"""The selection protocols, their validation data, and the cache of their choices.

``id_only``: a ``val`` split of ID images (cut from ID test, see
:meth:`~ood_bench.data.base.Benchmark.val_from_test`: neither the backbone, nor the detector's
``fit``, nor ``calib`` see it) against the outlier sets the space's ``transforms`` make from the
same images (:mod:`.transforms`). ``ood_validation``: the same ``val`` split against the
benchmark's declared ``ood_validation`` sets, which may share neither a name nor a source with a
test OOD set (OpenOOD v1.5's protocol). No test OOD set is ever read.

A choice is cached in ``cache_dir/selection/`` under a key of everything that decides it (the
backbone's sha256, the benchmark, the protocol and space, the preset, the validation sets'
specs): a rerun reads it and does not search again.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from omegaconf import DictConfig, OmegaConf

from ood_bench.atomic import atomic_write, atomic_write_text
from ood_bench.data.base import Benchmark
from ood_bench.errors import ConfigError
from ood_bench.features import FeatureExtractor, Features
from ood_bench.hashing import hash_obj
from ood_bench.selection.search import NOT_OPTIONS, Selection, search, with_overrides
from ood_bench.selection.space import Space, load_space
from ood_bench.selection.transforms import outlier_sets

log = logging.getLogger(__name__)


def selection_space(cfg: DictConfig) -> Space | None:
    """The job's selection space: the ``selection`` group (``selection=stat``), else the
    preset's own ``detector.selection`` (a space name; ``detector.protocol`` overrides its
    protocol); None when the job selects nothing."""
    if cfg.get("selection"):
        return load_space(cfg.selection)
    det = cfg.get("detector") or {}
    if det.get("selection"):
        space = load_space(str(det.selection))
        if det.get("protocol"):
            space.protocol = str(det.protocol)
            space.__post_init__()
        return space
    return None


def chosen_config(det_cfg: DictConfig, selection: Selection) -> DictConfig:
    """The detector config with the chosen overrides."""
    return with_overrides(det_cfg, selection.overrides)


def validation_features(
    space: Space, bench: Benchmark, extractor: FeatureExtractor
) -> tuple[Features, dict[str, Features]]:
    """Features of the ``val`` split and of the protocol's validation outlier sets."""
    val = bench.split("val")
    if space.protocol == "id_only":
        sets = outlier_sets(val, space.transforms, space.seed + int(bench.info.get("seed", 0)))
    else:
        sets = list(bench.validation)
        if not sets:
            raise ConfigError(
                f"selection protocol ood_validation: benchmark {bench.name!r} declares no "
                "ood_validation set. Fix: add `ood_validation:` entries to its config (the same "
                "schema as `ood:`, no name or source shared with a test OOD set), or use "
                "selection.protocol=id_only."
            )
    return extractor(val), {s.name: extractor(s) for s in sets}


def cache_path(
    cfg: DictConfig, space: Space, bench: Benchmark, sha256: str, det_cfg: DictConfig
) -> Path:
    """Where the choice of this (backbone, benchmark, protocol, space, preset) is cached."""
    preset = {
        k: v
        for k, v in OmegaConf.to_container(det_cfg, resolve=True).items()  # type: ignore[union-attr]
        if k not in NOT_OPTIONS
    }
    val_specs = [bench.split("val").spec, *(s.spec for s in bench.validation)]
    key = hash_obj(
        {
            "backbone_sha256": sha256,
            "benchmark": bench.name,
            "space": space.spec(),
            "preset": preset,
            "target": det_cfg.get("_target_"),
            "val": val_specs if space.protocol == "ood_validation" else val_specs[:1],
            "fit": bench.split("fit").spec,
        }
    )
    root = Path(cfg.cache_dir).expanduser().resolve() / "selection"
    return root / f"{bench.name}_{space.protocol}_{sha256[:12]}_{key[:12]}.yaml"


def save(selection: Selection, path: Path) -> Path:
    """The choice as YAML at ``path`` and the full candidate table beside it (.csv)."""
    atomic_write(path.with_suffix(".csv"), lambda p: selection.table.to_csv(p, index=False))
    return atomic_write_text(path, yaml.safe_dump(selection.as_dict(), sort_keys=False))


def load(path: Path) -> Selection | None:
    """A cached choice, or None when there is none (or it is unreadable: searched again)."""
    table_path = path.with_suffix(".csv")
    if not path.is_file() or not table_path.is_file():
        return None
    try:
        d = yaml.safe_load(path.read_text())
        table = pd.read_csv(table_path)
        return Selection(
            d["space"],
            d["protocol"],
            d["criterion"],
            float(d["value"]),
            dict(d["overrides"]),
            d["chosen"],
            table,
            int(d["n_candidates"]),
            float(d["wall_s"]),
            dict(d.get("val_sets") or {}),
        )
    except (OSError, KeyError, TypeError, ValueError, yaml.YAMLError) as e:
        log.warning("cached selection %s is unreadable (%s): searching again", path, e)
        return None


def run_selection(
    cfg: DictConfig,
    space: Space,
    bench: Benchmark,
    sha256: str,
    extractor: FeatureExtractor,
    fit: Features,
    det_cfg: DictConfig | None = None,
) -> tuple[Selection, bool]:
    """The choice of ``space`` for this job: from the cache, else searched (and cached).
    Returns it and whether it came from the cache."""
    det_cfg = cfg.detector if det_cfg is None else det_cfg
    path = cache_path(cfg, space, bench, sha256, det_cfg)
    cached = load(path)
    if cached is not None:
        log.info("selection: cached choice %s (%s)", cached.label, path)
        return cached, True
    val_id, val_ood = validation_features(space, bench, extractor)
    selection = search(det_cfg, space, fit, val_id, val_ood)
    log.info("selection cached in %s", save(selection, path))
    return selection, False


def selection_rows(selection: Selection, job: dict[str, Any], cached: bool) -> list[dict]:
    """The job's rows of a selection: ``selection`` (the criterion's value; ood_dataset = the
    protocol), its cost and size, and the chosen values as ``param_<option>`` (numbers as
    values; a text value in ``ood_dataset`` with value 1). All in ood_group ``validation``,
    so no per-OOD-set table mistakes them for test results."""
    from ood_bench.results import make_row

    rows = [
        make_row(job, "selection", selection.value, selection.protocol, "validation"),
        make_row(job, "selection_candidates", float(selection.n_candidates), "", "validation"),
        make_row(job, "selection_s", 0.0 if cached else selection.wall_s, "", "validation"),
    ]
    for k, v in selection.overrides.items():
        if isinstance(v, (bool, int, float)):
            rows.append(make_row(job, f"param_{k}", float(v), "", "validation"))
        else:
            text = "null" if v is None else ",".join(v) if isinstance(v, list) else str(v)
            rows.append(make_row(job, f"param_{k}", 1.0, text, "validation"))
    return rows

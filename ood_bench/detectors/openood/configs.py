"""OpenOOD's postprocessor configs, read from the installed checkout (never downloaded)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ood_bench.detectors.openood.catalogue import CONFIG_FILES
from ood_bench.detectors.openood.loader import load_openood
from ood_bench.errors import ConfigError


def find_config_root(config_root: str | os.PathLike | None = None) -> Path:
    """OpenOOD's ``configs/`` folder: ``config_root`` (or ``$OPENOOD_CONFIG_ROOT``), else the
    one beside the installed ``openood`` package (an editable install or a source checkout)."""
    candidates = []
    if config_root:
        candidates.append(Path(config_root).expanduser())
    elif os.environ.get("OPENOOD_CONFIG_ROOT"):
        candidates.append(Path(os.environ["OPENOOD_CONFIG_ROOT"]).expanduser())
    else:
        candidates.append(load_openood().package_dir.parent / "configs")
    for c in candidates:
        if (c / "postprocessors").is_dir():
            return c
    raise ConfigError(
        f"OpenOOD's configs/postprocessors not found in {[str(c) for c in candidates]}: pip does "
        "not install OpenOOD's configs/ folder, and ood_bench never downloads it. Fix: install "
        "OpenOOD from a checkout (pip install --no-deps -e /path/to/OpenOOD), or set "
        "detector.config_root (or OPENOOD_CONFIG_ROOT) to /path/to/OpenOOD/configs"
    )


def read_config(name: str, config_root: str | os.PathLike | None = None) -> dict[str, Any]:
    """OpenOOD's default configuration of postprocessor ``name`` as a plain dict."""
    import yaml

    root = find_config_root(config_root) / "postprocessors"
    files = [CONFIG_FILES.get(name, f"{name}.yml"), f"{name}.yml", f"{name}.yaml"]
    for f in dict.fromkeys(files):
        if (root / f).is_file():
            # WORKAROUND: openood.utils.Config(path) accepts only *.yml (grood's is *.yaml), so
            # the file is parsed here and handed over as a dict.
            return yaml.safe_load((root / f).read_text()) or {}
    raise ConfigError(f"no config for OpenOOD postprocessor {name!r} in {root} (tried {files})")

"""Where on-disk datasets live: ``data_root=`` on the command line, else ``$OOD_BENCH_DATA``."""

from __future__ import annotations

import os
from pathlib import Path

from ood_bench.errors import ConfigError, DataError

ENV_VAR = "OOD_BENCH_DATA"


def resolve_data_root(data_root: str | os.PathLike | None, needed_by: str = "") -> Path:
    """The data root as an existing directory, or an error that says how to set it."""
    who = f" ({needed_by} reads datasets from disk)" if needed_by else ""
    if data_root in (None, ""):
        data_root = os.environ.get(ENV_VAR) or None
    if data_root is None:
        raise ConfigError(
            f"no data root set{who}. Fix: pass data_root=/path/to/data or export {ENV_VAR}=... "
            "pointing at a folder with the datasets in torchvision's layout (e.g. MNIST/raw/)."
        )
    root = Path(data_root).expanduser()
    if not root.is_dir():
        raise DataError(
            f"data root {root} does not exist or is not a folder{who}. Fix: pass data_root= or "
            f"set {ENV_VAR} to the folder that holds the dataset folders (e.g. {root.parent})."
        )
    return root.resolve()


def require_dataset(root: Path, folder: str, layout: str, download_hint: bool = True) -> Path:
    """``root/folder`` must exist; the error names where it looked and the expected layout."""
    path = root / folder
    if not path.exists():
        hint = " or pass download=true on a machine with internet" if download_hint else ""
        raise DataError(
            f"dataset {folder!r} not found at {path}. Expected layout: {layout}. Fix: copy it "
            f"there{hint}, point data_root elsewhere, or drop this set (ood_sets=[...])."
        )
    return path

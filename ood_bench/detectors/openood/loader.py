"""Importing OpenOOD offline: its postprocessor registry, with stubs for import-only packages.

OpenOOD is not on PyPI and is optional: nothing imports it until :func:`load_openood` is called
(by a detector's bind or fit), and then a missing install says how to get it (:data:`INSTALL_HINT`).
"""

from __future__ import annotations

import ast
import contextlib
import functools
import importlib
import importlib.util
import logging
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

OPENOOD_COMMIT = "3c35632ee91b54b09d1f085d04f94744cece7d0b"  # the commit this adapter is tested on

INSTALL_HINT = f"""OpenOOD is not installed (it is not on PyPI). Install it, with its configs, by:
  git clone https://github.com/Jingkang50/OpenOOD /path/to/OpenOOD
  git -C /path/to/OpenOOD checkout {OPENOOD_COMMIT[:12]}
  pip install --no-deps -e /path/to/OpenOOD
  pip install faiss-cpu statsmodels
  pip install Cython && pip wheel --no-build-isolation --no-deps libmr==0.1.9 -w .wheels \\
      && pip install .wheels/libmr-0.1.9-*.whl
(or pip install -e ".[openood]", then set OPENOOD_CONFIG_ROOT=/path/to/OpenOOD/configs: pip
does not install OpenOOD's configs/). See docs/openood.md, section Install."""


class OpenOODMissing(ImportError):
    """OpenOOD, or a package its postprocessors import, is not installed."""


# --- importing OpenOOD --------------------------------------------------------------------------
# WORKAROUND: ``openood.postprocessors/__init__`` imports every method eagerly, and through
# ``openood.trainers`` and ``openood.preprocessors`` some packages that no postprocessor uses
# when it runs. Each is replaced by a stub module only when it cannot be imported, only while
# OpenOOD is being imported (then removed from sys.modules, so no other code sees it):
# - diffdist: imported by openood/trainers/csi_trainer.py (CSI training), reached through
#   dsvdd_postprocessor's ``from openood.trainers.dsvdd_trainer import init_center_c``;
# - cv2 and imgaug(.augmenters): imported by openood/preprocessors/draem_preprocessor.py (DRAEM
#   data augmentation), reached through odin/godin/grood's ``from
#   openood.preprocessors.transform import normalization_dict``; imgaug 0.4.0 also fails to
#   import on numpy 2 (np.sctypes).
# Packages postprocessors do use at run time are real requirements, never stubbed: faiss
# (knn, cider, npos, nnguide), libmr (openmax), statsmodels (adascale), scikit-learn, scipy.
IMPORT_ONLY_STUBS = {
    "diffdist": ("diffdist.functional",),
    "cv2": (),
    "imgaug": ("imgaug.augmenters",),
}
RUNTIME_REQUIREMENTS = {
    "faiss": "pip install faiss-cpu (or faiss-gpu)",
    "libmr": "pip install Cython && pip wheel --no-build-isolation --no-deps libmr==0.1.9 -w "
    ".wheels && pip install .wheels/libmr-0.1.9-*.whl",
    "statsmodels": "pip install statsmodels",
}


def _stub(name: str) -> types.ModuleType:
    """An empty stand-in package ``name`` whose attributes raise OpenOODMissing when used."""
    mod = types.ModuleType(name)
    mod.__path__ = []  # a package, so that submodules can be stubbed below it

    def __getattr__(attr: str) -> Any:
        """Raise OpenOODMissing for any attribute used (AttributeError for dunder names)."""
        if attr.startswith("__"):
            raise AttributeError(attr)
        raise OpenOODMissing(
            f"{name}.{attr} is used, but {name} is a stub ood_bench put in place while "
            f"importing OpenOOD (no postprocessor should use it): install {name}"
        )

    mod.__getattr__ = __getattr__  # type: ignore[method-assign]
    return mod


@contextlib.contextmanager
def _import_only_stubs() -> Iterator[list[str]]:
    """Stub the import-only packages that are missing or broken while OpenOOD is imported;
    yields the stubbed names and removes the stubs afterwards."""
    stubbed: list[str] = []
    for top, subs in IMPORT_ONLY_STUBS.items():
        try:
            importlib.import_module(top)
            for s in subs:
                importlib.import_module(s)
            continue
        except Exception:  # missing, or broken (imgaug on numpy 2 raises AttributeError)
            pass
        for name in (top, *subs):
            sys.modules[name] = _stub(name)
            stubbed.append(name)
        for parent, child in ((top, s) for s in subs):
            setattr(sys.modules[parent], child.rsplit(".", 1)[1], sys.modules[child])
    try:
        yield stubbed
    finally:
        for name in stubbed:
            sys.modules.pop(name, None)


@functools.cache
def load_openood() -> types.SimpleNamespace:
    """OpenOOD's postprocessor registry and helpers, imported once (offline, no download).

    ``registry`` maps every registered name to its class: the public registry of
    ``openood.evaluation_api.postprocessor`` (the one ``get_postprocessor(config_root, name,
    id_name)`` reads) plus names only the training pipeline's registry
    (``openood.postprocessors.utils.get_postprocessor``) knows, e.g. ``rts``.
    """
    if importlib.util.find_spec("openood") is None:
        raise OpenOODMissing(INSTALL_HINT)
    with _import_only_stubs() as stubbed:
        try:
            pps = importlib.import_module("openood.postprocessors")
        except ModuleNotFoundError as e:
            top = (e.name or "").split(".")[0]
            fix = RUNTIME_REQUIREMENTS.get(top, f"pip install {top}")
            raise OpenOODMissing(
                f"OpenOOD's postprocessors import {e.name!r}, which is not installed: {fix}"
            ) from e
        from openood.postprocessors.info import num_classes_dict
        from openood.utils.config import Config
    if stubbed:
        log.info("imported OpenOOD with import-only stubs for %s", ", ".join(stubbed))
    pkg = Path(pps.__file__).resolve().parent.parent  # .../openood
    # WORKAROUND: importing openood.evaluation_api runs its __init__, which imports the
    # Evaluator and through it gdown, foolbox and timm (dataset downloads, attacks, models).
    # The registry module itself needs none of them, so it is loaded from its file alone.
    spec = importlib.util.spec_from_file_location(
        "ood_bench_openood_registry", pkg / "evaluation_api" / "postprocessor.py"
    )
    assert spec is not None and spec.loader is not None
    reg_mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reg_mod)
    registry: dict[str, type] = dict(reg_mod.postprocessors)
    known = set(registry.values())
    for name, cls_name in _pipeline_registry(pkg / "postprocessors" / "utils.py").items():
        cls = getattr(sys.modules["openood.postprocessors.utils"], cls_name, None)
        if cls is not None and name not in registry and cls not in known:
            registry[name] = cls  # e.g. rts; temperature_scaling is temp_scaling's alias
    return types.SimpleNamespace(
        registry=registry,
        Config=Config,
        num_classes_dict=num_classes_dict,
        package_dir=pkg,
        version=getattr(sys.modules["openood"], "__version__", "1.5"),
    )


def _pipeline_registry(path: Path) -> dict[str, str]:
    """name → class name of the dict literal in ``get_postprocessor`` (read, not executed)."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.FunctionDef) and node.name == "get_postprocessor":
            for d in ast.walk(node):
                if isinstance(d, ast.Dict):
                    return {
                        k.value: v.id
                        for k, v in zip(d.keys, d.values, strict=True)
                        if isinstance(k, ast.Constant) and isinstance(v, ast.Name)
                    }
    return {}


def registered_postprocessors() -> list[str]:
    """Sorted names of every postprocessor OpenOOD registers."""
    return sorted(load_openood().registry)

"""Adapter for OpenOOD's postprocessors (``detector=openood_<name>``), on CPU or GPU, offline.

OpenOOD (github.com/Jingkang50/OpenOOD) is not on PyPI and is optional: nothing here imports it
until a detector is bound or fitted, so the rest of the project works without it, and then the
error says how to install it (:data:`INSTALL_HINT`).

How a postprocessor runs here, as OpenOOD's own ``Evaluator`` runs it, minus its downloads:

1. Its default arguments are read from OpenOOD's ``configs/postprocessors/<name>.yml`` in the
   installed checkout (``config_root``; never downloaded), ``params`` overriding
   ``postprocessor_args``; the class count comes from the backbone's head.
2. The backbone is wrapped in :class:`~ood_bench.detectors.openood_net.OpenOODNet` (OpenOOD's
   network interface derived from the backbone's taps), and for ReAct/ASH/SCALE/AdaScale in
   the same OpenOOD network wrapper the Evaluator applies.
3. ``setup(net, id_loader_dict, ood_loader_dict)`` runs on the harness's own splits:
   ``train`` = the ``fit`` split, ``val`` = the held-out ``calib`` split, ``test`` = ``calib``
   too (only ResidualPostprocessor reads it, for a statistic it never uses: the ID test split
   stays unseen). ``ood_loader_dict['val']`` is the OOD validation set only with ``aps=true``.
4. Scores come from ``postprocess(net, batch)`` on batches of the set's own images, negated:
   OpenOOD's ``conf`` is higher for ID, the harness's scores are higher for OOD.

Every workaround for OpenOOD's assumptions is applied from here, without editing its files; each
is named ``WORKAROUND`` in a comment that says why.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import importlib
import importlib.util
import io
import itertools
import logging
import os
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch.overrides import TorchFunctionMode
from torch.utils.data import DataLoader, Dataset

from ood_bench.config import check_types, default_types
from ood_bench.detectors.base import Detector
from ood_bench.detectors.openood_net import OpenOODNet
from ood_bench.errors import ConfigError
from ood_bench.features import Features

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
does not install OpenOOD's configs/). See the README, section "OpenOOD"."""


class OpenOODMissing(ImportError):
    """OpenOOD, or a package its postprocessors import, is not installed."""


# --- status of every registered postprocessor ---------------------------------------------------
# Postprocessors that need a network trained for them, or OpenOOD's anomaly-detection networks:
# running them on a plain classifier would fail (or score something else), so they are refused
# with the reason.
UNSUPPORTED: dict[str, str] = {
    "godin": "training-time method: needs a GODIN network (forward(x, inference=True, "
    "score_func=...)) trained with its decomposed confidence head",
    "conf_branch": "training-time method: needs a confidence-branch network "
    "(forward(x, return_confidence=True))",
    "mcd": "training-time method: needs a two-head MCD network (forward(x, return_double=True))",
    "rotpred": "training-time method: needs a rotation-prediction head "
    "(forward(x, return_rot_logits=True))",
    "rts": "training-time method: needs an RTS network that outputs a variance "
    "(forward(x, return_var=True))",
    "t2fnorm": "training-time method: needs a T2FNorm-trained network (forward_ood_inference)",
    "dsvdd": "training-time method: needs a Deep SVDD network and its hypersphere centre",
    "mos": "training-time method: needs a MOS network trained with grouped softmax and its "
    "group configuration (config.trainer.group_config)",
    "cutpaste": "training-time method: needs a CutPaste network returning (embedding, logits) "
    "and paired-image batches",
    "opengan": "training-time method: needs an OpenGAN discriminator trained on the features "
    "(net['netD'])",
    "draem": "anomaly detection: needs DRAEM's generative and discriminative networks "
    "(net['generative'], net['discriminative'])",
    "rd4ad": "anomaly detection: needs RD4AD's encoder, bottleneck and decoder (net['encoder'])",
    "patchcore": "anomaly detection: needs PatchCore's two-layer WideResNet features and "
    "OpenOOD's network/evaluator config, and writes ./results/patch/",
    "ssd": "training-time method (SSD's self-supervised features): OpenOOD's SSDPostprocessor "
    "fits one-cluster statistics indexed by the ID labels (IndexError for more than one class) "
    "and has no postprocess of its own (its scores would be MSP)",
    "ensemble": "needs several trained checkpoints of the same network "
    "(postprocessor_args.checkpoints), loaded with an unsafe torch.load",
    "grood": "needs a network OpenOOD can re-run layer by layer from an intermediate feature "
    "(BaseModel over the model's children), OOD validation data in setup by default "
    "(use_val_ood), and its setup reads self.dataset_name, which it never sets "
    "(AttributeError upstream)",
}
# Postprocessors that run, with what to know about them on a harness backbone.
NOTES: dict[str, str] = {
    "odin": "assumes 3 input channels: fewer are zero-padded to 3 and the network reads the real "
    "ones (exact: the padding gets no gradient)",
    "iodin": "assumes 3 input channels: fewer are zero-padded to 3 and the network reads the real "
    "ones (exact: the padding gets no gradient)",
    "mds_ensemble": "assumes 3 input channels: fewer are zero-padded to 3 and the network reads "
    "the real ones (exact); OpenOOD's default feature_type_list [mean] reads the first tap",
    "rankfeat": "ResNet only: reads layer3, layer4 and avgpool of a torchvision-style ResNet",
    "vim": "dim (OpenOOD: 256, for 512-d ResNet-18 features) must be below the feature "
    "dimension: set detector.params.dim",
    "residual": "dim (OpenOOD: 512) must be below the feature dimension: set detector.params.dim",
    "cider": "post-hoc part only: k-NN on L2-normalised penultimate features (CIDER's training "
    "is not done)",
    "npos": "post-hoc part only: k-NN on L2-normalised penultimate features (NPOS's training is "
    "not done)",
    "reweightood": "post-hoc part only: Mahalanobis on L2-normalised penultimate features "
    "(ReweightOOD's training is not done)",
    "dropout": "equals MSP unless the backbone applies dropout in eval mode (OpenOOD's "
    "DropoutNet does)",
    "temp_scaling": "fits a temperature on the calib split (LBFGS), then MSP",
    "adascale_a": "default hyperparameters applied through set_hyperparam (see WORKAROUND)",
    "adascale_l": "default hyperparameters applied through set_hyperparam (see WORKAROUND)",
}
# OpenOOD's Evaluator wraps the network for these postprocessors (openood.networks.*).
NET_WRAPPERS = {
    "react": ("react_net", "ReactNet"),
    "ash": ("ash_net", "ASHNet"),
    "scale": ("scale_net", "ScaleNet"),
    "adascale_a": ("adascale_net", "AdaScaleANet"),
    "adascale_l": ("adascale_net", "AdaScaleLNet"),
}
# Postprocessors whose code indexes input channels 0, 1 and 2.
THREE_CHANNELS = {"odin", "iodin", "mds_ensemble"}
# Config files not named after the postprocessor (get_postprocessor would download
# "<name>.yml", which does not exist upstream for these either).
CONFIG_FILES = {"patchcore": "patch.yml", "grood": "grood.yaml"}
# WORKAROUND: AdaScale builds k1_/k2_/ecdf/min_percentile only in set_hyperparam, which
# OpenOOD's Evaluator calls during its APS search alone; without APS, postprocess would fail, so
# the defaults from its config are applied with set_hyperparam(get_hyperparam()) after setup.
INIT_BY_SET_HYPERPARAM = {"adascale_a", "adascale_l"}


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


def status(name: str) -> tuple[str, str]:
    """``("ok", note)`` or ``("unsupported", reason)`` of a registered postprocessor."""
    if name in UNSUPPORTED:
        return "unsupported", UNSUPPORTED[name]
    return "ok", NOTES.get(name, "")


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


# --- running OpenOOD's code on the configured device ---------------------------------------------
def _is_cuda(d: Any) -> bool:
    """Whether ``d`` is a device string or torch.device of type ``cuda``."""
    try:
        return isinstance(d, str | torch.device) and torch.device(d).type == "cuda"
    except (RuntimeError, TypeError):
        return False


class _CudaToDevice(TorchFunctionMode):
    """WORKAROUND: OpenOOD calls ``.cuda()`` on batches, buffers and nn.Modules, and creates
    tensors with ``device='cuda'`` (temp_scaling), which fail on a CPU machine and ignore the
    configured device on a GPU one. While this mode is active (only around OpenOOD's calls, in
    this thread), ``Tensor.cuda()`` and every ``device='cuda'``/``.to('cuda')`` go to the
    configured device instead."""

    def __init__(self, device: torch.device):
        super().__init__()
        self.device = device

    def __torch_function__(self, func, types, args=(), kwargs=None):
        """Redirect ``.cuda()``, ``device='cuda'`` and ``.to('cuda')`` to the configured device."""
        kwargs = dict(kwargs or {})
        if func is torch.Tensor.cuda:
            return args[0].to(self.device)
        if _is_cuda(kwargs.get("device")):
            kwargs["device"] = self.device
        if func is torch.Tensor.to:
            args = tuple(self.device if _is_cuda(a) else a for a in args)
        return func(*args, **kwargs)


@contextlib.contextmanager
def openood_context(device: torch.device, log_output: bool = True) -> Iterator[None]:
    """Around every call into OpenOOD: CUDA placement onto ``device`` and its print() output
    to this module's debug log."""
    saved = torch.cuda.FloatTensor
    out = io.StringIO()

    def float_tensor(*args: Any) -> torch.Tensor:
        """Stand-in for ``torch.cuda.FloatTensor(data)``: float32 on ``device``."""
        return torch.tensor(*args, dtype=torch.float32, device=device)

    # WORKAROUND: mds_ensemble and gmm build their layer weights with the legacy constructor
    # torch.cuda.FloatTensor(list), which no torch function mode sees; while OpenOOD runs it is
    # a float32 tensor on the configured device.
    torch.cuda.FloatTensor = float_tensor  # type: ignore[misc,assignment]
    try:
        with _CudaToDevice(device), contextlib.redirect_stdout(out):
            yield
    finally:
        torch.cuda.FloatTensor = saved  # type: ignore[misc]
        if log_output and out.getvalue().strip():
            log.debug("OpenOOD says:\n%s", out.getvalue().rstrip())


# --- data --------------------------------------------------------------------------------------
class _OpenOODImages(Dataset):
    """An ImageSet as OpenOOD's dict samples: ``data`` (and ``data_aux``, which get_MDS_stat and
    GMM read), ``label`` (-1 for OOD), ``index``; zero-padded to ``channels`` when asked."""

    def __init__(self, source: Any, channels: int | None = None):
        """``channels``: zero-pad images to this many channels (None: as is)."""
        self.source = source
        self.name = source.name  # mds_ensemble labels its progress bars with dataset.name
        self.channels = channels

    def __len__(self) -> int:
        return len(self.source.dataset)

    def __getitem__(self, i: int) -> dict[str, Any]:
        """Sample ``i`` as OpenOOD's dict (``data``, ``data_aux``, ``label``, ``index``)."""
        x, y = self.source.dataset[i]
        x = torch.as_tensor(x).float()
        if self.channels and x.shape[0] < self.channels:
            pad = torch.zeros(self.channels - x.shape[0], *x.shape[1:], dtype=x.dtype)
            x = torch.cat([x, pad])
        return {"data": x, "data_aux": x, "label": int(y), "index": i}


def _source(feats: Features, what: str) -> Any:
    """The images behind ``feats``; a ConfigError when it carries none."""
    if feats.source is None:
        raise ConfigError(
            f"the {what} features carry no source images (Features.source is None): OpenOOD "
            "postprocessors run the network on the images; extract them with "
            "ood_bench.features.FeatureExtractor"
        )
    return feats.source


def _as_list(x: Any) -> list[Any]:
    """``x`` as a list (lists and tuples converted, anything else wrapped)."""
    return list(x) if isinstance(x, list | tuple) else [x]


# --- the detector ------------------------------------------------------------------------------
class OpenOODDetector(Detector):
    """One OpenOOD postprocessor, run on the harness's backbone and splits.

    ``postprocessor``: a registered OpenOOD name (``msp``, ``knn``, …); ``params``: overrides of
    its ``postprocessor_args`` (the defaults are OpenOOD's YAML); ``aps``: run OpenOOD's
    automatic parameter search over its ``postprocessor_sweep`` on an OOD validation set
    (``search_ood``, default the benchmark's first OOD set; excluded from evaluation and flagged
    ``tuned_on_ood``); ``sweep``: overrides of that grid; ``config_root``: OpenOOD's
    ``configs/``; ``taps``/``penultimate``: the backbone's (null = declared by the model, else
    discovered); ``batch_size``: of OpenOOD's loaders (200, the Evaluator's default; NNGuide's
    memory bank is a whole number of batches).
    """

    library = "openood"
    needs: ClassVar[frozenset[str]] = frozenset({"features", "model"})

    def __init__(
        self,
        name: str,
        postprocessor: str,
        params: dict[str, Any] | None = None,
        aps: bool = False,
        search_ood: str | None = None,
        sweep: dict[str, list[Any]] | None = None,
        config_root: str | None = None,
        taps: list[str] | None = None,
        penultimate: str | None = None,
        batch_size: int = 200,
    ):
        """Store the settings; OpenOOD is imported only by :meth:`bind` / :meth:`fit`."""
        # nothing imports OpenOOD here: the config group composes without it (see bind/fit)
        super().__init__(name)
        self.postprocessor = postprocessor
        # null = OpenOOD's default (the YAMLs list every argument name as null)
        self._params = {k: v for k, v in (params or {}).items() if v is not None}
        self.aps = bool(aps)
        self.search_ood = search_ood
        self._sweep = dict(sweep or {})
        self.config_root = config_root
        self.taps = list(taps) if taps else None
        self.penultimate = penultimate
        self.batch_size = int(batch_size)
        if self.aps:  # instance attribute: the runner then calls tune() and flags the rows
            self.needs = frozenset({*type(self).needs, "ood_validation"})
        self.device = torch.device("cpu")
        self.pp: Any = None
        self.net: Any = None
        self.config: dict[str, Any] = {}
        self.tuned: dict[str, Any] = {}
        self._tune_sets: tuple[Features, Features] | None = None
        self._channels: int | None = None  # zero-pad inputs to this many channels

    # -- protocol ------------------------------------------------------------------------------
    def bind(self, model: torch.nn.Module, device: str | torch.device = "cpu") -> None:
        """Check that the postprocessor is registered and supported, then bind the network."""
        self._check_runnable()
        super().bind(model, device)

    def tune(self, val_id: Features, val_ood: Features) -> None:
        """Keep the validation sets: OpenOOD searches after ``setup``, which ``fit`` runs."""
        if not self.aps:
            raise ConfigError(f"{self.name}: tune() needs aps=true")
        self._tune_sets = (val_id, val_ood)

    def fit(self, fit: Features, calib: Features | None = None) -> OpenOODDetector:
        """Wrap the bound network, build the postprocessor from its YAML (with ``params``) and
        run its ``setup`` on ``fit`` (train) and ``calib`` (val and test loaders), then APS
        when :meth:`tune` gave validation sets."""
        oo = self._check_runnable()
        if self.model is None:
            raise ConfigError(
                f"{self.name} runs the network: bind(model, device) it before fit "
                "(the runner does, for detectors whose needs include 'model')"
            )
        fit_src = _source(fit, "fit")
        val_src = _source(calib, "calib") if calib is not None else fit_src
        x0 = torch.as_tensor(fit_src.dataset[0][0]).float()
        channels = 3 if self.postprocessor in THREE_CHANNELS and x0.shape[0] < 3 else None
        self._channels = channels
        taps, penultimate = self._taps(x0)
        self.net = OpenOODNet(
            self.model, taps, penultimate, in_channels=x0.shape[0], lift_channels=bool(channels)
        ).to(self.device)
        self.net.eval()
        first = next(iter(self._loader(fit_src)))["data"].to(self.device)
        self.net.check(first)
        if self.postprocessor == "rankfeat":
            self._check_resnet()
        num_classes = self.net.num_classes
        self.pp = self._build(oo, num_classes, tuple(x0.shape[1:]))
        net = self._wrap_net(self.net)
        id_loaders = {
            "train": self._loader(fit_src),
            "val": self._loader(val_src),
            "test": self._loader(val_src),  # ID test stays unseen (see the module doc)
        }
        ood_loaders: dict[str, Any] = {"val": None, "near": {}, "far": {}}
        if self._tune_sets is not None:
            ood_loaders["val"] = self._loader(_source(self._tune_sets[1], "OOD validation"))
        with openood_context(self.device):
            self.pp.setup(net, id_loaders, ood_loaders)
            if self.postprocessor in INIT_BY_SET_HYPERPARAM:
                self.pp.set_hyperparam(_as_list(self.pp.get_hyperparam()))
        self._pp_net = net
        if self._tune_sets is not None:
            self._search(*self._tune_sets)
        return self

    def _score(self, feats: Features) -> np.ndarray:
        """Minus OpenOOD's confidence: higher = more OOD."""
        if self.pp is None:
            raise ConfigError(f"{self.name}: fit before score")
        return -self.confidence(feats)

    def confidence(self, feats: Features) -> np.ndarray:
        """OpenOOD's own ``conf`` (higher = more ID) from ``postprocess`` on the set's images."""
        confs = []
        with openood_context(self.device):
            for batch in self._loader(_source(feats, "scored")):
                _, conf = self.pp.postprocess(self._pp_net, batch["data"].to(self.device))
                conf = conf.detach().cpu() if isinstance(conf, torch.Tensor) else conf
                confs.append(np.asarray(conf, dtype=np.float64).reshape(-1))
        return np.concatenate(confs) if confs else np.zeros(0)

    def params(self) -> dict[str, Any]:
        """Postprocessor name, its arguments as run, ``aps`` and any tuned values."""
        pp_cfg = self.config.get("postprocessor", {}) if self.config else {}
        return {
            "postprocessor": self.postprocessor,
            "args": pp_cfg.get("postprocessor_args"),
            "aps": self.aps,
            **({"tuned": self.tuned} if self.tuned else {}),
        }

    # -- pieces --------------------------------------------------------------------------------
    def _check_runnable(self) -> types.SimpleNamespace:
        """Load OpenOOD; a ConfigError unless the postprocessor is registered and supported."""
        oo = load_openood()
        if self.postprocessor not in oo.registry:
            raise ConfigError(
                f"OpenOOD has no postprocessor {self.postprocessor!r}; registered: "
                f"{sorted(oo.registry)}"
            )
        if self.postprocessor in UNSUPPORTED:
            raise ConfigError(
                f"OpenOOD's {self.postprocessor} cannot run on a post-hoc classifier here: "
                f"{UNSUPPORTED[self.postprocessor]}"
            )
        return oo

    def _taps(self, x0: torch.Tensor) -> tuple[list[str], str]:
        """Taps and penultimate layer: configured, else declared by the model, else discovered."""
        from ood_bench.backbones import discover_taps

        taps = self.taps or list(getattr(self.model, "taps", None) or [])
        penultimate = self.penultimate or getattr(self.model, "penultimate", None)
        if not taps or not penultimate:
            example = torch.zeros(2, *x0.shape, device=self.device)
            found, pen = discover_taps(self.model, example)
            taps, penultimate = taps or found, penultimate or pen
        return taps, str(penultimate)

    def _check_resnet(self) -> None:
        """A ConfigError unless the model is a ResNet with taps 3 and 4 = layer3 and layer4."""
        taps = self.net.taps
        ok = all(hasattr(self.model, a) for a in ("layer3", "layer4", "avgpool")) and (
            len(taps) > 4 and taps[3] == "layer3" and taps[4] == "layer4"
        )
        if not ok:
            raise ConfigError(
                f"OpenOOD's rankfeat is ResNet-only: it reads layer3, layer4 and avgpool "
                f"(intermediate_forward indices 3 and 4), but {type(self.model).__name__} has "
                f"taps {taps}"
            )

    def _build(self, oo: types.SimpleNamespace, num_classes: int, image_hw: tuple) -> Any:
        """The postprocessor from OpenOOD's YAML with ``params`` and ``sweep`` applied, given a
        dataset entry with the backbone's class count."""
        raw = read_config(self.postprocessor, self.config_root)
        pp_cfg = raw.setdefault("postprocessor", {})
        args = dict(pp_cfg.get("postprocessor_args") or {})
        unknown = sorted(set(self._params) - set(args))
        if unknown and args:
            log.warning(
                "%s: params %s are not among OpenOOD's arguments %s",
                self.name,
                unknown,
                sorted(args),
            )
        check_types(
            None,
            self._params,
            "detector.params",
            f"OpenOOD's {self.postprocessor} postprocessor (its YAML's default)",
            default_types(args),
        )
        args.update(self._params)
        pp_cfg["postprocessor_args"] = args
        if self._sweep:
            pp_cfg["postprocessor_sweep"] = {**(pp_cfg.get("postprocessor_sweep") or {})}
            pp_cfg["postprocessor_sweep"].update(self._sweep)
        # WORKAROUND: num_classes_dict (openood/postprocessors/info.py) knows only cifar10,
        # cifar100, imagenet200 and imagenet, and mds, rmds, klm, she, gram, gradnorm, openmax…
        # look the class count up by dataset name. The benchmark gets its own key in that
        # in-memory dict, with the backbone's class count (its head's outputs).
        key = f"ood_bench[{num_classes} classes]"
        oo.num_classes_dict[key] = num_classes
        raw["dataset"] = {
            "name": key,
            "num_classes": num_classes,
            "image_size": image_hw[0] if image_hw else None,
        }
        self._check_dims(args)
        self.config = raw
        cls = oo.registry[self.postprocessor]
        with openood_context(self.device):
            pp = cls(oo.Config(raw))
        # as openood.evaluation_api.postprocessor.get_postprocessor does
        pp.APS_mode = bool(pp_cfg.get("APS_mode", False))
        pp.hyperparam_search_done = False
        log.info(
            "OpenOOD %s (%s) with %s", self.postprocessor, cls.__name__, args or "no arguments"
        )
        return pp

    def _check_dims(self, args: dict[str, Any]) -> None:
        """A ConfigError when vim's / residual's ``dim`` is not below the feature dimension."""
        dim = args.get("dim")
        if self.postprocessor in ("vim", "residual") and dim is not None:
            d = self.net.feature_size
            if int(dim) >= d:
                raise ConfigError(
                    f"{self.name}: dim={dim} (OpenOOD's default, for 512-d ResNet-18 features) "
                    f"must be smaller than the feature dimension {d}, else the principal "
                    f"space is everything and the score is constant. Fix: "
                    f"detector.params.dim={d // 2} (half the features, as OpenOOD's 256 of 512)"
                )

    def _wrap_net(self, net: OpenOODNet) -> torch.nn.Module:
        """The net in OpenOOD's wrapper network for react, ash, scale and adascale, else as is."""
        if self.postprocessor not in NET_WRAPPERS:
            return net
        module, cls = NET_WRAPPERS[self.postprocessor]
        return getattr(importlib.import_module(f"openood.networks.{module}"), cls)(net)

    def _loader(self, source: Any) -> DataLoader:
        """An ordered DataLoader of the set's images as OpenOOD's dict batches."""
        return DataLoader(
            _OpenOODImages(source, self._channels),
            batch_size=self.batch_size,
            shuffle=False,
        )

    def _search(self, val_id: Features, val_ood: Features) -> None:
        """OpenOOD's APS (Evaluator.hyperparam_search): every combination of the sweep, AUROC
        of ``conf`` on ID vs OOD validation, first maximum kept."""
        sweep = getattr(self.pp, "args_dict", None)
        if not sweep or not hasattr(self.pp, "set_hyperparam"):
            raise ConfigError(
                f"OpenOOD's {self.postprocessor} has no APS sweep (postprocessor_sweep) or "
                "set_hyperparam: run it with aps=false"
            )
        names = list(sweep.keys())
        grids = [list(sweep[n]) for n in names]
        # the Evaluator's recursive_generator order: the last list varies slowest
        combos = [list(reversed(c)) for c in itertools.product(*reversed(grids))]
        best, best_auroc = 0, -1.0
        for i, combo in enumerate(combos):
            with openood_context(self.device):
                self.pp.set_hyperparam(combo)
            c_id, c_ood = self.confidence(val_id), self.confidence(val_ood)
            y = np.r_[np.zeros(len(c_id)), np.ones(len(c_ood))]
            auroc = float(roc_auc_score(y, -np.r_[c_id, c_ood]))
            log.info(
                "%s APS %s: AUROC %.4f", self.name, dict(zip(names, combo, strict=True)), auroc
            )
            if auroc > best_auroc:
                best, best_auroc = i, auroc
        with openood_context(self.device):
            self.pp.set_hyperparam(combos[best])
        self.pp.hyperparam_search_done = True
        self.tuned = dict(zip(names, combos[best], strict=True))
        log.warning(
            "%s: APS chose %s (AUROC %.4f on OOD validation data)",
            self.name,
            self.tuned,
            best_auroc,
        )

"""The ``detector=openood_<name>`` adapter: one OpenOOD postprocessor on the harness's backbone
and splits (see the package's docstring for how it runs)."""

from __future__ import annotations

import importlib
import itertools
import logging
import types
from typing import Any, ClassVar

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch.utils.data import DataLoader, Dataset

from ood_bench.config import check_types, default_types
from ood_bench.detectors.base import Detector, vim_principal_dim
from ood_bench.detectors.openood.catalogue import (
    INIT_BY_SET_HYPERPARAM,
    NET_WRAPPERS,
    READS_VAL,
    SCALED_DEFAULTS,
    THREE_CHANNELS,
    UNSUPPORTED,
)
from ood_bench.detectors.openood.configs import read_config
from ood_bench.detectors.openood.device import openood_context
from ood_bench.detectors.openood.loader import load_openood
from ood_bench.detectors.openood.net import OpenOODNet
from ood_bench.errors import ConfigError, NotApplicable
from ood_bench.features import Features

log = logging.getLogger(__name__)


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
        # learns from calib (its setup reads the validation loader): see ood_bench.calibration
        self.reads_calib = postprocessor in READS_VAL
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
            raise NotApplicable(
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
        # OpenOOD's feature lists end with the penultimate layer (its ResNets: [..., layer4,
        # avgpool]); a backbone whose penultimate is read but not tapped (it duplicates a pooled
        # tap for the stat detectors: cifar_cnn, vgg_small_32x32, resnet18_32x32) gets it back
        pen = str(penultimate)
        if not pen.startswith("input:") and pen not in taps:
            taps = [*taps, pen]
        return list(taps), pen

    def _check_resnet(self) -> None:
        """A ConfigError unless the model is a ResNet with taps 3 and 4 = layer3 and layer4."""
        taps = self.net.taps
        ok = all(hasattr(self.model, a) for a in ("layer3", "layer4", "avgpool")) and (
            len(taps) > 4 and taps[3] == "layer3" and taps[4] == "layer4"
        )
        if not ok:
            raise NotApplicable(
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
        self._scale_defaults(args)
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

    def _scale_defaults(self, args: dict[str, Any]) -> None:
        """Replace OpenOOD's defaults that assume 512-d ResNet-18 features
        (:data:`~ood_bench.detectors.openood.catalogue.SCALED_DEFAULTS`) by the value their rule
        gives for this backbone's feature dimension, unless ``params`` set them."""
        for key in SCALED_DEFAULTS.get(self.postprocessor, {}):
            if key in self._params:
                continue
            d = int(self.net.feature_size)
            value = vim_principal_dim(d)
            log.info(
                "%s: %s=%d (the ViM paper's rule for %d-d features; OpenOOD's YAML default %s "
                "is for %s)",
                self.name,
                key,
                value,
                d,
                args.get(key),
                SCALED_DEFAULTS[self.postprocessor][key],
            )
            args[key] = value

    def _check_dims(self, args: dict[str, Any]) -> None:
        """A ConfigError when vim's / residual's ``dim`` is not below the feature dimension."""
        dim = args.get("dim")
        if self.postprocessor in ("vim", "residual") and dim is not None:
            d = self.net.feature_size
            if int(dim) >= d:
                raise ConfigError(
                    f"{self.name}: dim={dim} must be smaller than the feature dimension {d}, "
                    f"else the principal space is everything and the score is constant. Fix: "
                    f"detector.params.dim={vim_principal_dim(d)} (the ViM paper's rule, what "
                    f"dim=null gives), or any value below {d}"
                )

    def recorded_params(self) -> dict[str, float]:
        """ViM's / Residual's ``dim`` as run (``param_dim``: the scaled default, the given
        value, or APS's choice)."""
        if self.postprocessor not in SCALED_DEFAULTS or self.pp is None:
            return {}
        dim = getattr(self.pp, "dim", None)
        return {} if dim is None else {"dim": float(dim)}

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

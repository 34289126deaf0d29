"""The ``detector=pood_<name>`` adapter: one pytorch-ood class, built with the parts its
constructor needs and fed by the :mod:`~.feeds` class its base calls for."""

from __future__ import annotations

import inspect
import logging
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

from ood_bench.config import check_types
from ood_bench.detectors.base import Detector
from ood_bench.detectors.pytorch_ood import catalogue as cat
from ood_bench.detectors.pytorch_ood.bound import BoundNet
from ood_bench.detectors.pytorch_ood.context import AdapterContext
from ood_bench.detectors.pytorch_ood.feeds import Feed, select_feed
from ood_bench.errors import ConfigError
from ood_bench.features import Features

log = logging.getLogger(__name__)


class PytorchOODDetector(Detector):
    """One pytorch-ood detector class, fed according to its base class.

    ``cls``: class name in ``pytorch_ood.detector``; ``params``: its keyword arguments (the
    library's defaults are in each YAML); ``features``: what a features / feature-maps detector
    reads — ``"penultimate"`` (default), a cached tap key such as ``"block3.mean"`` (features
    detectors) or a module name with 4-D output such as ``"block3"`` (feature-maps detectors);
    ``layers``: taps of structured and layer-wise detectors (cached keys for MultiMahalanobis,
    module names for Gram and NACUE; ``None`` = every tap of the backbone); ``fit_on``: ``fit``
    or ``calib`` (held-out ID data, for methods fitted on a validation set); ``search``: tune
    with pytorch-ood's ``GridSearch`` on OOD validation data (``search_ood``: which OOD set,
    default the benchmark's first; ``search_space``: override the class's space).
    """

    library = "pytorch-ood"

    def __init__(
        self,
        name: str,
        cls: str,
        params: dict[str, Any] | None = None,
        features: str | None = None,
        layers: list[str] | None = None,
        fit_on: str = "fit",
        search: bool = False,
        search_ood: str | None = None,
        search_space: dict[str, list] | None = None,
        batch_size: int = 256,
        seed: int = 0,
    ):
        """Look up the class, validate the settings, decide what the detector reads and needs;
        classes that need no model part are constructed once to check their hyperparameters."""
        self.context = AdapterContext(name)  # before the base sets model (a view of it)
        super().__init__(name)
        classes = cat.pood_classes()
        if cls not in classes:
            raise ConfigError(f"pytorch-ood has no detector {cls!r}; available: {sorted(classes)}")
        self.cls_name = cls
        self.klass = classes[cls]
        self.base = cat.base_of(self.klass)
        self._params = dict(params or {})
        self.layers = list(layers) if layers is not None else None
        if fit_on not in ("fit", "calib"):
            raise ConfigError(f"{name}: fit_on must be 'fit' or 'calib', got {fit_on!r}")
        self.fit_on = fit_on
        self.reads_calib = fit_on == "calib"  # see ood_bench.calibration
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.parts = dict(cat.PARTS.get(cls, {}))
        self._check_params()
        self.features_key = self._reads(features)
        self.search = bool(search)
        self.search_ood = search_ood
        self.search_space = dict(search_space) if search_space else None
        self.needs = self._needs()
        self.impl = None
        self.feed: Feed | None = None  # how it is fed, chosen when built
        self.best_params: dict[str, Any] | None = None
        self.forward_samples = 0  # images this detector pushed through the network
        self._val: tuple[Features, Features] | None = None
        ctx = self.context
        ctx.cls_name, ctx.klass, ctx.base = self.cls_name, self.klass, self.base
        ctx.features_key, ctx.layers = self.features_key, self.layers
        ctx.batch_size, ctx.needs = self.batch_size, self.needs
        self.bound = ctx.bound = BoundNet(ctx)
        self.device = torch.device("cpu")
        if set(self.parts.values()) == {"none"} and cls not in cat.REQUIREMENTS:
            self.impl = self._construct({})  # built again in fit; values checked now

    # the live state the bound network and the feeds read, held in their context
    @property
    def model(self) -> nn.Module | None:
        """The bound network (None until :meth:`bind`)."""
        return self.context.model

    @model.setter
    def model(self, value: nn.Module | None) -> None:
        self.context.model = value

    @property
    def device(self) -> torch.device:
        """Where the bound network and the library object run."""
        return self.context.device

    @device.setter
    def device(self, value: torch.device) -> None:
        self.context.device = value

    @property
    def impl(self) -> Any:
        """The constructed pytorch-ood object (None until built)."""
        return self.context.impl

    @impl.setter
    def impl(self, value: Any) -> None:
        self.context.impl = value

    @property
    def kind(self) -> str:
        """How the detector is fed (a :mod:`~.feeds` kind), empty until built."""
        return self.feed.kind if self.feed is not None else ""

    @property
    def _net(self) -> nn.Module | None:
        """The private copy of the bound model, once made."""
        return self.bound.copy

    def _inputs(self, feats: Features) -> torch.Tensor:
        """The cached representation the built detector reads."""
        assert self.feed is not None, "call fit() first"
        return self.feed.inputs(feats)

    # -- construction ---------------------------------------------------------------------------

    def _check_params(self) -> None:
        """Add the constructor's first argument (model / encoder) to the parts when missing;
        a ConfigError when ``params`` name a part or are not constructor arguments."""
        sig = inspect.signature(self.klass.__init__)
        names = [n for n in sig.parameters if n != "self"]
        if names and names[0] not in self.parts:
            self.parts = {names[0]: "none", **self.parts}
        clash = sorted(set(self._params) & set(self.parts))
        if clash:
            raise ConfigError(
                f"{self.name}: {clash} of pytorch-ood's {self.cls_name} come from the bound model, "
                "not from params"
            )
        try:
            sig.bind_partial(None, **self._params)
        except TypeError as e:
            raise ConfigError(
                f"bad hyperparameters for pytorch-ood {self.cls_name}: {e}; its arguments: {names}"
            ) from e
        check_types(self.klass, self._params, "detector.params", f"pytorch-ood's {self.cls_name}")

    def _reads(self, features: str | None) -> str:
        """What the detector reads: ``features``, else its base's default; a ConfigError when
        its base or constructor cannot read ``features``."""
        defaults = dict(cat.DEFAULT_READS)
        if "penultimate_encoder" in self.parts.values():
            defaults[self.base] = "penultimate"  # MahalanobisODIN: fitted on cached features
        key = features or defaults.get(self.base, "penultimate")
        if self.base == "LogitsDetector" and key != "logits":
            raise ConfigError(
                f"{self.name}: {self.cls_name} is a LogitsDetector: it reads logits, not {features}"
            )
        if "penultimate_encoder" in self.parts.values() and key != "penultimate":
            raise ConfigError(
                f"{self.name}: {self.cls_name} perturbs and scores penultimate features"
            )
        return key

    def _needs(self) -> frozenset[str]:
        """``features``; ``model`` when a constructor part comes from the model (or it reads
        feature maps); ``ood_validation`` with ``search`` (checked to have a space)."""
        needs_model = any(p in cat.MODEL_PARTS for p in self.parts.values())
        needs_model |= self.base == "FeatureMapsDetector"
        needs = {"features", "model"} if needs_model else {"features"}
        if self.search:
            self._check_search_space()
            needs.add("ood_validation")
        return frozenset(needs)

    def _check_search_space(self) -> None:
        """A ConfigError when there is nothing to search (empty space, none given)."""
        if not (self.search_space or self.klass.hyperparameter_space):
            classes = cat.pood_classes().items()
            tunable = sorted(n for n, k in classes if k.hyperparameter_space)
            raise ConfigError(
                f"{self.name}: pytorch-ood's {self.cls_name} has an empty hyperparameter_space, "
                f"so search=true has nothing to tune. Give detector.search_space={{...}} or "
                f"use a class with one: {tunable}"
            )

    def _construct(self, parts: dict[str, Any]) -> Any:
        """Instantiate the class with the model ``parts`` and the hyperparameters."""
        kwargs = {arg: parts.get(part) for arg, part in self.parts.items()}
        try:
            return self.klass(**kwargs, **cat.hyperparameters(self.cls_name, self._params))
        except (TypeError, ValueError, AssertionError) as e:
            raise ConfigError(f"bad hyperparameters for pytorch-ood {self.cls_name}: {e}") from e

    def _build(self, fit: Features) -> None:
        """Check the class applies, choose its feed and construct the library's detector with
        the parts of the model and of the feed it needs."""
        cat.check_requirements(self.name, self.cls_name, self._params, fit.logits.shape[1])
        cat.check_net(self.name, self.cls_name, self.bound.net, self.bound.backbone_name())
        self.feed = select_feed(self.context, fit)
        parts = self.bound.parts(set(self.parts.values()), fit)
        parts.update(self.feed.parts(fit))
        cat.complete_params(self.cls_name, self._params, fit.penultimate.shape[1])
        cat.check_inputs(self.name, self.cls_name, self._params, lambda: self._inputs(fit))
        self.impl = self._construct(parts)
        if self.model is not None:
            self.impl.to(self.device)  # moves only what the detector holds: private copies

    # -- fit / score ----------------------------------------------------------------------------

    @contextmanager
    def _seeded(self):
        """Run the body with torch's CPU generator seeded, then restore it."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            yield

    def _grad(self) -> bool:
        """Whether fitting needs autograd (gradient detectors, fits that optimise)."""
        return self.cls_name in cat.GRAD_FIT or self.base == "GradientDetector"

    def tune(self, val_id: Features, val_ood: Features) -> None:
        """Keep the validation sets: the grid search runs in :meth:`fit` (it refits each
        candidate on the fit split, which the runner gives to ``fit``)."""
        self._val = (val_id, val_ood)

    def fit(self, fit: Features, calib: Features | None = None) -> PytorchOODDetector:
        """Build the library's detector and fit it on ``fit`` (``calib`` when ``fit_on=calib``),
        or grid-search it when ``search`` is set."""
        if self.fit_on == "calib":
            if calib is None:
                raise ConfigError(f"{self.name}: fit_on=calib but no calib split was given")
            fit = calib
        with self._seeded():
            self._build(fit)
            if self.search:
                if self._val is None:
                    raise ConfigError(f"{self.name}: search=true needs tune(val_id, val_ood) first")
                self._grid_search(fit)
            elif getattr(self.impl, "requires_fit", False):
                assert self.feed is not None
                # WORKAROUND: predict_*/fit_* build autograd graphs unless told not to:
                # non-gradient methods run under no_grad (memory), gradient ones under
                # enable_grad.
                with torch.enable_grad() if self._grad() else torch.no_grad():
                    self.feed.fit(fit)
        self.forward_samples = self.bound.counter.n
        return self

    def _score(self, feats: Features) -> np.ndarray:
        """The library's outlier scores (higher = more OOD), from cached representations or
        from the images batch by batch."""
        if self.feed is None:
            raise ConfigError(f"{self.name}: call fit() before score()")
        with self._seeded():
            s = self.feed.score(feats)
        self.forward_samples = self.bound.counter.n
        if self.forward_samples:
            log.info(
                "%s: detector_forward_samples=%d (images through the network in fit and scoring "
                "so far, besides the cached extraction)",
                self.name,
                self.forward_samples,
            )
        return torch.as_tensor(s).detach().cpu().double().numpy()

    # -- hyperparameter search ------------------------------------------------------------------

    def _grid_search(self, fit: Features) -> None:
        """pytorch-ood's GridSearch (AUROC on ID calib ∪ one OOD set). Cached representations are
        served through loaders with an identity producer, so no candidate needs a forward pass."""
        from pytorch_ood.utils import GridSearch

        assert self.feed is not None and self._val is not None
        val_id, val_ood = self._val
        impl = self.impl
        fit_loader, val_loader, restore = self.feed.search_loaders(fit, val_id, val_ood)
        grid = GridSearch(
            impl,
            fit_loader if getattr(impl, "requires_fit", False) else None,
            val_loader,
            hyperparameter_space=self.search_space,
            device=str(self.device),
        )
        with torch.enable_grad() if self._grad() else torch.no_grad():
            self.best_params = grid.run()
        for slot, value in restore.items():
            setattr(impl, slot, value)
        log.warning(
            "%s: GridSearch on %s (%d ID + %d OOD validation samples) chose %s (AUROC %.4f) over "
            "%d candidates",
            self.name,
            val_ood.source.name if val_ood.source is not None else "OOD validation data",
            len(val_id),
            len(val_ood),
            self.best_params,
            grid.best_score_,
            len(grid.results_),
        )

    def params(self) -> dict[str, Any]:
        """Class, what it is fed, its hyperparameters and any searched values."""
        out = {"cls": self.cls_name, "fed": self.kind or self.features_key, **self._params}
        if self.best_params:
            out["searched"] = dict(self.best_params)
        return out

    def recorded_params(self) -> dict[str, float]:
        """ViM's principal-subspace dimension as run (``param_dim``: the paper's rule when
        ``d`` was null, the searched value after a search)."""
        if self.cls_name != "ViM":
            return {}
        d = (self.best_params or {}).get("d", self._params.get("d"))
        return {} if d is None else {"dim": float(d)}

"""Adapter for every pytorch-ood detector: one class, fed according to the detector's base.

- ``LogitsDetector``: cached logits (``fit_logits``/``predict_logits``), no forward pass.
- ``FeaturesDetector``: cached penultimate features or a cached tap (``fit_features``/
  ``predict_features``), plus a copy of the last ``nn.Linear`` when the method needs the head;
  no forward pass.
- ``FeatureMapsDetector``: with ``features=penultimate`` the cached penultimate features as
  N×D×1×1 maps and head = the last ``nn.Linear`` (where ASH, ReAct, SCALE and VRA act in their
  papers), no forward pass; with ``features=<module with 4-D output>`` that tap's maps from a
  hooked forward pass over the images and head = the rest of the network (two passes per image).
- ``StructuredDetector``: a list of taps — cached mean-pooled taps when the class fits on
  tensors (``fit_structured``, MultiMahalanobis), else (Gram fits from a loader only) one hooked
  forward pass giving the logits and every tap's maps.
- ``GradientDetector`` and plain ``Detector`` (MCD): the model and the images.

Library methods are called positionally (argument names differ between classes); non-gradient
paths run under ``torch.no_grad()`` (``predict_*`` would otherwise keep autograd graphs), gradient
paths under ``torch.enable_grad()``. The model a detector receives is a **private copy** of the
bound network, in eval mode, frozen, on the configured device: pytorch-ood's ``predict`` does not
call ``eval()``, ``Detector.to()`` moves every module a detector holds, and GradNorm /
GradUncertainty leave a dead functorch tensor in place of a parameter registered under two names —
so the caller's model is never moved, switched or poisoned. Module aliases are untied in the copy
(the second registration becomes a plain attribute, exactly equivalent), and the copy is checked
after each gradient batch (a corrupted copy is an error, never silent).

A detector that cannot apply to the backbone or benchmark raises :class:`NotApplicable` saying why
(MCM needs text embeddings, MCD needs dropout layers, …); nothing is skipped silently.
``search=true`` tunes the hyperparameters with pytorch-ood's ``GridSearch`` (its
``hyperparameter_space``, AUROC) on OOD validation data; the runner flags those results.
Scores come back as float64, higher = more OOD (pytorch-ood's convention already).
"""

from __future__ import annotations

import copy
import inspect
import logging
import re
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import ConcatDataset, DataLoader, Dataset, TensorDataset

from ood_bench.config import check_types
from ood_bench.detectors.base import Detector
from ood_bench.errors import ConfigError
from ood_bench.features import Features

log = logging.getLogger(__name__)

#: names in ``pytorch_ood.detector.__all__`` that are not detector classes, and what they are
NOT_DETECTORS = {"odin_preprocessing": "a function (ODIN's input perturbation), not a detector"}
#: option names kept from before every class had one (``pood_<lowercase class name>`` otherwise)
LEGACY_OPTIONS = {"MaxSoftmax": "pood_msp", "EnergyBased": "pood_energy"}

# What a constructor needs besides its hyperparameters, by argument name → part (see ``_part``).
# Classes not listed take ``None`` as their first argument (model / encoder) and hyperparameters.
_PARTS: dict[str, dict[str, str]] = {
    "DICE": {"encoder": "none", "w": "head_weight", "b": "head_bias"},
    "ViM": {"encoder": "none", "w": "head_weight", "b": "head_bias"},
    "fDBD": {"encoder": "none", "head": "head"},
    "NCI": {"encoder": "none", "head": "head"},
    "LTS": {"encoder": "none", "head": "head"},
    "SHE": {"encoder": "none", "head": "head"},
    "PNML": {"encoder": "none", "head": "head"},
    "NNGuide": {"encoder": "none", "head": "head"},
    "ASH": {"backbone": "maps", "head": "tail"},
    "ReAct": {"backbone": "maps", "head": "tail"},
    "SCALE": {"backbone": "maps", "head": "tail"},
    "VRA": {"backbone": "maps", "head": "tail"},
    "RankFeat": {"backbone": "maps", "head": "tail"},
    "Gram": {"head": "chain_head", "feature_layers": "chain_layers", "num_classes": "num_classes"},
    "MultiMahalanobis": {"model": "layer_placeholders"},
    "ODIN": {"model": "net"},
    "GradNorm": {"model": "net"},
    "GradUncertainty": {"model": "net"},
    "MahalanobisODIN": {"encoder": "penultimate_encoder"},
    "NACUE": {"model": "net", "layers": "tap_modules"},
    "MCD": {"model": "net"},
}
_MODEL_PARTS = {
    "head",
    "head_weight",
    "head_bias",
    "maps",
    "tail",
    "chain_head",
    "chain_layers",
    "net",
    "penultimate_encoder",
    "tap_modules",
}
# Gradient detectors that compute per-sample gradients with torch.func (vmap over one
# functional_call per micro-batch: a forward hook cannot count their images)
_FUNCTIONAL = {"GradNorm", "GradUncertainty"}
# fitting optimises something with autograd (not under no_grad)
_GRAD_FIT = {"TemperatureScaling"}
# gradients with respect to activations: the inputs must require grad (the copy is frozen)
_INPUT_GRAD = {"NACUE"}
# spatial methods for which 1×1 maps are meaningless
_SPATIAL_ONLY = {
    "RankFeat": "it removes the rank-1 component of each C×HW map; on 1×1 maps that is the "
    "whole map (all-zero features, one score for every input)",
}
# applicability requirements checked before fitting: class → (requirement, why)
REQUIREMENTS: dict[str, str] = {
    "MCM": "text embeddings of the class names from a vision-language model (CLIP): give "
    "detector.params.text_embeddings=/path/to/C×D.pt (a tensor saved with torch.save) together "
    "with a CLIP image encoder as backbone",
    "WeightedEBO": "per-class energy weights learnt while training the network with VOS "
    "(pytorch_ood.loss.VOSRegLoss); a post-hoc backbone has none: give "
    "detector.params.weights=[w_1,...,w_C] (all ones reduces it to pood_energy)",
    "MCD": "dropout layers in the network (Monte-Carlo dropout samples them); without dropout "
    "every sample is the same and every score is 0",
}

#: status of the classes that cannot run on a plain post-hoc classifier (README table)
STATUS: dict[str, str] = {
    "MCM": "needs text embeddings (a vision-language backbone)",
    "WeightedEBO": "needs VOS-trained class weights",
    "MCD": "not applicable to digits_cnn (no dropout)",
}


class NotApplicable(ConfigError):
    """The detector cannot apply to this backbone or benchmark; the message says why."""


def _pood_classes() -> dict[str, type]:
    """Every class ``pytorch_ood.detector`` exports, by name."""
    import pytorch_ood.detector as det

    return {n: getattr(det, n) for n in det.__all__ if isinstance(getattr(det, n), type)}


def option_name(cls_name: str) -> str:
    """The ``detector=`` option of a pytorch-ood class."""
    return LEGACY_OPTIONS.get(cls_name, f"pood_{cls_name.lower()}")


def base_of(klass: type) -> str:
    """The pytorch-ood API base that decides how a class is fed."""
    from pytorch_ood.api import (
        FeatureMapsDetector,
        FeaturesDetector,
        GradientDetector,
        LogitsDetector,
        StructuredDetector,
    )

    for base in (
        LogitsDetector,
        FeaturesDetector,
        FeatureMapsDetector,
        StructuredDetector,
        GradientDetector,
    ):
        if issubclass(klass, base):
            return base.__name__
    return "Detector"


# ----------------------------------------------------------------------------- model helpers


# WORKAROUND: GradNorm and GradUncertainty (torch.func.functional_call) leave a dead functorch
# tensor in place of a parameter registered under two module names; untying the aliases in the
# detector's private copy avoids it.
def untie_modules(net: nn.Module) -> list[str]:
    """Give every submodule one name: a second registration of the same module becomes a plain
    attribute (``forward`` still finds it), so ``named_parameters(remove_duplicate=False)``
    lists each parameter once. Returns the aliases removed."""
    removed: list[str] = []
    seen: dict[int, str] = {}

    def walk(module: nn.Module, prefix: str) -> None:
        """Visit ``module``'s children, turning a child already seen into a plain attribute."""
        for name, child in list(module._modules.items()):
            if child is None:
                continue
            full = prefix + name
            if id(child) in seen:
                del module._modules[name]
                object.__setattr__(module, name, child)
                removed.append(f"{full} (= {seen[id(child)]})")
                continue
            seen[id(child)] = full
            walk(child, full + ".")

    walk(net, "")
    return removed


def poisoned(net: nn.Module) -> list[str]:
    """Parameters that are no longer ``nn.Parameter`` (left behind by a failed functional_call)."""
    return [
        f"{mn}.{pn}" if mn else pn
        for mn, m in net.named_modules()
        for pn, p in m._parameters.items()
        if p is not None and not isinstance(p, nn.Parameter)
    ]


def last_linear(model: nn.Module) -> nn.Linear | None:
    """The model's last ``nn.Linear`` (in module order), or None without one."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1] if linears else None


class _Counter:
    """Forward pre-hook counting the images pushed through a network."""

    def __init__(self) -> None:
        self.n = 0
        self.paused = False

    def __call__(self, _module: nn.Module, args: tuple) -> None:
        """Add the batch size of the input, unless paused."""
        if not self.paused and args and isinstance(args[0], torch.Tensor):
            self.n += int(args[0].shape[0])


class _Stop(Exception):
    """Raised by a hook to end a forward pass once the tap is reached."""


class _TapSplit:
    """The network split at a tap: ``maps(x)`` = the tap's output, ``tail(z)`` = the logits when
    the tap outputs ``z`` instead (the batch of the last ``maps`` call is run again with the tap's
    output replaced, so any architecture works without tracing it)."""

    def __init__(self, net: nn.Module, tap: str):
        """Split ``net`` at its module named ``tap``."""
        self.net = net
        self.module = dict(net.named_modules())[tap]
        self._x: torch.Tensor | None = None

    def maps(self, x: torch.Tensor) -> torch.Tensor:
        """The tap's output for ``x`` (the forward pass stops there); remembers ``x`` for tail."""
        self._x = x
        out: dict[str, torch.Tensor] = {}

        def grab(_m: nn.Module, _i: tuple, o: torch.Tensor) -> None:
            """Keep the tap's output and stop the forward pass."""
            out["z"] = o
            raise _Stop

        h = self.module.register_forward_hook(grab)
        try:
            self.net(x)
        except _Stop:
            pass
        finally:
            h.remove()
        return out["z"]

    def tail(self, z: torch.Tensor) -> torch.Tensor:
        """Logits of the last :meth:`maps` batch with the tap's output replaced by ``z``."""
        if self._x is None or len(self._x) != len(z):
            raise RuntimeError("tail() must follow maps() on the same batch")
        h = self.module.register_forward_hook(lambda _m, _i, _o: z)
        try:
            return self.net(self._x)
        finally:
            h.remove()


class _TapEncoder:
    """``x`` → flattened output of one module (keeps the autograd graph; stops at the tap)."""

    def __init__(self, net: nn.Module, tap: str):
        self.split = _TapSplit(net, tap)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The tap's output for ``x``, flattened to N×D."""
        return self.split.maps(x).flatten(1)


# WORKAROUND: Gram fits only from a loader and chains feature_layers itself; the taps of one
# hooked pass are served in that order instead of running the network once per layer.
class _TapChain:
    """Gram applies ``feature_layers`` one after the other and then ``head``: serve it the taps
    of one hooked forward pass in that order (the first layer runs the network)."""

    def __init__(self, net: nn.Module, taps: list[str]):
        """Serve the outputs of the modules named ``taps`` of ``net``, in order."""
        self.net = net
        modules = dict(net.named_modules())
        self.modules = [modules[t] for t in taps]
        self._outs: list[torch.Tensor] = []
        self._logits: torch.Tensor | None = None

    def run(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """One forward pass: the logits and every tap's output, kept for the chain."""
        outs: dict[int, torch.Tensor] = {}
        hooks = [
            m.register_forward_hook(lambda _m, _i, o, i=i: outs.__setitem__(i, o))
            for i, m in enumerate(self.modules)
        ]
        try:
            logits = self.net(x)
        finally:
            for h in hooks:
                h.remove()
        self._outs = [outs[i] for i in range(len(self.modules))]
        self._logits = logits
        return logits, self._outs

    def layers(self) -> list[Callable[[torch.Tensor], torch.Tensor]]:
        """Gram's ``feature_layers``: the first runs the network, the others return stored taps."""

        def first(x: torch.Tensor) -> torch.Tensor:
            """Run the network on ``x`` and return the first tap's output."""
            return self.run(x)[1][0]

        return [first] + [lambda _z, i=i: self._outs[i] for i in range(1, len(self.modules))]

    def head(self, _z: torch.Tensor) -> torch.Tensor:
        """The logits of the last :meth:`run` (the input is ignored)."""
        assert self._logits is not None
        return self._logits


class _HeadOnMaps(nn.Module):
    """The last linear layer applied to N×D×1×1 maps (the penultimate features as maps)."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.linear = linear

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Logits of N×D×1×1 maps: the linear layer on the flattened maps."""
        return self.linear(z.flatten(1))


def _as_maps(z: torch.Tensor) -> torch.Tensor:
    """N×D features as N×D×1×1 feature maps."""
    return z.reshape(z.shape[0], -1, 1, 1)


class _Relabel(Dataset):
    """Images of an OOD set with label -1 (pytorch-ood's mark for OOD)."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``i``-th image with label -1."""
        return self.dataset[i][0], torch.tensor(-1)


def _grad_collate(batch: list) -> tuple[torch.Tensor, torch.Tensor]:
    """Default collation, the image batch requiring grad (input-gradient methods)."""
    x, y = torch.utils.data.default_collate(batch)
    return x.requires_grad_(True), y


def _float32(x: torch.Tensor) -> torch.Tensor:
    """A detached float32 copy of ``x``."""
    return x.detach().float()  # WORKAROUND: float64 crashes Mahalanobis (float32 statistics)


# ----------------------------------------------------------------------------- the adapter


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
        super().__init__(name)
        classes = _pood_classes()
        if cls not in classes:
            raise ConfigError(f"pytorch-ood has no detector {cls!r}; available: {sorted(classes)}")
        self.cls_name = cls
        self.klass = classes[cls]
        self.base = base_of(self.klass)
        self._params = dict(params or {})
        self.layers = list(layers) if layers is not None else None
        if fit_on not in ("fit", "calib"):
            raise ConfigError(f"{name}: fit_on must be 'fit' or 'calib', got {fit_on!r}")
        self.fit_on = fit_on
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.parts = dict(_PARTS.get(cls, {}))
        self._check_params()
        defaults = {
            "LogitsDetector": "logits",
            "StructuredDetector": "layers",
            "GradientDetector": "images",
            "Detector": "images",
        }
        if "penultimate_encoder" in self.parts.values():
            defaults[self.base] = "penultimate"  # MahalanobisODIN: fitted on cached features
        self.features_key = features or defaults.get(self.base, "penultimate")
        if self.base == "LogitsDetector" and self.features_key != "logits":
            raise ConfigError(f"{name}: {cls} is a LogitsDetector: it reads logits, not {features}")
        if cls == "MahalanobisODIN" and self.features_key != "penultimate":
            raise ConfigError(f"{name}: MahalanobisODIN perturbs and scores penultimate features")
        needs_model = any(p in _MODEL_PARTS for p in self.parts.values())
        needs_model |= self.base == "FeatureMapsDetector"
        self.needs = frozenset({"features", "model"} if needs_model else {"features"})
        self.search = bool(search)
        self.search_ood = search_ood
        self.search_space = dict(search_space) if search_space else None
        if self.search:
            space = self.search_space or self.klass.hyperparameter_space
            if not space:
                tunable = sorted(n for n, k in _pood_classes().items() if k.hyperparameter_space)
                raise ConfigError(
                    f"{name}: pytorch-ood's {cls} has an empty hyperparameter_space, so "
                    f"search=true has nothing to tune. Give detector.search_space={{...}} or "
                    f"use a class with one: {tunable}"
                )
            self.needs = self.needs | {"ood_validation"}
        self.impl: Any = None
        self.best_params: dict[str, Any] | None = None
        self.forward_samples = 0  # images this detector pushed through the network
        self._val: tuple[Features, Features] | None = None
        self._net: nn.Module | None = None
        self._counter = _Counter()
        self._split: _TapSplit | None = None
        self._chain: _TapChain | None = None
        self.kind = ""  # how it is fed, set when built
        self.device = torch.device("cpu")
        if set(self.parts.values()) == {"none"} and cls not in REQUIREMENTS:
            self.impl = self._construct({})  # built again in fit; values checked now

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

    def _hyperparameters(self) -> dict[str, Any]:
        """YAML values → constructor values (tensors, callables)."""
        p = dict(self._params)
        if isinstance(p.get("param_filter"), str):  # GradNorm / GradUncertainty: a regex
            pattern = re.compile(p["param_filter"])
            p["param_filter"] = lambda n: bool(pattern.fullmatch(n))
        if self.cls_name == "WeightedEBO" and p.get("weights") is not None:
            p["weights"] = torch.as_tensor(p["weights"], dtype=torch.float32)
        if self.cls_name == "MCM" and isinstance(p.get("text_embeddings"), (str, Path)):
            p["text_embeddings"] = torch.load(
                Path(p["text_embeddings"]).expanduser(), map_location="cpu", weights_only=True
            )
        elif self.cls_name == "MCM" and p.get("text_embeddings") is not None:
            p["text_embeddings"] = torch.as_tensor(p["text_embeddings"], dtype=torch.float32)
        return p

    def _construct(self, parts: dict[str, Any]) -> Any:
        """Instantiate the class with the model ``parts`` and the hyperparameters."""
        kwargs = {arg: parts.get(part) for arg, part in self.parts.items()}
        try:
            return self.klass(**kwargs, **self._hyperparameters())
        except (TypeError, ValueError, AssertionError) as e:
            raise ConfigError(f"bad hyperparameters for pytorch-ood {self.cls_name}: {e}") from e

    def _private_net(self) -> nn.Module:
        """The caller's network, copied once: eval mode, frozen, untied, on ``self.device``."""
        if self._net is None:
            if self.model is None:
                raise ConfigError(
                    f"{self.name}: pytorch-ood's {self.cls_name} needs the model "
                    f"(needs={sorted(self.needs)}); call detector.bind(model, device) first"
                )
            bad = poisoned(self.model)
            if bad:
                raise RuntimeError(
                    f"{self.name}: the bound model is corrupted: {bad} are no longer "
                    "nn.Parameter (a gradient detector ran on it before); reload it"
                )
            # WORKAROUND: predict() does not call eval(), Detector.to() moves every module it
            # holds, and gradient detectors can corrupt parameters: each detector gets a
            # private, frozen copy in eval mode, so the caller's model is never touched.
            net = copy.deepcopy(self.model)
            aliases = untie_modules(net)
            if aliases:
                log.info(
                    "%s: untied module aliases %s in its copy of the model", self.name, aliases
                )
            net.eval().to(self.device)
            for p in net.parameters():
                p.requires_grad_(False)
            net.register_forward_pre_hook(self._counter)
            self._net = net
        return self._net

    def _head(self, fit: Features) -> nn.Linear:
        """A frozen copy of the last ``nn.Linear``, checked to map penultimate → logits."""
        if self.model is None:
            self._private_net()  # raises the "needs the model" error
        lin = last_linear(self.model)  # type: ignore[arg-type]
        if lin is None or lin.in_features != fit.penultimate.shape[1]:
            raise NotApplicable(
                f"{self.name}: pytorch-ood's {self.cls_name} needs the classifier's last linear "
                f"layer on the penultimate features ({fit.penultimate.shape[1]}-d); "
                f"{type(self.model).__name__} has "
                + (f"nn.Linear({lin.in_features}, …)" if lin else "no nn.Linear")
            )
        head = copy.deepcopy(lin).eval().to(self.device)
        for p in head.parameters():
            p.requires_grad_(False)
        with torch.no_grad():
            n = min(len(fit), 64)
            pen, logits = _float32(fit.penultimate[:n]).to(self.device), fit.logits[:n].float()
            got = head(pen).cpu()
        if not torch.allclose(got, logits, rtol=1e-3, atol=1e-3):
            raise NotApplicable(
                f"{self.name}: the last nn.Linear of {type(self.model).__name__} does not map the "
                f"penultimate features to the logits (max error "
                f"{(got - logits).abs().max():.3g}), so pytorch-ood's {self.cls_name} cannot use "
                "it as the head; set the backbone's penultimate layer to the head's input"
            )
        return head

    def _penultimate_name(self, example: torch.Tensor) -> str:
        """Module name of the penultimate layer: declared by the model, else discovered."""
        name = getattr(self.model, "penultimate", None)
        if name:
            return str(name)
        from ood_bench.backbones import discover_taps

        return discover_taps(self._private_net(), example.to(self.device))[1]

    def _tap_names(self, example: torch.Tensor) -> list[str]:
        """Module names of the taps: ``layers``, else the model's declared taps, else discovered."""
        if self.layers is not None:
            modules = dict(self._private_net().named_modules())
            unknown = [t for t in self.layers if t not in modules]
            if unknown:
                raise ConfigError(
                    f"{self.name}: layers {unknown} are not modules of "
                    f"{type(self.model).__name__}; modules: {[n for n in modules if n][:30]}"
                )
            return list(self.layers)
        taps = getattr(self.model, "taps", None)
        if taps:
            return list(taps)
        from ood_bench.backbones import discover_taps

        return discover_taps(self._private_net(), example.to(self.device))[0]

    @staticmethod
    def _example(feats: Features) -> torch.Tensor:
        """The first image of the features' source set, as a batch of 1."""
        if feats.source is None:
            raise ConfigError("these features carry no images (Features.source is None)")
        return feats.source.dataset[0][0].unsqueeze(0)

    def _probe(self, tap: str, example: torch.Tensor) -> torch.Tensor:
        """The output of module ``tap`` for ``example`` (not counted as detector forward work)."""
        with torch.no_grad():
            self._counter.paused = True
            try:
                return _TapSplit(self._private_net(), tap).maps(example.to(self.device))
            finally:
                self._counter.paused = False

    def _check_applicable(self, fit: Features) -> None:
        """Raise NotApplicable when MCM, WeightedEBO or MCD lack what they need (text
        embeddings, class weights, dropout); a ConfigError for a wrong number of weights."""
        p = self._params
        if self.cls_name == "MCM" and p.get("text_embeddings") is None:
            raise NotApplicable(
                f"{self.name}: pytorch-ood's MCM needs {REQUIREMENTS['MCM']}; "
                "params.text_embeddings is null (a classifier like digits_cnn has no text encoder)"
            )
        if self.cls_name == "WeightedEBO":
            if p.get("weights") is None:
                raise NotApplicable(
                    f"{self.name}: pytorch-ood's WeightedEBO needs {REQUIREMENTS['WeightedEBO']}"
                )
            n = torch.as_tensor(p["weights"]).numel()
            if n != fit.logits.shape[1]:
                raise ConfigError(f"{self.name}: {n} weights for {fit.logits.shape[1]} classes")
        if self.cls_name == "MCD":
            net = self._private_net()
            if not any("Dropout" in type(m).__name__ for m in net.modules()):
                raise NotApplicable(
                    f"{self.name}: pytorch-ood's MCD needs {REQUIREMENTS['MCD']}; "
                    f"{self._backbone_name()} has no dropout layer"
                )

    def _backbone_name(self) -> str:
        """The bound model's class name, for messages."""
        return type(self.model).__name__ if self.model is not None else "the backbone"

    def _build(self, fit: Features) -> None:
        """Construct the library's detector with what its base and constructor need."""
        self._check_applicable(fit)
        parts: dict[str, Any] = {}
        wanted = set(self.parts.values())
        if self.base == "LogitsDetector":
            self.kind = "logits"
        elif self.base == "FeaturesDetector":
            self.kind = "features"
        elif self.base == "FeatureMapsDetector":
            self._build_maps(fit, parts)
        elif self.base == "StructuredDetector":
            self.kind = "layers_cached" if self._own("fit_structured") else "layers_model"
        else:
            self.kind = "images"
        if wanted & {"head", "head_weight", "head_bias"}:
            head = self._head(fit)
            parts.update(head=head, head_weight=head.weight, head_bias=head.bias)
        if "net" in wanted:
            parts["net"] = self._private_net()
        if "penultimate_encoder" in wanted:
            tap = self._penultimate_name(self._example(fit))
            parts["penultimate_encoder"] = _TapEncoder(self._private_net(), tap)
        if "tap_modules" in wanted:
            modules = dict(self._private_net().named_modules())
            taps = self._tap_names(self._example(fit))
            if self.layers is None:
                taps = taps[-2:]  # as the library's example: the last two stages (layer3, layer4)
            parts["tap_modules"] = [modules[t] for t in taps]
        if self.kind == "layers_model":
            self._chain = _TapChain(self._private_net(), self._tap_names(self._example(fit)))
            parts.update(
                chain_head=self._chain.head,
                chain_layers=self._chain.layers(),
                num_classes=fit.logits.shape[1],
            )
        if self.kind == "layers_cached":
            parts["layer_placeholders"] = [nn.Identity() for _ in self._cached_layers(fit)]
        if self.cls_name == "ViM" and self._params.get("d") is None:
            dim = fit.penultimate.shape[1]  # the ViM paper's rule
            self._params["d"] = 1000 if dim >= 1500 else 512 if dim == 768 else dim // 2
        if self.cls_name == "MCM":
            t = self._hyperparameters()["text_embeddings"]
            dim = self._inputs(fit).shape[1]
            if t.ndim != 2 or t.shape[1] != dim:
                raise NotApplicable(
                    f"{self.name}: text embeddings of shape {tuple(t.shape)} do not match the "
                    f"{dim}-d image features"
                )
        self.impl = self._construct(parts)
        if self.model is not None:
            self.impl.to(self.device)  # moves only what the detector holds: private copies

    def _build_maps(self, fit: Features, parts: dict[str, Any]) -> None:
        """Feed a feature-maps detector: cached penultimate features as 1×1 maps with the head,
        or a module's 4-D output with the rest of the network as its tail."""
        key = self.features_key
        penultimate = key == "penultimate"
        if not penultimate and self.model is not None:
            penultimate = key == self._penultimate_name(self._example(fit))
        if penultimate:
            if self.cls_name in _SPATIAL_ONLY:
                raise NotApplicable(
                    f"{self.name}: pytorch-ood's {self.cls_name} needs spatial feature maps "
                    f"(N×C×H×W with H·W > 1): {_SPATIAL_ONLY[self.cls_name]}. Give a "
                    "convolutional tap, e.g. detector.features=block3"
                )
            self.kind = "maps_cached"
            parts.update(maps=_as_maps, tail=_HeadOnMaps(self._head(fit)))
            return
        modules = dict(self._private_net().named_modules())
        if key not in modules:
            raise ConfigError(
                f"{self.name}: features={key!r} is neither 'penultimate' nor a module of "
                f"{type(self.model).__name__}; modules: {[n for n in modules if n][:30]}"
            )
        shape = tuple(self._probe(key, self._example(fit)).shape)
        if len(shape) != 4:
            raise NotApplicable(
                f"{self.name}: pytorch-ood's {self.cls_name} needs feature maps N×C×H×W, but tap "
                f"{key!r} outputs {shape}; give a convolutional tap or 'penultimate'"
            )
        if self.cls_name in _SPATIAL_ONLY and shape[2] * shape[3] == 1:
            raise NotApplicable(
                f"{self.name}: tap {key!r} has 1×1 maps; {self.cls_name}: "
                f"{_SPATIAL_ONLY[self.cls_name]}"
            )
        self.kind = "maps_model"
        self._split = _TapSplit(self._private_net(), key)
        parts.update(maps=self._split.maps, tail=self._split.tail)

    def _own(self, method: str) -> bool:
        """Whether the class implements ``method`` itself (not the base's stub)."""
        from pytorch_ood import api

        impl = getattr(self.klass, method, None)
        stubs = [getattr(b, method, None) for b in vars(api).values() if isinstance(b, type)]
        return impl is not None and impl not in stubs

    # -- representations ------------------------------------------------------------------------

    def _cached_layers(self, feats: Features) -> list[str]:
        """Cached feature keys of a structured detector: ``layers``, else every tap but ``.max``."""
        if self.layers is not None:
            keys = self.layers
        else:  # every tap, mean-pooled as the library's own fit does (4-D → mean over space)
            keys = [k for k in feats.taps if not k.endswith(".max")]
        have = ["penultimate", *feats.taps]
        unknown = [k for k in keys if k not in have]
        if unknown:
            raise ConfigError(f"{self.name}: no cached tap(s) {unknown}; available: {have}")
        return keys

    def _tensor(self, feats: Features, key: str) -> torch.Tensor:
        """Cached logits, penultimate features or tap ``key`` as float32."""
        if key == "logits":
            return _float32(feats.logits)
        if key == "penultimate":
            return _float32(feats.penultimate)
        if key not in feats.taps:
            raise ConfigError(
                f"{self.name}: no tap {key!r}; available: {['penultimate', *sorted(feats.taps)]}"
            )
        return _float32(feats.taps[key])

    def _inputs(self, feats: Features) -> torch.Tensor:
        """The cached representation this detector reads (logits, features or 1×1 maps)."""
        if self.base == "FeatureMapsDetector":
            return _as_maps(self._tensor(feats, "penultimate"))
        return self._tensor(feats, self.features_key)

    def _loader(self, feats: Features, grad: bool = False, shuffle: bool = False) -> DataLoader:
        """An ordered (unless ``shuffle``) loader of the features' source images; ``grad``: the
        image batches require grad."""
        if feats.source is None:
            raise ConfigError(
                f"{self.name}: pytorch-ood's {self.cls_name} reads images, but these features "
                "carry none (Features.source is None)"
            )
        return DataLoader(
            feats.source.dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            collate_fn=_grad_collate if grad else None,
        )

    # -- fit / score ----------------------------------------------------------------------------

    @contextmanager
    def _seeded(self):
        """Run the body with torch's CPU generator seeded, then restore it."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            yield

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
            else:
                self._fit(fit)
        self.forward_samples = self._counter.n
        return self

    def _fit(self, fit: Features) -> None:
        """Call the library's fit method that matches how the detector is fed (if it needs one)."""
        impl, y = self.impl, fit.labels.long()
        if not getattr(impl, "requires_fit", False):
            return
        grad = self.cls_name in _GRAD_FIT or self.base == "GradientDetector"
        # WORKAROUND: predict_*/fit_* build autograd graphs unless told not to: non-gradient
        # methods run under no_grad (memory), gradient ones under enable_grad.
        with torch.enable_grad() if grad else torch.no_grad():
            if self.kind == "logits":
                impl.fit_logits(self._inputs(fit), y)
            elif self.kind == "features":
                impl.fit_features(self._inputs(fit), y)
            elif self.kind == "maps_cached":
                impl.fit_feature_maps(self._inputs(fit), y)
            elif self.kind == "maps_model":
                maps = [self._split.maps(x.to(self.device)) for x, _ in self._loader(fit)]
                impl.fit_feature_maps(torch.cat(maps), y.to(self.device))
            elif self.kind == "layers_cached":
                zs = [self._tensor(fit, k) for k in self._cached_layers(fit)]
                impl.fit_structured(zs, y)
            elif self._own("fit_features"):  # MahalanobisODIN: its statistics on cached features
                impl.fit_features(self._inputs(fit), y)
            else:  # Gram, NACUE: only a loader of images
                impl.fit(self._loader(fit, grad=self.cls_name in _INPUT_GRAD))

    def _score(self, feats: Features) -> np.ndarray:
        """The library's outlier scores (higher = more OOD), from cached representations or
        from the images batch by batch."""
        if not self.kind:
            raise ConfigError(f"{self.name}: call fit() before score()")
        with self._seeded():
            if self.kind in ("logits", "features", "maps_cached", "layers_cached"):
                with torch.no_grad():
                    s = self._predict_cached(feats)
            else:
                s = torch.cat([self._predict_batch(x) for x, _ in self._loader(feats)])
        self.forward_samples = self._counter.n
        if self.forward_samples:
            log.info(
                "%s: detector_forward_samples=%d (images through the network in fit and scoring "
                "so far, besides the cached extraction)",
                self.name,
                self.forward_samples,
            )
        return torch.as_tensor(s).detach().cpu().double().numpy()

    def _predict_cached(self, feats: Features) -> torch.Tensor:
        """Scores from the cached logits, features, maps or layers."""
        impl = self.impl
        if self.kind == "logits":
            return impl.predict_logits(self._inputs(feats))
        if self.kind == "features":
            return impl.predict_features(self._inputs(feats))
        if self.kind == "maps_cached":
            return impl.predict_feature_maps(self._inputs(feats))
        return impl.predict_structured([self._tensor(feats, k) for k in self._cached_layers(feats)])

    def _predict_batch(self, x: torch.Tensor) -> torch.Tensor:
        """Scores of one image batch, with gradients only for gradient detectors."""
        impl, x = self.impl, x.to(self.device)
        if self.kind == "maps_model":
            with torch.no_grad():
                return impl.predict_feature_maps(self._split.maps(x)).detach().cpu()
        if self.kind == "layers_model":
            with torch.no_grad():
                logits, maps = self._chain.run(x)
                return impl.predict_structured(logits, maps).detach().cpu()
        if self.base != "GradientDetector":  # MCD: sampling, no gradients
            with torch.no_grad():
                return impl.predict(x).detach().cpu()
        if self.cls_name in _INPUT_GRAD:
            x = x.detach().requires_grad_(True)
        with torch.inference_mode(False), torch.enable_grad():
            if self.cls_name in _FUNCTIONAL:
                return self._predict_functional(x)
            return impl.predict(x).detach().cpu()

    def _predict_functional(self, x: torch.Tensor) -> torch.Tensor:
        """GradNorm / GradUncertainty: per-sample gradients with torch.func (counted here)."""
        impl = self.impl
        self._counter.paused = True
        try:
            s = impl.predict(x).detach().cpu()
        finally:
            self._counter.paused = False
        self._counter.n += len(x)
        bad = poisoned(impl.model)
        if bad:
            raise RuntimeError(
                f"{self.name}: {self.cls_name} left {bad} as non-Parameter tensors in its copy of "
                "the model (functional_call on a module registered under two names that "
                "untie_modules missed); scores would be unreliable"
            )
        return s

    # -- hyperparameter search ------------------------------------------------------------------

    def _grid_search(self, fit: Features) -> None:
        """pytorch-ood's GridSearch (AUROC on ID calib ∪ one OOD set). Cached representations are
        served through loaders with an identity producer, so no candidate needs a forward pass."""
        from pytorch_ood.utils import GridSearch

        val_id, val_ood = self._val  # type: ignore[misc]
        impl = self.impl
        restore: dict[str, Any] = {}
        if self.kind in ("logits", "features", "maps_cached"):
            slot = {"logits": "model", "features": "encoder", "maps_cached": "backbone"}[self.kind]
            restore[slot] = getattr(impl, slot)
            if self.kind != "maps_cached":
                setattr(impl, slot, nn.Identity())
            x_fit, x_id, x_ood = (self._inputs(f) for f in (fit, val_id, val_ood))
            fit_set = TensorDataset(x_fit, fit.labels.long())
            val_set = TensorDataset(
                torch.cat([x_id, x_ood]),
                torch.cat([val_id.labels.long(), -torch.ones(len(val_ood), dtype=torch.long)]),
            )
            fit_loader = DataLoader(fit_set, batch_size=max(self.batch_size, 1024))
            val_loader = DataLoader(val_set, batch_size=max(self.batch_size, 1024))
        elif self.kind in ("maps_model", "images"):
            fit_loader = self._loader(fit, grad=self.cls_name in _INPUT_GRAD)
            val_set = ConcatDataset([val_id.source.dataset, _Relabel(val_ood.source.dataset)])
            val_loader = DataLoader(val_set, batch_size=self.batch_size)
        else:
            raise ConfigError(f"{self.name}: search is not wired for {self.cls_name} ({self.kind})")
        grid = GridSearch(
            impl,
            fit_loader if getattr(impl, "requires_fit", False) else None,
            val_loader,
            hyperparameter_space=self.search_space,
            device=str(self.device),
        )
        grad = self.base == "GradientDetector" or self.cls_name in _GRAD_FIT
        with torch.enable_grad() if grad else torch.no_grad():
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

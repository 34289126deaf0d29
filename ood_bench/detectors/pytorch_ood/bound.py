"""The bound network as one pytorch-ood detector sees it: a private frozen copy, and the parts
its constructor takes cut from that copy (head, taps, encoders)."""

from __future__ import annotations

import copy
import logging
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ood_bench.detectors.nets import (
    ForwardCounter,
    TapEncoder,
    TapSplit,
    frozen_copy,
    head_error,
    last_linear,
    poisoned,
    untie_modules,
)
from ood_bench.detectors.pytorch_ood.catalogue import NotApplicable
from ood_bench.errors import ConfigError
from ood_bench.features import Features

if TYPE_CHECKING:
    from ood_bench.detectors.pytorch_ood.context import AdapterContext

log = logging.getLogger(__name__)


def float32(x: torch.Tensor) -> torch.Tensor:
    """A detached float32 copy of ``x``."""
    return x.detach().float()  # WORKAROUND: float64 crashes Mahalanobis (float32 statistics)


def example(feats: Features) -> torch.Tensor:
    """The first image of the features' source set, as a batch of 1."""
    if feats.source is None:
        raise ConfigError("these features carry no images (Features.source is None)")
    return feats.source.dataset[0][0].unsqueeze(0)


class BoundNet:
    """The detector's view of its bound model: ``net()`` is the private copy (made once, its
    forward passes counted by ``counter``); the other methods cut parts from it."""

    def __init__(self, det: AdapterContext):
        """Serve ``det`` (its name, class, ``model``, ``device`` and ``layers`` are read live:
        the model is bound after construction)."""
        self.det = det
        self.counter = ForwardCounter()
        self.copy: nn.Module | None = None

    def _what(self) -> str:
        """``name: pytorch-ood's Class``, for messages."""
        return f"{self.det.name}: pytorch-ood's {self.det.cls_name}"

    def backbone_name(self) -> str:
        """The bound model's class name, for messages."""
        model = self.det.model
        return type(model).__name__ if model is not None else "the backbone"

    def net(self) -> nn.Module:
        """The caller's network, copied once: eval mode, frozen, untied, on the device."""
        if self.copy is None:
            det = self.det
            if det.model is None:
                raise ConfigError(
                    f"{self._what()} needs the model (needs={sorted(det.needs)}); call "
                    "detector.bind(model, device) first"
                )
            bad = poisoned(det.model)
            if bad:
                raise RuntimeError(
                    f"{det.name}: the bound model is corrupted: {bad} are no longer "
                    "nn.Parameter (a gradient detector ran on it before); reload it"
                )
            # WORKAROUND: predict() does not call eval(), Detector.to() moves every module it
            # holds, and gradient detectors can corrupt parameters: each detector gets a
            # private, frozen copy in eval mode, so the caller's model is never touched.
            net = copy.deepcopy(det.model)
            # WORKAROUND: GradNorm and GradUncertainty (torch.func.functional_call) leave a dead
            # functorch tensor in place of a parameter registered under two module names;
            # untying the aliases in the detector's private copy avoids it.
            aliases = untie_modules(net)
            if aliases:
                log.info("%s: untied module aliases %s in its copy of the model", det.name, aliases)
            net.eval().to(det.device)
            for p in net.parameters():
                p.requires_grad_(False)
            net.register_forward_pre_hook(self.counter)
            self.copy = net
        return self.copy

    def head(self, fit: Features) -> nn.Linear:
        """A frozen copy of the last ``nn.Linear``, checked to map penultimate → logits."""
        model = self.det.model
        if model is None:
            self.net()  # raises the "needs the model" error
        found = last_linear(model)  # type: ignore[arg-type]
        lin = found[1] if found else None
        dim = fit.penultimate.shape[1]
        if lin is None or lin.in_features != dim:
            raise NotApplicable(
                f"{self._what()} needs the classifier's last linear layer on the penultimate "
                f"features ({dim}-d); {type(model).__name__} has "
                + (f"nn.Linear({lin.in_features}, …)" if lin else "no nn.Linear")
            )
        head = frozen_copy(lin, self.det.device)
        with torch.no_grad():
            n = min(len(fit), 64)
            pen, logits = float32(fit.penultimate[:n]).to(self.det.device), fit.logits[:n].float()
            err = head_error(lambda z: head(z).cpu(), pen, logits, tol=1e-3)
        if err is not None:
            raise NotApplicable(
                f"{self.det.name}: the last nn.Linear of {type(model).__name__} does not map the "
                f"penultimate features to the logits (max error "
                f"{err:.3g}), so pytorch-ood's {self.det.cls_name} cannot "
                "use it as the head; set the backbone's penultimate layer to the head's input"
            )
        return head  # type: ignore[return-value]

    def penultimate_name(self, x: torch.Tensor) -> str:
        """Module name of the penultimate layer: declared by the model, else discovered on
        the example batch ``x``."""
        name = getattr(self.det.model, "penultimate", None)
        if name:
            return str(name)
        from ood_bench.backbones import discover_taps

        return discover_taps(self.net(), x.to(self.det.device))[1]

    def modules(self) -> dict[str, nn.Module]:
        """The private copy's modules by name."""
        return dict(self.net().named_modules())

    def unknown_module(self, what: str, names: list[str]) -> ConfigError:
        """The error for ``names`` that are not modules of the model."""
        modules = self.modules()
        return ConfigError(
            f"{self.det.name}: {what} {names} are not modules of {type(self.det.model).__name__}; "
            f"modules: {[n for n in modules if n][:30]}"
        )

    def tap_names(self, x: torch.Tensor) -> list[str]:
        """Module names of the taps: ``layers``, else the model's declared taps, else discovered
        on the example batch ``x``."""
        layers = self.det.layers
        if layers is not None:
            modules = self.modules()
            unknown = [t for t in layers if t not in modules]
            if unknown:
                raise self.unknown_module("layers", unknown)
            return list(layers)
        taps = getattr(self.det.model, "taps", None)
        if taps:
            return list(taps)
        from ood_bench.backbones import discover_taps

        return discover_taps(self.net(), x.to(self.det.device))[0]

    def probe(self, tap: str, x: torch.Tensor) -> torch.Tensor:
        """The output of module ``tap`` for ``x`` (not counted as detector forward work)."""
        with torch.no_grad():
            self.counter.paused = True
            try:
                return TapSplit(self.net(), tap).maps(x.to(self.det.device))
            finally:
                self.counter.paused = False

    def parts(self, wanted: set[str], fit: Features) -> dict[str, Any]:
        """The parts of the model ``wanted`` by the constructor: the head (whole, weight, bias),
        the network, an encoder to the penultimate layer, the modules of the taps."""
        parts: dict[str, Any] = {}
        if wanted & {"head", "head_weight", "head_bias"}:
            head = self.head(fit)
            # a bias-free head (e.g. CifarCNN's) is a head with a zero bias: ViM, DICE need one
            bias = head.bias if head.bias is not None else torch.zeros(head.out_features)
            parts.update(head=head, head_weight=head.weight, head_bias=bias)
        if "net" in wanted:
            parts["net"] = self.net()
        if "penultimate_encoder" in wanted:
            tap = self.penultimate_name(example(fit))
            parts["penultimate_encoder"] = TapEncoder(self.net(), tap)
        if "tap_modules" in wanted:
            modules = self.modules()
            taps = self.tap_names(example(fit))
            if self.det.layers is None:
                taps = taps[-2:]  # as the library's example: the last two stages (layer3, layer4)
            parts["tap_modules"] = [modules[t] for t in taps]
        return parts

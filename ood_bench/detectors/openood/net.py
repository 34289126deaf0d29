"""OpenOOD's model interface for any harness backbone, derived from its taps.

OpenOOD's postprocessors call methods that only OpenOOD's own networks have
(``forward(x, return_feature=True)``, ``forward_threshold``, ``get_fc`` …). :class:`OpenOODNet`
provides them for any classifier from three facts the harness already knows: the backbone's
taps (named modules, in forward order), its penultimate layer, and its last ``nn.Linear`` (the
head), with the contract ``logits = head(flatten(penultimate))`` checked on real data by
:meth:`OpenOODNet.check`. Nothing here imports OpenOOD.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ood_bench.detectors.nets import head_error, last_linear
from ood_bench.errors import ConfigError


# WORKAROUND: OpenOOD's postprocessors call methods only its own networks have (return_feature,
# return_feature_list, forward_threshold, get_fc, intermediate_forward): this wrapper derives
# them from any backbone's hooked taps.
class OpenOODNet(nn.Module):
    """A frozen classifier with OpenOOD's network methods.

    - ``forward(x)`` → logits; ``return_feature=True`` → ``(logits, penultimate)`` flattened to
      N×D; ``return_feature_list=True`` → ``(logits, [output of every tap, in order])``, the
      last tap being the penultimate layer for the harness's backbones (as OpenOOD's ResNets
      return ``[stem, layer1..layer4, avgpool]``).
    - ``forward_threshold(x, t)`` → ``head(clip(penultimate, max=t))`` (ReAct, as OpenOOD's
      ResNets); ``get_fc()`` → ``(W, b)`` as numpy; ``get_fc_layer()`` and ``.fc`` → the head.
    - ``intermediate_forward(x, layer_index)`` → the output of ``taps[layer_index]`` (for a
      torchvision ResNet, taps ``[relu, layer1, …, layer4, avgpool]``: index ``i`` is
      ``layer<i>``, as OpenOOD's ResNets); without an index, the L2-normalised penultimate
      features (what OpenOOD's CIDER/NPOS networks return).
    - ``feature_size`` → D (AdaScale reads it); any other attribute is the wrapped model's
      (RankFeat reads ``layer4`` and ``avgpool`` of a ResNet).

    ``in_channels``: with ``lift_channels=True`` the wrapper accepts inputs with *more* channels
    than the model has and reads the first ``in_channels``; the adapter feeds OpenOOD's
    3-channel postprocessors zero-padded images this way (see :mod:`.adapter`).
    """

    def __init__(
        self,
        model: nn.Module,
        taps: list[str],
        penultimate: str,
        in_channels: int | None = None,
        lift_channels: bool = False,
    ):
        """Check that the taps and penultimate layer are modules of ``model``; find its head."""
        super().__init__()
        modules = dict(model.named_modules())
        unknown = [t for t in [*taps, penultimate] if t not in modules]
        if unknown:
            raise ConfigError(f"tap(s) {unknown} are not modules of {type(model).__name__}")
        self.model = model
        self.taps = list(taps)
        self.penultimate = penultimate
        found = last_linear(model)
        if found is None:
            raise ConfigError(
                f"{type(model).__name__} has no nn.Linear head: OpenOOD's postprocessors need "
                "get_fc()/forward_threshold, i.e. logits = Linear(penultimate features)"
            )
        self.head_name, head = found
        self.in_channels = in_channels
        self.lift_channels = lift_channels
        self.feature_size = head.in_features
        self.num_classes = head.out_features

    # --- attributes OpenOOD reads -------------------------------------------------------------
    @property
    def fc(self) -> nn.Linear:
        """The classification head (the model's last ``nn.Linear``)."""
        return self.get_fc_layer()

    def get_fc_layer(self) -> nn.Linear:
        """The classification head (the model's last ``nn.Linear``)."""
        return dict(self.model.named_modules())[self.head_name]

    def get_fc(self) -> tuple[np.ndarray, np.ndarray]:
        """The head's weight and bias (zeros without one) as numpy arrays."""
        fc = self.get_fc_layer()
        bias = fc.bias if fc.bias is not None else torch.zeros(fc.out_features)
        return fc.weight.detach().cpu().numpy(), bias.detach().cpu().numpy()

    def __getattr__(self, name: str) -> Any:
        """Fall back to the wrapped model's attribute; a pointed AttributeError without one."""
        try:
            return super().__getattr__(name)
        except AttributeError:
            model = super().__getattr__("model")
            if hasattr(model, name):
                return getattr(model, name)
            raise AttributeError(
                f"OpenOODNet({type(model).__name__}) has no attribute {name!r}: this "
                "OpenOOD postprocessor expects a network built for it (see the adapter's status "
                "table)"
            ) from None

    # --- forward passes -----------------------------------------------------------------------
    def _input(self, x: torch.Tensor) -> torch.Tensor:
        """With ``lift_channels``, the first ``in_channels`` channels of ``x``."""
        if self.lift_channels and self.in_channels and x.shape[1] > self.in_channels:
            return x[:, : self.in_channels]
        return x

    def _run(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Logits and the raw output of every tap and of the penultimate layer (graph kept:
        ODIN-style postprocessors differentiate through them)."""
        store: dict[str, torch.Tensor] = {}
        modules = dict(self.model.named_modules())
        names = list(dict.fromkeys([*self.taps, self.penultimate]))
        handles = [
            modules[n].register_forward_hook(lambda _m, _i, out, n=n: store.__setitem__(n, out))
            for n in names
        ]
        try:
            logits = self.model(self._input(x))
        finally:
            for h in handles:
                h.remove()
        return logits, store

    def forward(
        self, x: torch.Tensor, return_feature: bool = False, return_feature_list: bool = False
    ):
        """Logits; with ``return_feature``, also the flattened penultimate features; with
        ``return_feature_list``, also every tap's output in order."""
        logits, store = self._run(x)
        if return_feature:
            return logits, store[self.penultimate].flatten(1)
        if return_feature_list:
            return logits, [store[t] for t in self.taps]
        return logits

    def forward_threshold(self, x: torch.Tensor, threshold: Any) -> torch.Tensor:
        """Logits from the penultimate features clipped at ``threshold`` (ReAct)."""
        _, feature = self.forward(x, return_feature=True)
        return self.get_fc_layer()(feature.clip(max=float(threshold)))

    def intermediate_forward(self, x: torch.Tensor, layer_index: int | None = None):
        """Output of ``taps[layer_index]``; without an index, L2-normalised penultimate features."""
        if layer_index is None:
            _, feature = self.forward(x, return_feature=True)
            return F.normalize(feature, dim=1)
        if not 0 <= layer_index < len(self.taps):
            raise ConfigError(
                f"intermediate_forward(layer_index={layer_index}): the backbone has "
                f"{len(self.taps)} taps {self.taps}"
            )
        return self._run(x)[1][self.taps[layer_index]]

    @torch.no_grad()
    def check(self, x: torch.Tensor) -> None:
        """Check the contract every fc-based postprocessor relies on:
        ``logits == head(flatten(penultimate))``."""
        logits, feature = self.forward(x, return_feature=True)
        if feature.shape[1] != self.feature_size:
            raise ConfigError(
                f"penultimate layer {self.penultimate!r} gives {feature.shape[1]} features but "
                f"the head {self.head_name!r} takes {self.feature_size}: set the backbone's "
                "penultimate to the layer that feeds the head"
            )
        err = head_error(self.get_fc_layer(), feature, logits, tol=1e-4)
        if err is not None:
            raise ConfigError(
                f"the logits of {type(self.model).__name__} are not {self.head_name}"
                f"(flatten({self.penultimate})) (max difference "
                f"{err:.3g}): OpenOOD's fc-based "
                "postprocessors (ReAct, DICE, ViM, …) would score another network"
            )

"""Model helpers the library adapters share: the head, private frozen copies, taps by hook.

Nothing here imports a detector library. The network is never traced: a tap's output is read
(or replaced) with a forward hook, so any architecture works.

- :func:`last_linear`: the classification head (the last ``nn.Linear`` in module order).
- :func:`frozen_copy`, :func:`untie_modules`, :func:`poisoned`: a private eval-mode copy a
  library may hold, move or differentiate through without touching the caller's model.
- :class:`TapSplit`, :class:`TapEncoder`, :class:`TapChain`: a network cut at its taps.
- :class:`HeadOnMaps`, :func:`as_maps`: penultimate features as N×D×1×1 maps, and the head on them.
- :class:`ForwardCounter`: the images a detector pushes through the network itself.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn


def last_linear(model: nn.Module) -> tuple[str, nn.Linear] | None:
    """Name and module of the model's last ``nn.Linear`` (in module order: the classification
    head), or None without one."""
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    return linears[-1] if linears else None


def head_error(
    head: Callable[[torch.Tensor], torch.Tensor],
    features: torch.Tensor,
    logits: torch.Tensor,
    tol: float,
) -> float | None:
    """None when ``head(features)`` reproduces ``logits`` (``allclose`` at ``tol``), else the
    largest difference: whether a linear head really maps the penultimate layer to the logits,
    which every fc-based detector of both libraries assumes."""
    again = head(features)
    if torch.allclose(again, logits, rtol=tol, atol=tol):
        return None
    return float((again - logits).abs().max())


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


def frozen_copy(module: nn.Module, device: torch.device) -> nn.Module:
    """A deep copy of ``module`` in eval mode, on ``device``, every parameter frozen."""
    out = copy.deepcopy(module).eval().to(device)
    for p in out.parameters():
        p.requires_grad_(False)
    return out


class ForwardCounter:
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


class TapSplit:
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


class TapEncoder:
    """``x`` → flattened output of one module (keeps the autograd graph; stops at the tap)."""

    def __init__(self, net: nn.Module, tap: str):
        self.split = TapSplit(net, tap)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The tap's output for ``x``, flattened to N×D."""
        return self.split.maps(x).flatten(1)


class TapChain:
    """A consumer that applies ``layers()`` one after the other and then ``head`` (pytorch-ood's
    Gram) is served the taps of one hooked forward pass in that order (the first layer runs the
    network)."""

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
        """The chained layers: the first runs the network, the others return stored taps."""

        def first(x: torch.Tensor) -> torch.Tensor:
            """Run the network on ``x`` and return the first tap's output."""
            return self.run(x)[1][0]

        return [first] + [lambda _z, i=i: self._outs[i] for i in range(1, len(self.modules))]

    def head(self, _z: torch.Tensor) -> torch.Tensor:
        """The logits of the last :meth:`run` (the input is ignored)."""
        assert self._logits is not None
        return self._logits


class HeadOnMaps(nn.Module):
    """The last linear layer applied to N×D×1×1 maps (the penultimate features as maps)."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.linear = linear

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Logits of N×D×1×1 maps: the linear layer on the flattened maps."""
        return self.linear(z.flatten(1))


def as_maps(z: torch.Tensor) -> torch.Tensor:
    """N×D features as N×D×1×1 feature maps."""
    return z.reshape(z.shape[0], -1, 1, 1)

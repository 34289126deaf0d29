"""Which layers of a classifier the detectors read: declared by the model, or discovered by one
forward pass."""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import nn

from ood_bench.errors import ConfigError

log = logging.getLogger("ood_bench.backbones")  # one logger for the package, as before


@torch.inference_mode()
def discover_taps(model: nn.Module, example: torch.Tensor) -> tuple[list[str], str]:
    """Taps and penultimate layer of any classifier, found by one forward pass on ``example``.

    Taps: the top-level children with a tensor output, except the final classifier; a single
    layer (no submodules) is skipped when the next child keeps its output shape, so a stem
    ``conv1 → bn1 → relu → maxpool`` yields ``relu`` while every block (``layer1``…) is kept.
    Penultimate: the tap whose flattened output feeds the last ``nn.Linear`` (its
    ``in_features``), else the last tap. Works for torchvision ResNets and small CNNs; for VGG the
    penultimate layer sits inside ``classifier``, so name it in the config.
    """
    shapes: dict[str, tuple[int, ...]] = {}
    children = [(n, m) for n, m in model.named_children()]
    hooks = [
        m.register_forward_hook(
            lambda _m, _i, out, n=n: (
                shapes.__setitem__(n, tuple(out.shape[1:]))
                if isinstance(out, torch.Tensor)
                else None
            )
        )
        for n, m in children
    ]
    was_training = model.training
    try:
        model.eval()
        model(example)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    head = linears[-1][0].split(".")[0] if linears else None
    seen = [n for n, _ in children if n in shapes and n != head]
    leaf = {n: not any(True for _ in m.children()) for n, m in children}
    taps = [
        n
        for i, n in enumerate(seen)
        if not leaf[n] or i + 1 == len(seen) or shapes[seen[i + 1]] != shapes[n]
    ]
    if not taps:
        raise ConfigError(f"found no taps in {type(model).__name__}: name them in the config")
    width = linears[-1][1].in_features if linears else None
    flat = [n for n in taps if int(np.prod(shapes[n])) == width]
    return taps, (flat[-1] if flat else taps[-1])


def find_taps(model: nn.Module, example: torch.Tensor) -> tuple[list[str], str]:
    """The model's taps and penultimate layer: its declared ``taps``/``penultimate``, else
    :func:`discover_taps` (one forward pass on ``example``)."""
    if getattr(model, "taps", None):
        return list(model.taps), str(getattr(model, "penultimate", model.taps[-1]))
    return discover_taps(model, example)

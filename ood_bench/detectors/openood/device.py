"""Running OpenOOD's code on the configured device (it hard-codes CUDA), its output logged."""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

log = logging.getLogger(__name__)


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

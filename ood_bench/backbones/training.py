"""Training a classifier on a benchmark's ID train split (seeded) and measuring its accuracy."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from ood_bench.errors import ConfigError
from ood_bench.progress import ProgressLog, duration, eta

log = logging.getLogger("ood_bench.backbones")  # one logger for the package, as before
# off a terminal, training logs its batches within FIRST_LINE_S seconds, then every LINE_EVERY_S
FIRST_LINE_S = 30.0
LINE_EVERY_S = 60.0


@dataclass
class TrainConfig:
    """How a missing checkpoint is trained (part of the checkpoint's identity).

    The first four fields are the original recipe (AdamW, cosine per epoch, no augmentation);
    the others default to it and enter the identity only when set (:meth:`identity`), so
    checkpoints trained before they existed keep their names. ``optimizer``: ``adamw`` or
    ``sgd`` (Nesterov, momentum 0.9, no weight decay on biases and norms); ``schedule``:
    ``cosine`` (per epoch) or ``onecycle`` (per step: linear warm-up over ``warmup`` of the
    steps from lr/10 to lr, then linear decay to lr/1000); ``label_smoothing``; ``crop_pad``:
    random crop with that much zero padding (0 = off) and ``flip``: random horizontal flips,
    applied to each batch; ``channels_last``: NHWC memory layout (about 2× faster convolutions
    on a CPU).
    """

    epochs: int = 30
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    optimizer: str = "adamw"
    schedule: str = "cosine"
    warmup: float = 0.25
    label_smoothing: float = 0.0
    crop_pad: int = 0
    flip: bool = False
    channels_last: bool = False

    def __post_init__(self) -> None:
        """Reject unknown optimizers and schedules with the accepted values."""
        if self.optimizer not in ("adamw", "sgd"):
            raise ConfigError(f"train.optimizer={self.optimizer!r}: choose adamw or sgd")
        if self.schedule not in ("cosine", "onecycle"):
            raise ConfigError(f"train.schedule={self.schedule!r}: choose cosine or onecycle")

    def identity(self) -> dict[str, Any]:
        """The fields that name a checkpoint: the original four, plus any other that is set."""
        default = TrainConfig()
        return {
            k: v for k, v in vars(self).items() if k in ORIGINAL_FIELDS or v != getattr(default, k)
        }


ORIGINAL_FIELDS = ("epochs", "batch_size", "lr", "weight_decay")


def augment(x: torch.Tensor, crop_pad: int, flip: bool, gen: torch.Generator) -> torch.Tensor:
    """Random crops (zero padding ``crop_pad``) and horizontal flips of an N×C×H×W batch, one
    draw per image from ``gen``. Zero is the mean colour once the images are normalised."""
    n, _, h, w = x.shape
    if crop_pad:
        padded = nn.functional.pad(x, (crop_pad,) * 4)
        dy = torch.randint(0, 2 * crop_pad + 1, (n,), generator=gen)
        dx = torch.randint(0, 2 * crop_pad + 1, (n,), generator=gen)
        rows = (dy[:, None] + torch.arange(h))[:, None, :, None].expand(
            n, x.shape[1], h, w + 2 * crop_pad
        )
        cols = (dx[:, None] + torch.arange(w))[:, None, None, :].expand(n, x.shape[1], h, w)
        x = padded.gather(2, rows).gather(3, cols)
    if flip:
        mirrored = torch.rand(n, generator=gen) < 0.5
        x = torch.where(mirrored[:, None, None, None], x.flip(3), x)
    return x


def _optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW over all parameters, or Nesterov SGD without weight decay on biases and norms."""
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    decay = [p for p in model.parameters() if p.ndim > 1]
    rest = [p for p in model.parameters() if p.ndim <= 1]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": rest, "weight_decay": 0.0},
    ]
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9, nesterov=True)


def train_classifier(
    model: nn.Module,
    loader: DataLoader,
    cfg: TrainConfig,
    seed: int,
    device: str = "cpu",
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Seeded training with ``cfg``'s optimizer, schedule and batch augmentation
    (cross-entropy); leaves the model in eval mode, in the default memory layout.

    Logs one line per epoch (mean loss, train accuracy, elapsed, time left), and, off a terminal
    (no tqdm bar there), batches done, images per second and time left within
    :data:`FIRST_LINE_S` seconds and then every :data:`LINE_EVERY_S`, so a long first epoch
    (CIFAR-10 on a busy CPU: minutes) is not silent. ``clock`` times both (tests pass a fake)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed + 1)  # augmentation draws
    layout = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model.to(device=device, memory_format=layout)
    opt = _optimizer(model, cfg)
    steps = max(cfg.epochs * len(loader), 1)
    if cfg.schedule == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt,
            cfg.lr,
            total_steps=steps,
            pct_start=cfg.warmup,
            anneal_strategy="linear",
            div_factor=10,
            final_div_factor=100,
        )
    else:
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(cfg.epochs, 1))
    model.train()
    bar = tqdm(total=steps, desc="train backbone", disable=None, leave=False)
    t0 = clock()
    seen = {"images": 0, "epoch": 1}

    def detail(elapsed: float) -> str:
        """Images per second so far and the current epoch, for the batch lines."""
        rate = seen["images"] / elapsed if elapsed > 0 else 0.0
        return f"{rate:.{1 if rate < 10 else 0}f} images/s, epoch {seen['epoch']}/{cfg.epochs}"

    progress = ProgressLog(
        log,
        f"train {type(model).__name__}",
        cfg.epochs * len(loader),
        unit="batches",
        step=0,  # time-based lines only: the epoch lines mark the milestones
        interval=LINE_EVERY_S,
        first=FIRST_LINE_S,
        enabled=bar.disable,
        clock=clock,
        detail=detail,
    )
    for epoch in range(cfg.epochs):
        seen["epoch"] = epoch + 1
        total, n, correct = 0.0, 0, 0
        for x, y in loader:
            if cfg.crop_pad or cfg.flip:
                x = augment(x, cfg.crop_pad, cfg.flip, gen)
            opt.zero_grad()
            y = y.to(device)
            out = model(x.to(device, memory_format=layout))
            loss = nn.functional.cross_entropy(out, y, label_smoothing=cfg.label_smoothing)
            loss.backward()
            opt.step()
            if cfg.schedule == "onecycle":
                sched.step()
            total, n = total + loss.item() * len(y), n + len(y)
            correct += (out.detach().argmax(1) == y).sum().item()
            bar.update()
            seen["images"] += len(y)
            progress.update(1)
        if cfg.schedule == "cosine":
            sched.step()
        bar.set_postfix(epoch=epoch + 1, loss=f"{total / max(n, 1):.4f}")
        elapsed = clock() - t0
        log.info(
            "train %s epoch %d/%d: loss %.4f, train accuracy %.2f%%, elapsed %s, ~%s left",
            type(model).__name__,
            epoch + 1,
            cfg.epochs,
            total / max(n, 1),
            100 * correct / max(n, 1),
            duration(elapsed),
            eta(elapsed, epoch + 1, cfg.epochs),
        )
        progress.note_line()
    bar.close()
    model.to(memory_format=torch.contiguous_format)
    model.eval()


@torch.inference_mode()
def model_accuracy(model: nn.Module, loader: DataLoader, device: str = "cpu") -> float:
    """Top-1 accuracy of ``model`` (in eval mode) over ``loader``; 0 when it is empty."""
    model.eval()
    correct = n = 0
    for x, y in loader:
        correct += (model(x.to(device)).argmax(1).cpu() == y).sum().item()
        n += len(y)
    return correct / max(n, 1)

"""Training a classifier on a benchmark's ID train split (seeded) and measuring its accuracy."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from ood_bench.progress import duration, eta

log = logging.getLogger("ood_bench.backbones")  # one logger for the package, as before


@dataclass
class TrainConfig:
    """How a missing checkpoint is trained (part of the checkpoint's identity)."""

    epochs: int = 30
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4


def train_classifier(
    model: nn.Module, loader: DataLoader, cfg: TrainConfig, seed: int, device: str = "cpu"
) -> None:
    """Seeded AdamW + cosine schedule (per epoch), cross-entropy; leaves the model in eval mode.

    Logs one line per epoch (mean loss, train accuracy, elapsed, time left), so runs whose output
    is not a terminal (no tqdm bar there) show progress too."""
    torch.manual_seed(seed)
    model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(cfg.epochs, 1))
    model.train()
    bar = tqdm(total=cfg.epochs * len(loader), desc="train backbone", disable=None, leave=False)
    t0 = time.perf_counter()
    for epoch in range(cfg.epochs):
        total, n, correct = 0.0, 0, 0
        for x, y in loader:
            opt.zero_grad()
            y = y.to(device)
            out = model(x.to(device))
            loss = nn.functional.cross_entropy(out, y)
            loss.backward()
            opt.step()
            total, n = total + loss.item() * len(y), n + len(y)
            correct += (out.detach().argmax(1) == y).sum().item()
            bar.update()
        sched.step()
        bar.set_postfix(epoch=epoch + 1, loss=f"{total / max(n, 1):.4f}")
        elapsed = time.perf_counter() - t0
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
    bar.close()
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

"""Train a backbone (Hydra: benchmark × backbone × seed × epochs) into a checkpoint + JSON card.

    ood-bench train benchmark=mnist_fashion backbone=lenet data_root=DATA
    ood-bench train benchmark=cifar10_offline backbone=cifar_cnn data_root=DATA

Writes ``<out_dir>/<backbone>_<benchmark>_s<seed>.pt`` (a state dict) and ``.json``, its card
in the package's one format (:func:`ood_bench.backbones.cards.save_checkpoint`: sha256, identity,
test accuracy, threads, training and wall time, versions), then prints the arguments that make
the harness use it: the trained option (``backbone=digits_cnn``, so its architecture arguments,
taps and name stay) with ``backbone.checkpoint=`` and ``backbone.sha256=``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from ood_bench.backbones import TrainConfig, build_model, model_accuracy, train_classifier
from ood_bench.backbones.cards import save_checkpoint
from ood_bench.backbones.checkpoints import checkpoint_identity, in_memory, model_kwargs
from ood_bench.config import CONF_DIR, build
from ood_bench.environment import environment
from ood_bench.errors import one_line_errors
from ood_bench.pipeline import seed_everything
from ood_bench.threads import set_job_threads

log = logging.getLogger("train_backbone")


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
@one_line_errors
def main(cfg: DictConfig) -> None:
    """Train the configured backbone (Hydra entry point), save its state dict and JSON card,
    and print the arguments that make the harness load it."""
    start = time.perf_counter()
    versions = environment(str(cfg.device))  # the code that runs: before the tree can change
    # the thread count changes the trained weights: set once, recorded in the card
    threads = set_job_threads(cfg, HydraConfig.get().launcher)
    seed_everything(int(cfg.seed))
    bench = build(cfg.benchmark, "benchmark")
    b = cfg.backbone
    kwargs = model_kwargs(bench, OmegaConf.to_container(b.arch_kwargs or {}))
    torch.manual_seed(int(cfg.seed))
    model = build_model(b.arch, **kwargs)
    tcfg = TrainConfig(**OmegaConf.to_container(b.train))
    gen = torch.Generator().manual_seed(int(cfg.seed))
    loader = DataLoader(
        in_memory(bench.split("train").dataset),
        batch_size=tcfg.batch_size,
        shuffle=True,
        generator=gen,
    )
    log.info(
        "training %s on %s: %d images, %d epochs, device %s",
        b.arch,
        bench.name,
        len(bench.split("train")),
        tcfg.epochs,
        cfg.device,
    )
    t0 = time.perf_counter()
    train_classifier(model, loader, tcfg, int(cfg.seed), str(cfg.device))
    wall = time.perf_counter() - t0
    acc = model_accuracy(
        model, DataLoader(bench.split("test").dataset, batch_size=512), str(cfg.device)
    )
    model.cpu()
    out = Path(cfg.out_dir) / f"{b.name}_{bench.name}_s{cfg.seed}.pt"
    identity = checkpoint_identity(
        b.arch, bench, int(cfg.seed), tcfg.identity(), OmegaConf.to_container(b.arch_kwargs or {})
    )
    card = save_checkpoint(
        model,
        out,
        identity,
        train_s=wall,
        id_test_acc=acc,
        wall_s=round(time.perf_counter() - start, 2),  # the whole command: data, training, test
        versions=versions,
        threads=threads,  # what set_job_threads set for the training
    )
    digest = card["sha256"]
    log.info(
        "test accuracy %.2f%% after %.1f s; wrote %s and its card %s",
        100 * acc,
        wall,
        out,
        out.with_suffix(".json"),
    )
    option = f"backbone={b.name}" + (f" backbone.arch={b.arch}" if b.name == "checkpoint" else "")
    print(f"use it: {option} backbone.checkpoint={out.resolve()} backbone.sha256={digest}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Scoring cost of the detectors relative to one forward pass of the backbone.

    python scripts/bench_scoring.py                 # digits_cnn (trained) and ResNet-18 (random)
    python scripts/bench_scoring.py --backbones lenet_mnist cifar_cnn --detectors stat_maha_energy \
        --csv results/runtime/scoring_cost.csv data_root=../shared/data

``lenet_mnist`` (LeNet on MNIST, seed 0) and ``cifar_cnn`` (the committed CIFAR-10 checkpoint,
``checkpoints/cifar_cnn_cifar10_offline_s0.pt``) need ``data_root``; trailing ``key=value``
words are Hydra overrides for them.

For each backbone: the forward time per image (batch 128, CPU), then for every detector option
the score time per sample on cached features, the ratio of the two (measured in the same run,
the machine's noise hits both), and the memory of a statistical detector's references.
ResNet-18 uses random weights on 32×32 inputs: the timing, not the accuracy, is the point.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torchvision
from torch.utils.data import DataLoader

from ood_bench.atomic import atomic_write_text
from ood_bench.backbones import Backbone, discover_taps
from ood_bench.config import CONF_DIR, build, compose
from ood_bench.data.base import tensor_set
from ood_bench.environment import git_sha, require_clean_tree
from ood_bench.features import FeatureExtractor
from ood_bench.paper import pairing
from ood_bench.pipeline import prepare

DETECTORS = sorted(p.stem for p in (CONF_DIR / "detector").glob("*.yaml"))
# trained backbones on real data: name -> (label, Hydra overrides of conf/pairings.yaml)
REAL = {
    "lenet_mnist": ("lenet (1×28×28, MNIST)", pairing("mnist_fashion").overrides),
    "cifar_cnn": ("cifar_cnn (3×32×32, CIFAR-10)", pairing("cifar10_offline").overrides),
}


def forward_ms(model: torch.nn.Module, x: torch.Tensor, repeats: int = 3) -> float:
    """Best-of-``repeats`` forward time per image in ms (batches of 128, after warm-up)."""
    model.eval()
    best = np.inf
    with torch.inference_mode():
        model(x[:8])
        for _ in range(repeats):
            t0 = time.perf_counter()
            for i in range(0, len(x), 128):
                model(x[i : i + 128])
            best = min(best, time.perf_counter() - t0)
    return 1000 * best / len(x)


def score_ms(det, feats, repeats: int = 3) -> float:
    """Best-of-``repeats`` scoring time per sample in ms on cached features."""
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        det.score(feats)
        best = min(best, time.perf_counter() - t0)
    return 1000 * best / len(feats)


def bench(name, model, x_test, feats, cfg_for, detectors: list[str]) -> list[dict]:
    """One row per detector option: forward and score time, their ratio, reference memory."""
    fwd = forward_ms(model, x_test)
    rows = []
    for option in detectors:
        det = build(cfg_for(option).detector, "detector").fit(feats["fit"], feats["calib"])
        ms = score_ms(det, feats["test"])
        nbytes = det.reference_nbytes()
        mem = nbytes / 2**20 if nbytes is not None else np.nan
        rows.append(
            {
                "backbone": name,
                "detector": option,
                "forward_ms": fwd,
                "score_ms": ms,
                "score/forward": ms / fwd,
                "reference_mib": mem,
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    """Time every detector on digits_cnn and a random ResNet-18; print a Markdown table."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--cache-dir", default=".cache/ood_bench")
    p.add_argument(
        "--backbones",
        nargs="+",
        default=["digits_cnn", "resnet18"],
        choices=list(REAL) + ["digits_cnn", "resnet18"],
    )
    p.add_argument("--detectors", nargs="+", default=None, help="default: every option")
    p.add_argument("--csv", type=Path, default=None, help="also write the rows here")
    p.add_argument("overrides", nargs="*", help="Hydra overrides (data_root=...)")
    args = p.parse_args(argv)
    detectors = args.detectors or DETECTORS
    logging.basicConfig(level=logging.WARNING)
    torch.manual_seed(0)

    def cfg_for(option: str, *extra: str):
        """The run config with detector ``option``, this cache dir and ``extra``."""
        return compose([f"detector={option}", f"cache_dir={args.cache_dir}", *extra])

    rows: list[dict] = []
    if "digits_cnn" in args.backbones:
        prep = prepare(cfg_for("stat_masf"))
        x_digits = prep.bench.split("test").dataset.tensors[0]
        feats = {"fit": prep.fit, "calib": prep.calib, "test": prep.test}
        rows += bench(
            "digits_cnn (1×8×8)", prep.backbone.model, x_digits, feats, cfg_for, detectors
        )
    for name in (b for b in args.backbones if b in REAL):
        label, over = REAL[name]
        prep = prepare(cfg_for("stat_masf", *over, *args.overrides))
        x = next(iter(DataLoader(prep.bench.split("test").dataset, batch_size=2048)))[0]
        feats = {"fit": prep.fit, "calib": prep.calib, "test": prep.test}
        rows += bench(
            label,
            prep.backbone.model,
            x,
            feats,
            lambda o, v=over: cfg_for(o, *v, *args.overrides),
            detectors,
        )
    if "resnet18" in args.backbones:
        rows += random_resnet(args.cache_dir, cfg_for, detectors)
    df = pd.DataFrame(rows)
    print(df.to_markdown(index=False, floatfmt=".4g"))
    if args.csv:
        require_clean_tree(args.csv, "bench_scoring.py")
        df["git_sha"] = git_sha()
        atomic_write_text(args.csv, df.to_csv(index=False, float_format="%.6g"))
    return 0


def random_resnet(cache_dir: str, cfg_for, detectors: list[str]) -> list[dict]:
    """The rows of a random ResNet-18 on 32×32 noise (timing only)."""
    model = torchvision.models.resnet18(num_classes=10).eval()
    taps, pen = discover_taps(model, torch.zeros(2, 3, 32, 32))
    bb = Backbone("resnet18", model, "r" * 64, Path("."), taps, pen)
    ex = FeatureExtractor(bb, Path(cache_dir) / "bench", batch_size=128)
    gen = np.random.default_rng(0)
    sets = {
        k: gen.random((n, 3, 32, 32), dtype=np.float32)
        for k, n in (("fit", 2000), ("calib", 500), ("test", 500))
    }
    feats = {
        k: ex(tensor_set(f"bench_{k}", v, gen.integers(0, 10, len(v)), {"b": 1}))
        for k, v in sets.items()
    }
    return bench(
        "resnet18 (3×32×32, random)",
        model,
        torch.from_numpy(sets["test"]),
        feats,
        cfg_for,
        detectors,
    )


if __name__ == "__main__":
    raise SystemExit(main())

"""Run one minimal example on the embedded ``digits`` benchmark and print what it gave (JSON).

    PYTHONPATH=scripts python -m libcompare.examples.run pytorch_ood_mahalanobis --cache-dir DIR

The model is ood-bench's ``digits_cnn`` (trained into the cache when missing, seed 0); the
loaders are plain ``DataLoader``s of the fit, calib, ID test and the four OOD sets. Run in a
fresh interpreter so that an example's monkey-patches cannot leak into anything else.
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score
from torch.utils.data import DataLoader

from ood_bench.config import build, compose


def main(argv: list[str] | None = None) -> int:
    """Run the example named on the command line and print its JSON."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("example", help="module name in libcompare.examples")
    p.add_argument("--cache-dir", type=Path, required=True)
    p.add_argument("--repeats", type=int, default=5, help="timed calls (after one warm-up)")
    args = p.parse_args(argv)
    cfg = compose()
    bench = build(cfg.benchmark, "benchmark")
    backbone = build(cfg.backbone, "backbone", benchmark=bench, cache_dir=str(args.cache_dir))

    def loader(s: object) -> DataLoader:
        """A plain loader of one set's images and labels."""
        return DataLoader(s.dataset, batch_size=256)  # type: ignore[attr-defined]

    sets = [bench.split("test"), *bench.ood]
    example = importlib.import_module(f"libcompare.examples.{args.example}")
    times = []
    for _ in range(1 + args.repeats):  # the first call pays the lazy imports: not timed
        t0 = time.perf_counter()
        scores = example.score(
            backbone.model,
            loader(bench.split("fit")),
            loader(bench.split("calib")),
            map(loader, sets),
        )
        times.append(time.perf_counter() - t0)
    seconds = statistics.median(times[1:])
    scores = [np.asarray(s, dtype=np.float64).reshape(-1) for s in scores]
    aurocs = {}
    for s, ood in zip(scores[1:], sets[1:], strict=True):
        y = np.r_[np.zeros(len(scores[0])), np.ones(len(s))]
        aurocs[ood.name] = float(roc_auc_score(y, np.r_[scores[0], s]))
    print(json.dumps({"seconds": seconds, "auroc": aurocs, "n": [len(s) for s in scores]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

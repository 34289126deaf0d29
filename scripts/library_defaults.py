"""Defaults that differ between pytorch-ood and OpenOOD for the same method, measured.

    python scripts/library_defaults.py                  # print the table (digits, seeds 0-2)
    python scripts/library_defaults.py --csv results/libraries/defaults.csv  # the committed run
    python scripts/library_defaults.py --only ODIN --seeds 0

For each method whose default hyperparameters differ between the two libraries, three runs on the
same backbone, splits and OOD sets: pytorch-ood on its defaults, OpenOOD on its defaults, and
pytorch-ood with OpenOOD's value (``aligned``). The CSV holds the AUROC per seed and OOD set; the
table printed is the mean AUROC over the OOD sets, per seed and mean over seeds. Extra arguments
are Hydra overrides of the job config (default benchmark: digits).
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ood_bench.config import compose
from ood_bench.docsync.libraries import defaults_table as table
from ood_bench.environment import git_sha, require_clean_tree
from ood_bench.pipeline import detector_aurocs, prepare


@dataclass
class Run:
    """One run of a method: the detector option, its overrides and what it sets."""

    variant: str  # pytorch-ood default | OpenOOD default | pytorch-ood aligned
    option: str
    setting: str
    overrides: list[str] = field(default_factory=list)


# method -> its three runs; settings as each library states them
METHODS: dict[str, list[Run]] = {
    "ODIN": [
        Run("pytorch-ood default", "pood_odin", "eps 0.0014, T 1000; gradient sign not scaled"),
        Run(
            "OpenOOD default",
            "openood_odin",
            "noise 0.0014, T 1000; gradient sign / std 0.5 (unknown dataset): step 0.0028",
        ),
        Run("pytorch-ood aligned", "pood_odin", "eps 0.0028", ["detector.params.eps=0.0028"]),
    ],
    "SCALE": [
        Run("pytorch-ood default", "pood_scale", "percentile 0.65"),
        Run("OpenOOD default", "openood_scale", "percentile 85"),
        Run(
            "pytorch-ood aligned",
            "pood_scale",
            "percentile 0.85",
            ["detector.params.percentile=0.85"],
        ),
    ],
    "ASH": [
        Run("pytorch-ood default", "pood_ash", "ASH-S, percentile 0.65"),
        Run("OpenOOD default", "openood_ash", "ASH-B, percentile 90"),
        Run(
            "pytorch-ood aligned",
            "pood_ash",
            "ASH-B, percentile 0.9",
            ["detector.params.variant=ash-b", "detector.params.percentile=0.9"],
        ),
    ],
    "NNGuide": [
        Run("pytorch-ood default", "pood_nnguide", "k 10, every fit sample in the bank"),
        Run("OpenOOD default", "openood_nnguide", "K 100, bank = alpha 0.01 of the fit split"),
        Run("pytorch-ood aligned", "pood_nnguide", "k 100", ["detector.params.k=100"]),
    ],
    "VRA": [
        Run("pytorch-ood default", "pood_vra", "percentiles 0.01 / 0.99"),
        Run("OpenOOD default", "openood_vra", "percentiles 10 / 90"),
        Run(
            "pytorch-ood aligned",
            "pood_vra",
            "percentiles 0.1 / 0.9",
            ["detector.params.lower_percentile=0.1", "detector.params.upper_percentile=0.9"],
        ),
    ],
    "NCI": [
        Run("pytorch-ood default", "pood_nci", "alpha 0"),
        Run("OpenOOD default", "openood_nci", "alpha 1e-4"),
        Run("pytorch-ood aligned", "pood_nci", "alpha 1e-4", ["detector.params.alpha=0.0001"]),
    ],
}


def aurocs(job: list[str], run: Run, prep) -> dict[str, float]:
    """Fit ``run`` on the prepared splits; its AUROC per OOD set."""
    return detector_aurocs(compose([*job, f"detector={run.option}", *run.overrides]), prep)


def main() -> int:
    """Run every method's three runs on every seed; print the table, write the CSV."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("overrides", nargs="*", help="Hydra overrides of the job (cache_dir=...)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--only", nargs="*", help=f"methods (default: all of {sorted(METHODS)})")
    ap.add_argument("--csv", type=Path, help="write the AUROC per seed and OOD set here")
    a = ap.parse_args()
    if a.csv:
        require_clean_tree(a.csv, "library_defaults.py")
    logging.basicConfig(level=logging.WARNING)
    base = ["benchmark=digits", *a.overrides]
    sha = git_sha()
    rows = []
    for seed in a.seeds:
        job = [*base, f"seed={seed}"]
        prep = prepare(compose(job))
        for method, runs in METHODS.items():
            if a.only and method not in a.only:
                continue
            for run in runs:
                auc = aurocs(job, run, prep)
                print(f"seed {seed} {method} [{run.variant}]: {np.mean(list(auc.values())):.4f}")
                rows += [
                    {
                        "method": method,
                        "variant": run.variant,
                        "detector": run.option,
                        "overrides": " ".join(run.overrides),
                        "setting": run.setting,
                        "benchmark": prep.bench.name,
                        "backbone": prep.backbone.name,
                        "backbone_sha256": prep.backbone.sha256,
                        "seed": seed,
                        "ood_dataset": name,
                        "auroc": value,
                        "git_sha": sha,
                    }
                    for name, value in auc.items()
                ]
    df = pd.DataFrame(rows)
    print(f"\nmean AUROC over the OOD sets of {base[0].split('=')[1]}:\n")
    print(table(df).to_markdown(index=False))
    if a.csv:
        a.csv.parent.mkdir(parents=True, exist_ok=True)
        df.to_csv(a.csv, index=False, float_format="%.6g")
        print(f"\nwrote {a.csv}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The novelty certification by simulation: its level under the null, its power on a class
that the clustering fragments.

    ood-bench certification --out results/novelty/certification/certification.csv

For each batch size (ID-only batches of m samples, a calibration set of n_calib redrawn every
time; ood_bench.novelty.simulation) and each rule (``certify``: union, the default; any, the
former per-cluster rule; each), writes one row: how often a new class is declared under the
null with every rejection put in a candidate cluster, fragmented at random (the realised level,
with its exact 95 % Clopper-Pearson interval), and how often a new class of n_new rejected
samples split into fragments of j* - 1 is declared (the power on a fragmented class).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from ood_bench.atomic import atomic_write
from ood_bench.environment import git_sha, require_clean_tree
from ood_bench.novelty import NoveltyDetector
from ood_bench.novelty.simulation import (
    fragmented_declarations,
    null_declarations,
)

# (n_calib, m ID samples in a null batch, n_new samples of the fragmented class): the trial
# sizes of the digits, MNIST and CIFAR scenarios (half the held-out pool calibrates)
SETTINGS = [(180, 400, 400), (1000, 2000, 1000), (2000, 4000, 1000)]
RULES = ("union", "any", "each")


def simulate(reps: int, alpha: float, level: float, seed: int) -> pd.DataFrame:
    """One row per (setting, rule): realised level with its exact interval, and power."""
    rows = []
    for n_calib, m, n_new in SETTINGS:
        for rule in RULES:
            nd = NoveltyDetector(rule, alpha=alpha, level=level, criteria={"certify": rule})
            rng = np.random.default_rng([seed, n_calib, m])  # the same batches for every rule
            null = null_declarations(nd, rng, n_calib, m, reps)
            k = int(null.sum())
            ci = stats.binomtest(k, reps).proportion_ci(0.95, method="exact")
            power = fragmented_declarations(
                nd, np.random.default_rng([seed, n_calib, m, 1]), n_calib, m, n_new, reps
            ).mean()
            rows.append(
                {
                    "certify": rule,
                    "n_calib": n_calib,
                    "m": m,
                    "n_new": n_new,
                    "alpha": alpha,
                    "level": level,
                    "reps": reps,
                    "null_declared": k,
                    "realised_level": k / reps,
                    "level_ci_low": ci.low,
                    "level_ci_high": ci.high,
                    "power_fragmented": float(power),
                    "seed": seed,
                }
            )
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    """Simulate and write the CSV (with the commit that produced it); print the table."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="CSV to write")
    ap.add_argument("--reps", type=int, default=4000, help="simulated batches per row")
    ap.add_argument("--alpha", type=float, default=0.05, help="per-sample rejection level")
    ap.add_argument("--level", type=float, default=0.05, help="level of the decision")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    require_clean_tree(a.out, "ood-bench certification")
    df = simulate(a.reps, a.alpha, a.level, a.seed).assign(git_sha=git_sha())
    a.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(a.out, lambda p: df.to_csv(p, index=False))
    print(df.drop(columns=["git_sha"]).to_markdown(index=False, floatfmt=".4f"))
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

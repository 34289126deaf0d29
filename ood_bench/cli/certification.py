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

from ood_bench.atomic import atomic_write
from ood_bench.environment import git_sha, require_clean_tree
from ood_bench.novelty.simulation import simulate


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

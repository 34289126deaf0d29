"""Print the demo's compact comparison and what it shows, from a collected results CSV.

    ood-bench summary outputs/demo/results.csv --out outputs/demo/summary.md

One table per benchmark: per detector, AUROC and both FPR95 readings (fpr95_id, fpr95_ood) per
OOD group (near / far), fit and scoring time, and for p-value detectors the realised
false-positive rate at alpha on ID test data with its exact (Clopper–Pearson) 95 % interval.
Then a few lines computed from the table: the highest mean AUROC on near and on far OOD against
the best of the other side, a winner only beyond 0.5 points and the seed spread (one seed calls
none); whether the type-I error guarantee held; one line defining each metric. With --out, the
last line printed is the summary file's path.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ood_bench.atomic import atomic_write_text
from ood_bench.results import read_results
from ood_bench.summary import demo_summary


def main(argv: list[str] | None = None) -> int:
    """Print the summary (and write it to ``--out``); returns the exit code."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("results", nargs="+", type=Path, help="collected CSVs or folders of them")
    p.add_argument("--alpha", type=float, default=0.05, help="level of the validity check")
    p.add_argument("--out", type=Path, help="also write the summary to this Markdown file")
    args = p.parse_args(argv)
    text = demo_summary(read_results(*args.results), args.alpha)
    if args.out:
        atomic_write_text(args.out, text + "\n")
    print(text)
    if args.out:
        print(f"\nthis summary: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Tables and figures of novelty-detection results (``python -m ood_bench.run_novelty``).

    ood-bench novelty-report outputs/novelty/<run> --out results/novelty
    ood-bench novelty-report results/raw/novelty.csv --samples outputs/novelty --out DIR

RESULTS: job folders (or sweep folders) holding ``metrics.csv`` files, or collected CSVs. Writes
to OUT:

- ``novelty.md``: per benchmark / backbone / detector+method and scenario, mean ± std over seeds
  of the decision accuracy, the false-alarm rate of the controls with its exact (Clopper-Pearson)
  95 % upper bound over all trials, misses, estimated vs true number of new classes, ACC / NMI /
  ARI, and the stream's detection rate, false alarms and delay;
- ``novelty_<benchmark>_<detector>_<scenario>.png`` / ``.pdf``: a 2-D projection (PCA, or
  t-SNE with ``--projection tsne``) of the rejected samples of one saved trial, coloured by found
  cluster (left) and by true class (right), the held-out ID reference in light grey; read from
  the ``novelty_samples.csv.gz`` files under RESULTS (or ``--samples``).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ood_bench.atomic import atomic_write_text
from ood_bench.environment import require_clean_tree
from ood_bench.novelty.figures import SAMPLES, figures, markdown, sample_files
from ood_bench.results import read_results

log = logging.getLogger("novelty_report")


def main(argv: list[str] | None = None) -> int:
    """Write novelty.md and the projection figures to ``--out``; returns the exit code."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("results", nargs="+", type=Path, help="job/sweep folders or collected CSVs")
    p.add_argument("--out", type=Path, required=True, help="folder for the table and figures")
    p.add_argument(
        "--samples", nargs="*", type=Path, default=None, help=f"{SAMPLES} files or folders"
    )
    p.add_argument("--projection", choices=("pca", "tsne"), default="pca")
    p.add_argument(
        "--methods",
        nargs="*",
        default=None,
        help="novelty methods (conf/novelty/) to draw figures for (default: all)",
    )
    p.add_argument("--quiet", action="store_true", help="do not print the table")
    args = p.parse_args(argv)
    require_clean_tree(args.out, "ood-bench novelty-report")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    df = read_results(*args.results)
    text = markdown(df)
    path = atomic_write_text(args.out / "novelty.md", text + "\n")
    log.info("wrote %s", path)
    if not args.quiet:
        print(text)
    files = sample_files(args.samples or args.results)
    for f in figures(files, args.out, args.projection, args.methods):
        log.info("wrote %s", f)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

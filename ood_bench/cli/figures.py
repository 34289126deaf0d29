"""Paper figures (PNG + PDF, reproducible) from collected results and the feature cache.

    ood-bench figures results/raw --out results/figures
    ood-bench figures results/raw --out results/figures --roc digits:stat_masf,pood_knn

From the CSVs: AUROC vs corruption severity per detector (one panel per corruption), corrupted-ID
rejection at α = 0.05 vs severity (p-value detectors), and the p-value calibration plot
(realised ID rejection vs α). With ``--roc BENCHMARK:DET,DET``: ROC curves (scikit-learn's
``RocCurveDisplay``) and ID-vs-OOD score histograms, recomputed from the cached features (seed 0).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ood_bench.environment import require_clean_tree
from ood_bench.figures import reproducible
from ood_bench.paper_figures import calibration_figure, robustness_figures, roc_figures
from ood_bench.results import read_results

log = logging.getLogger("make_figures")


def main(argv: list[str] | None = None) -> int:
    """Write every figure the results allow (and the ``--roc`` ones); returns the exit code."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("results", nargs="+", type=Path, help="collected CSVs or folders of them")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument(
        "--roc",
        action="append",
        default=[],
        help="BENCHMARK:DET1,DET2 — ROC curves and histograms from cached features",
    )
    p.add_argument("--cache-dir", default=None)
    args = p.parse_args(argv)
    require_clean_tree(args.out, "ood-bench figures")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    reproducible()
    df = read_results(*args.results)
    made = robustness_figures(df, args.out) + calibration_figure(df, args.out)
    for spec in args.roc:
        made += roc_figures(spec, args.out, args.cache_dir)
    log.info("wrote %d figures (PNG + PDF) to %s: %s", len(made), args.out, ", ".join(made))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

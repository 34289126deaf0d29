"""The results site: static HTML pages generated from the tidy CSVs of a results folder.

    ood-bench report results --out results/site      # make report

Writes OUT/index.html (benchmarks, backbones, a leaderboard per benchmark), one page per
benchmark, robustness.html, validity.html, libraries.html and novelty.html, with their figures
(img/) and the stylesheet and script (assets/). Opens from the file system, needs no network,
reads without JavaScript; the same results give the same bytes (docs/site.md).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ood_bench.environment import require_clean_tree
from ood_bench.errors import DataError
from ood_bench.site import build_site

log = logging.getLogger("make_report")


def main(argv: list[str] | None = None) -> int:
    """Build the site; returns the exit code (2 on bad input, with the reason)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("results", type=Path, help="the results folder (holds raw/*.csv)")
    p.add_argument("--out", type=Path, default=None, help="site folder (default: RESULTS/site)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = args.out if args.out is not None else args.results / "site"
    require_clean_tree(out, "ood-bench report")
    try:
        files = build_site(args.results, out)
    except DataError as e:
        print(f"ood-bench report: {e}", file=sys.stderr)
        return 2
    size = sum(f.stat().st_size for f in files)
    log.info(
        "wrote %d files (%.0f KiB) to %s: open %s", len(files), size / 1024, out, out / "index.html"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python
"""Turn collected results CSVs into the report tables (Markdown).

    python scripts/make_tables.py results/raw --out results/tables

Writes OUT/results.md (every table: ID accuracy; AUROC and both FPR95 readings per detector ×
OOD set with near/far/all means, mean ± std over seeds, best in bold; statistical validity;
runtime; robustness; ranking stability) and prints it, plus one booktabs LaTeX file per table
(OUT/<table>.tex, names escaped, best in bold).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ood_bench.io import atomic_write_text
from ood_bench.report import markdown_report, report_tables, to_latex
from ood_bench.results import read_results

log = logging.getLogger("make_tables")


def main(argv: list[str] | None = None) -> int:
    """Write results.md and one LaTeX file per table to ``--out``; returns the exit code."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("results", nargs="+", type=Path, help="collected CSVs or folders of them")
    p.add_argument("--out", type=Path, required=True, help="folder for the tables")
    p.add_argument("--quiet", action="store_true", help="do not print the tables")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    df = read_results(*args.results)
    text = markdown_report(df)
    path = atomic_write_text(args.out / "results.md", text + "\n")
    for stem, caption, table in report_tables(df):
        atomic_write_text(args.out / f"{stem}.tex", to_latex(table, caption, f"tab:{stem}"))
    if not args.quiet:
        print(text)
    log.info("wrote %s", path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

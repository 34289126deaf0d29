"""Turn collected results CSVs into the report tables (Markdown).

    ood-bench tables results/raw --out results/tables

Writes OUT/results.md (every table: ID accuracy; AUROC and both FPR95 readings per detector ×
OOD set with near/far/all means, mean ± std over seeds, best in bold; statistical validity;
runtime; robustness; ranking stability) and prints it, plus one booktabs LaTeX file per table
(OUT/<table>.tex, names escaped, best in bold). When the CSVs sit in a results folder that
holds per-sample scores (RESULTS/scores/), the AUROC table's mean columns carry the tie marks
of the site's leaderboards: bold = best, underlined = not significantly worse (paired DeLong
test, Holm-corrected; docs/site.md).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pandas as pd

from ood_bench.atomic import atomic_write_text
from ood_bench.environment import require_clean_tree
from ood_bench.report import markdown_report, report_tables, to_latex
from ood_bench.results import (
    backbone_conflicts,
    keep_newest_backbone,
    one_result_per_job,
    read_results,
)

log = logging.getLogger("make_tables")


def ties_of(paths: list[Path]) -> pd.DataFrame | None:
    """The AUROC tie marks of the results folder the inputs live in (``<root>/raw/*.csv``),
    when it holds per-sample scores (``<root>/scores/``); None otherwise (tables unmarked)."""
    roots = {(p if p.is_dir() else p.parent).resolve().parent for p in paths}
    if len(roots) != 1:
        return None
    root = roots.pop()
    if not (root / "scores").is_dir():
        return None
    from ood_bench.site.data import ties

    marks = ties(root)
    log.info("tie marks from the stored scores under %s: %d rows", root / "scores", len(marks))
    return marks if len(marks) else None


def main(argv: list[str] | None = None) -> int:
    """Write results.md and one LaTeX file per table to ``--out``; returns the exit code."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("results", nargs="+", type=Path, help="collected CSVs or folders of them")
    p.add_argument("--out", type=Path, required=True, help="folder for the tables")
    p.add_argument("--quiet", action="store_true", help="do not print the tables")
    p.add_argument(
        "--newest-backbone",
        action="store_true",
        help="when a (benchmark, backbone, seed) has results from several checkpoints, keep\n"
        "those of the checkpoint of its newest run (default: refuse to mix them)",
    )
    args = p.parse_args(argv)
    require_clean_tree(args.out, "ood-bench tables")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    df = one_result_per_job(read_results(*args.results))
    conflicts = backbone_conflicts(df)
    if len(conflicts) and args.newest_backbone:
        df = keep_newest_backbone(df)
        log.warning(
            "kept the newest checkpoint's results for %d (benchmark, backbone, seed)",
            len(conflicts),
        )
    elif len(conflicts):
        listed = "; ".join(
            f"{c.benchmark} / {c.backbone} seed {c.seed}: {', '.join(s[:12] for s in c.sha256)}"
            for c in conflicts.itertuples()
        )
        raise SystemExit(
            f"results from different backbone checkpoints under one backbone name ({listed}): "
            "a table over them would mix backbones (self-trained weights depend on the thread "
            "count). Fix: rerun with a shared cache_dir or backbone=checkpoint, collect one "
            "of them, or pass --newest-backbone to keep each seed's newest checkpoint."
        )
    marks = ties_of(args.results)
    text = markdown_report(df, marks)
    path = atomic_write_text(args.out / "results.md", text + "\n")
    for stem, caption, table in report_tables(df, marks):
        atomic_write_text(args.out / f"{stem}.tex", to_latex(table, caption, f"tab:{stem}"))
    if not args.quiet:
        print(text)
    log.info("wrote %s", path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

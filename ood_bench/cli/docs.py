"""Rewrite the figures quoted in README.md and docs/*.md from the committed results.

    ood-bench docs            # rewrite every <!-- generated:NAME --> block
    ood-bench docs --check    # exit 1 and name each block that is out of date

Every result figure in the documentation sits in a generated block whose text
``ood_bench.docsync.GENERATORS[NAME]`` computes from the files under ``results/``;
run this after the results change (``make paper`` does), never edit a block by hand.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ood_bench.docsync import ROOT, doc_files, sync


def main(argv: list[str] | None = None) -> int:
    """Sync (or check) the generated blocks; returns the exit code."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("files", nargs="*", type=Path, help="default: README.md and docs/*.md")
    ap.add_argument("--results", type=Path, default=ROOT / "results", help="committed results")
    ap.add_argument("--check", action="store_true", help="only compare; exit 1 when out of date")
    a = ap.parse_args(argv)
    files = a.files or doc_files(ROOT)
    try:
        stale = sync(files, a.results, check=a.check)
    except ValueError as e:
        print(f"ood-bench docs: {e}", file=sys.stderr)
        return 2
    for f, name in stale:
        shown = f.relative_to(ROOT) if f.resolve().is_relative_to(ROOT) else f
        verb = "out of date" if a.check else "rewritten"
        print(f"{shown}: block '{name}' {verb}", file=sys.stderr if a.check else sys.stdout)
    if a.check and stale:
        print("fix: ood-bench docs (never edit a generated block by hand)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

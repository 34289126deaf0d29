#!/usr/bin/env python
"""Rewrite the figures quoted in README.md and docs/*.md from the committed results.

    python scripts/sync_docs.py            # rewrite every <!-- generated:NAME --> block
    python scripts/sync_docs.py --check    # exit 1 and name each block that is out of date

Every result figure in the documentation sits in a generated block whose text
``docsync.GENERATORS[NAME]`` (scripts/docsync.py) computes from the files under ``results/``;
run this after the results change (``make paper`` does), never edit a block by hand.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from docsync import doc_files, sync  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Sync (or check) the generated blocks; returns the exit code."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="*", type=Path, help="default: README.md and docs/*.md")
    ap.add_argument("--results", type=Path, default=ROOT / "results", help="committed results")
    ap.add_argument("--check", action="store_true", help="only compare; exit 1 when out of date")
    a = ap.parse_args(argv)
    files = a.files or doc_files(ROOT)
    try:
        stale = sync(files, a.results, check=a.check)
    except ValueError as e:
        print(f"sync_docs: {e}", file=sys.stderr)
        return 2
    for f, name in stale:
        shown = f.relative_to(ROOT) if f.resolve().is_relative_to(ROOT) else f
        verb = "out of date" if a.check else "rewritten"
        print(f"{shown}: block '{name}' {verb}", file=sys.stderr if a.check else sys.stdout)
    if a.check and stale:
        print(
            "fix: python scripts/sync_docs.py (never edit a generated block by hand)",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

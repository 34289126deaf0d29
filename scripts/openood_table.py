"""Status table of every OpenOOD postprocessor from a collected sweep CSV.

    python scripts/openood_table.py results/raw/openood_all.csv [--out table.md]

One row per ``openood_*`` detector: the adapter's status (``ok``; ``ok*``: runs, see the note
in ``ood_bench.detectors.openood.NOTES``; ``unsupported``/``ResNet-only``: refused, reason in
``UNSUPPORTED``; ``error``: failed) and, per benchmark, AUROC, both FPR95 readings
(``fpr95_id``: OOD accepted at 95 % ID accepted; ``fpr95_ood``: ID rejected at 95 % OOD
recall, OpenOOD's reading), each the mean over the benchmark's OOD sets, then setup time
(``fit_s``) and inference time per image (``score_ms_per_sample``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ood_bench.docsync.libraries import markdown, table
from ood_bench.environment import require_clean_tree
from ood_bench.results import read_results


def main() -> int:
    """Print (and with ``--out`` write) the Markdown status table; returns the exit code."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv", type=Path)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    if a.out:
        require_clean_tree(a.out, "openood_table.py")
    text = markdown(table(read_results(a.csv)))
    if a.out:
        a.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

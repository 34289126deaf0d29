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
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ood_bench.environment import require_clean_tree  # noqa: E402
from ood_bench.results import read_results  # noqa: E402


def status_of(name: str, error: str) -> str:
    """``ok``, ``ok*`` (runs, with a note in docs/openood.md), ``unsupported`` or ``error: …``."""
    from ood_bench.detectors.openood import NOTES, UNSUPPORTED

    post = name.removeprefix("openood_")
    if error:
        if post in UNSUPPORTED:
            return "unsupported"
        if "ResNet-only" in error:
            return "ResNet-only"
        return "error: " + error.split(": ", 1)[-1][:160]
    return "ok*" if post in NOTES else "ok"


def table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (openood_* detector, benchmark): status, mean AUROC and FPR95 readings
    over the OOD sets, setup time and time per image."""
    df = df[df.detector.str.startswith("openood_")]
    rows = []
    for (det, bench), g in df.groupby(["detector", "benchmark"], sort=True):
        failed = g[g.status == "failed"]
        row = {"detector": det, "benchmark": bench}
        if len(failed):
            row["status"] = status_of(det, str(failed.error.iloc[-1]))
            rows.append(row)
            continue
        per_set = g[g.ood_dataset.notna() & (g.ood_dataset != "") & (g.ood_group != "validation")]
        mean = per_set.groupby("metric").value.mean()
        job = g[g.ood_dataset.isna() | (g.ood_dataset == "")].groupby("metric").value.mean()
        row.update(
            status=status_of(det, ""),
            auroc=mean.get("auroc"),
            fpr95_id=mean.get("fpr95_id"),
            fpr95_ood=mean.get("fpr95_ood"),
            setup_s=job.get("fit_s"),
            ms_per_image=job.get("score_ms_per_sample"),
        )
        rows.append(row)
    return pd.DataFrame(rows)


def markdown(t: pd.DataFrame) -> str:
    """The status table of :func:`table` in Markdown, one row per detector, the benchmarks'
    columns side by side (refused rows blank)."""
    wide = t.pivot_table(
        index="detector",
        columns="benchmark",
        values=["auroc", "fpr95_id", "fpr95_ood", "setup_s", "ms_per_image"],
    )
    wide.columns = [f"{b} {m}" for m, b in wide.columns]
    order = [
        f"{b} {m}"
        for b in sorted(t.benchmark.unique())
        for m in ("auroc", "fpr95_id", "fpr95_ood", "setup_s", "ms_per_image")
    ]
    wide = wide.reindex(columns=[c for c in order if c in wide.columns])
    status = t.drop_duplicates("detector").set_index("detector").status
    out = pd.concat([status, wide], axis=1).reset_index().rename(columns={"index": "detector"})
    out = out.astype(object).where(out.notna(), None)  # blank cells for refused rows
    return out.to_markdown(index=False, floatfmt=".3f", missingval="")


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

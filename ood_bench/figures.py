"""Figure helpers shared by the report scripts: reproducible PNG + PDF output."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ood_bench.atomic import atomic_write  # noqa: E402


def reproducible() -> None:
    """Fixed PDF dates (SOURCE_DATE_EPOCH) and SVG hash salt, so re-rendering gives equal files."""
    os.environ.setdefault("SOURCE_DATE_EPOCH", "0")
    plt.rcParams["svg.hashsalt"] = "ood-bench"


def save_fig(fig: plt.Figure, out: Path, name: str) -> None:
    """Write ``name.png`` and ``name.pdf`` into ``out`` atomically and close the figure."""
    for ext in ("png", "pdf"):
        meta = {"CreationDate": None} if ext == "pdf" else {}
        atomic_write(
            out / f"{name}.{ext}",
            lambda p, e=ext, m=meta: fig.savefig(
                p, format=e, dpi=150, bbox_inches="tight", metadata=m
            ),
        )
    plt.close(fig)

"""What the selection chooses on one benchmark and backbone, and how the chosen preset does on
the test OOD sets beside other detectors on the same features (a single-seed probe, not
committed results; the job rows come from ``python -m ood_bench.run detector=stat_selected``).

    python -m ood_bench.selection.probe benchmark=digits [overrides...] \
        [--compare stat_maha_energy,stat_masf_classref]
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np

from ood_bench.config import build, compose
from ood_bench.metrics import ood_metrics
from ood_bench.pipeline import prepare, seed_everything
from ood_bench.selection import run_selection, selection_space
from ood_bench.selection.protocol import chosen_config


def scores_of(cfg, det_cfg, prep) -> dict[str, dict[str, float]]:
    """AUROC and FPR95 (ID positive) per test OOD set of one detector, and their mean."""
    seed_everything(int(cfg.seed))
    det = build(det_cfg, "detector")
    if "model" in det.needs:
        det.bind(prep.backbone.model, cfg.device)
    det.fit(prep.fit, prep.calib)
    s_id = det.score(prep.test, "test")
    out = {}
    for name, f in prep.ood.items():
        m = ood_metrics(s_id, det.score(f, name))
        out[name] = {"auroc": m["auroc"], "fpr95": m["fpr95_id"]}
    out["mean"] = {k: float(np.mean([v[k] for v in out.values()])) for k in ("auroc", "fpr95")}
    return out


def main() -> None:
    """Prepare (val cut), select, then score the chosen preset and the others."""
    ap = argparse.ArgumentParser()
    ap.add_argument("overrides", nargs="*")
    ap.add_argument("--compare", default="stat_maha_energy,stat_masf_classref")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    cfg = compose(["detector=stat_selected", *args.overrides])
    prep = prepare(cfg)
    space = selection_space(cfg)
    t0 = time.perf_counter()
    sel, cached = run_selection(
        cfg, space, prep.bench, prep.backbone.sha256, prep.extractor, prep.fit
    )
    wall = time.perf_counter() - t0
    print(
        f"selection: {sel.label} ({sel.criterion} {sel.value:.4f}; {sel.n_candidates} "
        f"candidates; {'cached' if cached else f'searched in {wall:.1f} s incl. extraction'})"
    )
    print(sel.table.head(8).to_string())
    rows = {"stat_selected": scores_of(cfg, chosen_config(cfg.detector, sel), prep)}
    for name in filter(None, args.compare.split(",")):
        others = [o for o in args.overrides if not o.lstrip("+").startswith("detector.")]
        rows[name] = scores_of(cfg, compose([f"detector={name}", *others]).detector, prep)
    sets = list(next(iter(rows.values())))
    print("| detector | " + " | ".join(f"{s} AUROC / FPR95" for s in sets) + " |")
    print("|---" * (len(sets) + 1) + "|")
    for name, r in rows.items():
        cells = [f"{100 * r[s]['auroc']:.2f} / {100 * r[s]['fpr95']:.2f}" for s in sets]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print(f"test: {len(prep.test)} ID images; val: {len(prep.bench.split('val'))}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""The paper's analyses of a statistical preset across the committed benchmarks, in one command.

    python scripts/ablate_detector.py                       # stat_maha_energy, 3 seeds
    python scripts/ablate_detector.py --detector stat_drood --seeds 0 --benchmarks digits

For each benchmark (its backbone as in ``make paper``) and seed, the preset is fitted on the
cached features of the same splits the sweep uses, then:

- **ablation**: each design choice switched off in turn — ``reduction`` (max → mean over space),
  ``statistic`` (Mahalanobis → Euclidean), ``reference`` (predicted-class means → one global
  mean), ``combination`` (all layers → the penultimate layer alone), ``combiner`` (Fisher →
  Cauchy), ``output test`` (energy → none), ``calibration`` (conformal → the combiner's own
  p-value: AUROC is unchanged, the realised FPR at alpha is what moves) — with mean AUROC,
  FPR95 (ID positive) and the realised FPR at 0.05 (``ablation.csv``, ``ablation.md``,
  ``ablation.png``);
- **per-layer contributions**: each layer's p-value alone as a score and the preset with that
  layer left out, AUROC per OOD set (``layers.csv``, ``layers.png``);
- **calibration curve**: realised FPR on ID test against alpha, with the 95 % binomial band of
  every seed (``calibration.csv``, ``calibration.png``).

Benchmarks whose data is missing (no ``data_root``) or whose checkpoint is not trained yet
(``cifar10_offline``: ``scripts/train_backbone.py``, see conf/backbone/cifar_cnn.yaml) are
skipped with a log line. Writes into
``results/analysis/<detector>`` by default (refused from uncommitted code, see
``ood_bench.environment.require_clean_tree``). Trailing ``key=value`` words are Hydra overrides
applied to every benchmark (e.g. ``cache_dir=...``).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from scipy import stats as sps

from ood_bench.atomic import atomic_write_text
from ood_bench.config import build, compose
from ood_bench.detectors.stat import StatDetector
from ood_bench.environment import git_sha, require_clean_tree
from ood_bench.errors import CheckpointError, ConfigError, DataError
from ood_bench.figures import reproducible, save_fig
from ood_bench.metrics import ood_metrics
from ood_bench.pipeline import prepare

log = logging.getLogger("ablate_detector")
ALPHAS = np.linspace(0.0, 0.2, 41)[1:]
CIFAR_CHECKPOINT = "checkpoints/cifar_cnn_cifar10_offline_s0.pt"
# benchmark -> the backbone options its committed sweep uses (Makefile, `make paper`)
BENCHMARKS: dict[str, list[str]] = {
    "digits": ["backbone=digits_cnn"],
    "digits_open": ["backbone=digits_cnn"],
    "mnist_fashion": ["backbone=lenet"],
    "mnist_split": ["backbone=lenet"],
    "cifar10_offline": ["backbone=cifar_cnn", f"backbone.checkpoint={CIFAR_CHECKPOINT}"],
}
# name -> the option values that switch one design choice off (applied to the preset)
VARIANTS: dict[str, dict[str, Any]] = {
    "full": {},
    "reduction: mean": {"reduction": "mean"},
    "statistic: euclidean": {"statistic": "euclidean"},
    "reference: global mean": {"center": "global"},
    "layers: penultimate only": {"layers": "penultimate"},
    "combiner: cauchy": {"across": "cauchy"},
    "output test: none": {"output_test": None},
    "calibration: none": {"calibrate": False},
}


def save_csv(df: pd.DataFrame, out: Path, name: str) -> None:
    """Write ``df`` atomically to ``out/<name>.csv``."""
    atomic_write_text(out / f"{name}.csv", df.to_csv(index=False, float_format="%.6g"))


def variant(cfg_det: Any, change: dict[str, Any], penultimate: str) -> StatDetector:
    """The preset with ``change`` applied (``layers: penultimate`` = the backbone's
    penultimate tap alone)."""
    det = build(cfg_det, "detector")
    if not isinstance(det, StatDetector):
        raise SystemExit(f"{cfg_det.name} is not a statistical detector (stat_*)")
    return det.with_options(
        **{key: [penultimate] if value == "penultimate" else value for key, value in change.items()}
    )


def evaluate(det: StatDetector, prep: Any) -> tuple[list[dict[str, Any]], np.ndarray]:
    """Per-OOD-set AUROC / FPR95 (ID positive) of a fitted detector, and its ID test p-values."""
    s_id, p_id = det.score(prep.test), det.pvalues(prep.test)
    rows = []
    for name, f in prep.ood.items():
        m = ood_metrics(s_id, det.score(f))
        group = next(s.group for s in prep.bench.ood if s.name == name)
        rows.append(
            {
                "ood_dataset": name,
                "ood_group": group,
                "auroc": m["auroc"],
                "fpr95_id": m["fpr95_id"],
                "fpr_at_0.05": float(np.mean(p_id <= 0.05)),
            }
        )
    return rows, p_id


def tap_name(key: str) -> str:
    """The tap behind a feature key: ``block1.max`` → ``block1`` (flat taps unchanged)."""
    base, _, red = key.rpartition(".")
    return base if base and red in ("max", "mean") else key


def layer_rows(det: StatDetector, cfg_det: Any, prep: Any) -> list[dict[str, Any]]:
    """Each layer's p-value alone (−log p as score) and the preset without that layer."""
    p_id, rows = det.layer_pvalues(prep.test), []
    p_ood = {name: det.layer_pvalues(f) for name, f in prep.ood.items()}
    for j, key in enumerate(det.keys_):
        if key == "logits":
            without = build(cfg_det, "detector").with_options(output_test=None)
        else:
            kept = [tap_name(k) for k in det.keys_ if k not in (key, "logits")]
            without = build(cfg_det, "detector").with_options(layers=kept)
        without.fit(prep.fit, prep.calib)
        s_wo = without.score(prep.test)
        for name, f in prep.ood.items():
            alone = ood_metrics(-np.log(p_id[:, j]), -np.log(p_ood[name][:, j]))["auroc"]
            left_out = ood_metrics(s_wo, without.score(f))["auroc"]
            rows.append(
                {"layer": key, "position": j, "ood_dataset": name, "auroc_alone": alone,
                 "auroc_without": left_out}
            )  # fmt: skip
    return rows


def calibration_rows(p_id: np.ndarray) -> list[dict[str, Any]]:
    """Realised FPR on ID test at each alpha with the 95 % binomial band."""
    lo, hi = sps.binom.interval(0.95, len(p_id), ALPHAS)
    n = len(p_id)
    return [
        {"alpha": a, "fpr": float(np.mean(p_id <= a)), "band_lo": lo[i] / n, "band_hi": hi[i] / n}
        for i, a in enumerate(ALPHAS)
    ]


def ablation_table(df: pd.DataFrame, detector: str, sha: str) -> str:
    """Markdown: rows = variants, columns = benchmarks; cells AUROC / FPR95 / FPR@0.05 (means
    over OOD sets, then over seeds ± std)."""
    per_seed = df.groupby(["variant", "benchmark", "seed"], sort=False)[
        ["auroc", "fpr95_id", "fpr_at_0.05"]
    ].mean()
    mean = per_seed.groupby(["variant", "benchmark"], sort=False).mean()
    std = per_seed.groupby(["variant", "benchmark"], sort=False).std().fillna(0.0)
    benches = list(dict.fromkeys(df["benchmark"]))
    lines = [
        f"# Ablation of {detector}",
        "",
        f"Generated by `scripts/ablate_detector.py` at commit {sha} from `ablation.csv`. Cell: "
        "mean AUROC ± std over seeds / FPR95 (ID positive) / realised FPR at alpha = 0.05 on "
        "ID test (means over the OOD sets; seeds: "
        f"{', '.join(map(str, sorted(df['seed'].unique())))}).",
        "",
        "| variant | " + " | ".join(benches) + " |",
        "|---|" + "---|" * len(benches),
    ]
    for v in dict.fromkeys(df["variant"]):
        cells = []
        for b in benches:
            m, s = mean.loc[(v, b)], std.loc[(v, b)]
            cells.append(
                f"{m['auroc']:.4f} ± {s['auroc']:.4f} / {m['fpr95_id']:.3f} / "
                f"{m['fpr_at_0.05']:.3f}"
            )
        lines.append(f"| {v} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def figures(abl: pd.DataFrame, layers: pd.DataFrame, cal: pd.DataFrame, out: Path, name: str):
    """ablation.png (ΔAUROC vs full), layers.png (alone / without), calibration.png."""
    per = abl.groupby(["variant", "benchmark"], sort=False)["auroc"].mean().unstack()
    delta = (per - per.loc["full"]).drop(index="full")
    fig, ax = plt.subplots(figsize=(1.6 + 1.5 * per.shape[1], 0.9 + 0.45 * len(delta)))
    lim = max(float(np.abs(delta.to_numpy()).max()), 1e-3)
    im = ax.imshow(delta.to_numpy(), cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
    ax.set_xticks(range(delta.shape[1]), delta.columns, rotation=20, ha="right", fontsize=8)
    ax.set_yticks(range(len(delta)), delta.index, fontsize=8)
    for i in range(delta.shape[0]):
        for j in range(delta.shape[1]):
            ax.text(j, i, f"{delta.iat[i, j]:+.4f}", ha="center", va="center", fontsize=7)
    fig.colorbar(im, ax=ax, fraction=0.04, label="ΔAUROC vs full")
    ax.set_title(f"{name}: each design choice switched off", fontsize=10)
    save_fig(fig, out, "ablation")

    benches = list(dict.fromkeys(layers["benchmark"]))
    fig, axes = plt.subplots(1, len(benches), figsize=(3.2 * len(benches), 3.0), squeeze=False)
    for ax, b in zip(axes[0], benches, strict=True):
        g = (
            layers[layers["benchmark"] == b]
            .groupby(["position", "layer"])[["auroc_alone", "auroc_without"]]
            .mean()
        )
        g.index = [layer for _, layer in g.index]
        g.columns = ["layer alone", "preset without it"]
        g.plot.bar(ax=ax, rot=45, legend=False, fontsize=7)
        full = per.loc["full", b]
        ax.axhline(full, color="k", lw=0.8, ls="--")
        ax.set_ylim(max(0.0, float(g.to_numpy().min()) - 0.05), 1.0)
        ax.set_title(f"{b} (full {full:.3f})", fontsize=9)
    axes[0][0].set_ylabel("AUROC (mean over OOD sets, seeds)")
    fig.legend(*axes[0][0].get_legend_handles_labels(), loc="lower center", ncol=2, fontsize=8,
               bbox_to_anchor=(0.5, -0.08))  # fmt: skip
    save_fig(fig, out, "layers")

    fig, axes = plt.subplots(1, len(benches), figsize=(3.0 * len(benches), 2.9), squeeze=False)
    for ax, b in zip(axes[0], benches, strict=True):
        for seed, g in cal[cal["benchmark"] == b].groupby("seed"):
            ax.fill_between(g["alpha"], g["band_lo"], g["band_hi"], color="0.85", lw=0)
            ax.plot(g["alpha"], g["fpr"], "o-", ms=2, lw=1, label=f"seed {seed}")
        ax.plot(ALPHAS, ALPHAS, "k--", lw=0.8)
        ax.set_title(b, fontsize=9)
        ax.set_xlabel("alpha")
    axes[0][0].set_ylabel("ID test rejected (grey: 95 % band)")
    axes[0][0].legend(fontsize=7)
    save_fig(fig, out, "calibration")


def main(argv: list[str] | None = None) -> int:
    """Run the analyses of one preset over benchmarks × seeds; returns the exit code."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--detector", default="stat_maha_energy", help="a conf/detector stat_* option")
    p.add_argument("--benchmarks", nargs="+", default=list(BENCHMARKS), choices=list(BENCHMARKS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--out", type=Path, default=None, help="default results/analysis/<detector>")
    p.add_argument("overrides", nargs="*", help="Hydra overrides for every benchmark")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    reproducible()
    out = args.out or Path("results/analysis") / args.detector
    require_clean_tree(out, "ablate_detector.py")
    abl, layers, cal = [], [], []
    for bench in args.benchmarks:
        for seed in args.seeds:
            over = [f"benchmark={bench}", *BENCHMARKS[bench], f"detector={args.detector}"]
            cfg = compose([*over, f"seed={seed}", *args.overrides])
            try:
                prep = prepare(cfg)
            except (DataError, ConfigError, CheckpointError) as e:
                if isinstance(e, ConfigError) and "no data root" not in str(e):
                    raise
                log.warning("skipping %s (its data or checkpoint is missing): %s", bench, e)
                break
            key = {"benchmark": bench, "seed": seed, "backbone": prep.backbone.name}
            for name, change in VARIANTS.items():
                det = variant(cfg.detector, change, prep.backbone.penultimate)
                det.fit(prep.fit, prep.calib)
                rows, p_id = evaluate(det, prep)
                abl += [{**key, "variant": name, **r} for r in rows]
                if name == "full":
                    cal += [{**key, **r} for r in calibration_rows(p_id)]
                    layers += [{**key, **r} for r in layer_rows(det, cfg.detector, prep)]
            log.info("%s seed %d: %d variants done", bench, seed, len(VARIANTS))
    if not abl:
        raise SystemExit("no benchmark could be built: set data_root (OOD_BENCH_DATA)")
    abl_df, layer_df, cal_df = pd.DataFrame(abl), pd.DataFrame(layers), pd.DataFrame(cal)
    save_csv(abl_df, out, "ablation")
    save_csv(layer_df, out, "layers")
    save_csv(cal_df, out, "calibration")
    atomic_write_text(out / "ablation.md", ablation_table(abl_df, args.detector, git_sha()))
    figures(abl_df, layer_df, cal_df, out, args.detector)
    log.info("wrote the ablation, layer and calibration analyses of %s to %s", args.detector, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

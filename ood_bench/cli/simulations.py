"""The simulations behind ood_bench.stats, as quotable figures (docs/statistics.md).

    ood-bench simulations --out results/stats/simulations.csv

Binormal scores (ID ~ N(0, 1), OOD ~ N(Δ, 1); ood_bench.stats.simulation) whose true metrics
are known. One row per setting of:

- ``delong_coverage``: fraction of ``draws`` data sets whose 95 % DeLong interval (``wald`` or
  ``logit``) covers the true AUROC Φ(Δ/√2); target 0.95 ± 0.015;
- ``delong_type1``: rejection rate at 5 % of DeLong's paired test between two detectors with
  the same true AUROC and scores correlated by ρ; target ≤ 0.06;
- ``variance_agreement``: largest absolute difference between the fast DeLong covariance and
  the brute-force O(n·m) placement values over small random fixtures (half with ties);
- ``bootstrap_coverage`` / ``bootstrap_type1``: the same for the stratified (paired) bootstrap
  of FPR95 and TPR at 5 % FPR, fewer draws, target 0.95 ± 0.03 / ≤ 0.07.

Proportions carry their exact 95 % Clopper-Pearson interval (``mc_low``, ``mc_high``): the
Monte-Carlo uncertainty of the figure itself.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
from scipy import stats

from ood_bench.atomic import atomic_write
from ood_bench.environment import git_sha, require_clean_tree
from ood_bench.stats.simulation import (
    bootstrap_coverage,
    bootstrap_type1,
    delong_coverage,
    delong_type1,
    true_metric,
    variance_agreement,
)

COVERAGE_GRID = [(n, d) for n in (100, 300, 1000) for d in (1.0, 2.0, 3.0, 4.0)]
TYPE1_GRID = [(n, d, r) for n in (100, 1000) for d in (1.0, 3.0) for r in (0.0, 0.5, 0.9)]
BOOT_METRICS = ("fpr95_id", "fpr95_ood", "tpr_at_fpr")


def _proportion(k: int, draws: int) -> dict[str, float]:
    ci = stats.binomtest(k, draws).proportion_ci(0.95, method="exact")
    return {"value": k / draws, "mc_low": ci.low, "mc_high": ci.high}


def simulate(draws: int, boot_draws: int, n_resamples: int, seed: int) -> pd.DataFrame:
    """Every simulation's rows (see the module docstring)."""
    rows = []

    def row(simulation: str, target: tuple[float, float], **r: object) -> None:
        rows.append(
            {"simulation": simulation, **r, "target_low": target[0], "target_high": target[1]}
        )

    for n, delta in COVERAGE_GRID:
        for method in ("wald", "logit"):
            cov = delong_coverage(draws, n, n, delta, 0.95, method, seed)
            row(
                "delong_coverage", (0.935, 0.965), method=method, metric="auroc", n_id=n,
                n_ood=n, delta=delta, truth=true_metric("auroc", delta), draws=draws,
                **_proportion(round(cov * draws), draws),
            )  # fmt: skip
    for n, delta, rho in TYPE1_GRID:
        rate = delong_type1(draws, n, n, delta, rho, 0.05, seed)
        row(
            "delong_type1", (0.0, 0.06), method="delong", metric="auroc", n_id=n, n_ood=n,
            delta=delta, rho=rho, truth=true_metric("auroc", delta), draws=draws,
            **_proportion(round(rate * draws), draws),
        )  # fmt: skip
    worst_abs, worst_rel = variance_agreement(fixtures=1000, max_n=40, k=3, seed=seed)
    row(
        "variance_agreement", (0.0, 1e-12), method="delong_vs_bruteforce", metric="auroc",
        draws=1000, value=worst_abs, relative=worst_rel,
    )  # fmt: skip
    n, delta = 500, 2.0
    for metric in BOOT_METRICS:
        cov = bootstrap_coverage(boot_draws, n, n, delta, metric, n_resamples, 0.95, seed=seed)
        row(
            "bootstrap_coverage", (0.92, 0.98), method="percentile", metric=metric, n_id=n,
            n_ood=n, delta=delta, truth=true_metric(metric, delta), draws=boot_draws,
            n_resamples=n_resamples, **_proportion(round(cov * boot_draws), boot_draws),
        )  # fmt: skip
    for metric in BOOT_METRICS:
        rate = bootstrap_type1(boot_draws, n, n, delta, 0.5, metric, n_resamples, seed=seed)
        row(
            "bootstrap_type1", (0.0, 0.07), method="paired_bootstrap", metric=metric, n_id=n,
            n_ood=n, delta=delta, rho=0.5, truth=true_metric(metric, delta), draws=boot_draws,
            n_resamples=n_resamples, **_proportion(round(rate * boot_draws), boot_draws),
        )  # fmt: skip
    df = pd.DataFrame(rows)
    df["within_target"] = (df["value"] >= df["target_low"]) & (df["value"] <= df["target_high"])
    df["seed"] = seed
    return df


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def summary(df: pd.DataFrame) -> str:
    """The figures quoted in docs/statistics.md, as Markdown (tests/test_stats.py checks that
    the page quotes the committed CSV's)."""
    out = []
    cov = df[df["simulation"] == "delong_coverage"]
    draws = int(cov["draws"].iloc[0])
    cells = cov.pivot_table(index="n_id", columns="truth", values="value", aggfunc="first")
    wald = cov[cov["method"] == "wald"].set_index(["n_id", "truth"])["value"]
    logit = cov[cov["method"] == "logit"].set_index(["n_id", "truth"])["value"]
    header = [f"AUROC {t:.3f}" for t in cells.columns]
    out.append(
        f"DeLong 95 % interval, coverage of the true AUROC over {draws} binormal draws "
        "(`logit`, the default / `wald`; target 95 ± 1.5 %):\n"
    )
    out.append("| n_id = n_ood | " + " | ".join(header) + " |")
    out.append("|---|" + "---|" * len(header))
    for n in cells.index:
        row = [f"{_pct(logit[(n, t)])} / {_pct(wald[(n, t)])}" for t in cells.columns]
        out.append(f"| {int(n)} | " + " | ".join(row) + " |")
    t1 = df[df["simulation"] == "delong_type1"]
    rhos = sorted(t1["rho"].unique())
    out.append(
        f"\nDeLong's paired test, type-I error at 5 % over {int(t1['draws'].iloc[0])} draws "
        "(two detectors with the same true AUROC, scores correlated by ρ; target ≤ 6 %; in "
        "brackets the exact 95 % interval of the Monte-Carlo estimate):\n"
    )
    out.append("| n_id = n_ood | AUROC | " + " | ".join(f"ρ = {r:g}" for r in rhos) + " |")
    out.append("|---|---|" + "---|" * len(rhos))
    for (n, truth), g in t1.groupby(["n_id", "truth"]):
        by_rho = g.set_index("rho")
        cells = [
            f"{_pct(by_rho.loc[r, 'value'])} ({100 * by_rho.loc[r, 'mc_low']:.1f}–"
            f"{100 * by_rho.loc[r, 'mc_high']:.1f})"
            for r in rhos
        ]
        out.append(f"| {int(n)} | {truth:.3f} | " + " | ".join(cells) + " |")
    va = df[df["simulation"] == "variance_agreement"].iloc[0]
    out.append(
        f"\nDeLong's variance, fast (midranks) against brute force (every pair), "
        f"{int(va['draws'])} random fixtures of 3 detectors, 2–40 samples per class, half with "
        f"ties: largest absolute difference {va['value']:.1e}, relative {va['relative']:.1e}.\n"
    )
    bc = df[df["simulation"] == "bootstrap_coverage"].set_index("metric")
    bt = df[df["simulation"] == "bootstrap_type1"].set_index("metric")
    first = bc.iloc[0]
    auroc = true_metric("auroc", first["delta"])
    out.append(
        f"Stratified bootstrap ({int(first['n_resamples'])} resamples, "
        f"{int(first['n_id'])} + {int(first['n_ood'])} samples, AUROC {auroc:.3f}, "
        f"{int(first['draws'])} draws; targets 95 ± 3 % and ≤ 7 %):\n"
    )
    out.append(
        "| metric | true value | 95 % interval coverage | paired test, type-I at 5 % (ρ = 0.5) |"
    )
    out.append("|---|---|---|---|")
    for metric in bc.index:
        out.append(
            f"| `{metric}` | {bc.loc[metric, 'truth']:.4f} | {_pct(bc.loc[metric, 'value'])} | "
            f"{_pct(bt.loc[metric, 'value'])} |"
        )
    out.append(f"\n(`results/stats/simulations.csv`, commit `{df['git_sha'].iloc[0]}`)")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Simulate and write the CSV (with the commit that produced it); print the table."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="CSV to write")
    ap.add_argument("--draws", type=int, default=2000, help="data sets per DeLong row")
    ap.add_argument("--boot-draws", type=int, default=500, help="data sets per bootstrap row")
    ap.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples per set")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--summary", action="store_true", help="print the docs' figures from --out and exit"
    )
    a = ap.parse_args(argv)
    if a.summary:
        print(summary(pd.read_csv(a.out)), end="")
        return 0
    require_clean_tree(a.out, "ood-bench simulations")
    t = time.perf_counter()
    df = simulate(a.draws, a.boot_draws, a.resamples, a.seed).assign(git_sha=git_sha())
    atomic_write(a.out, lambda p: df.to_csv(p, index=False, float_format="%.6g"))
    print(df.drop(columns=["git_sha"]).to_markdown(index=False, floatfmt=".4g"))
    print(summary(df))
    print(f"wrote {a.out} ({time.perf_counter() - t:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

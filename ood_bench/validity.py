"""Is every detector's guarantee kept? The realised false-alarm rate against its exact band, and
Benjamini–Hochberg's false discovery rate over many mixed batches, from committed results.

    ood-bench validity results --out results/validity

- **FPR band**: a marginal conformal p-value from ``n_calib`` calibration scores rejects a fresh
  ID sample with probability U_(k) given the calibration set, k = floor(alpha (n_calib + 1)),
  and U_(k) ~ Beta(k, n_calib + 1 - k) over calibration sets; so the number of the ``n`` ID test
  samples rejected is Beta-binomial(n, k, n_calib + 1 - k) (exact for continuous scores, the
  shared calibration set included). A job's ``fpr_at_<a>`` outside the central 95 % of that law
  is flagged. Class-conditional and corrected calibrations reject less (per class, or with
  p-values raised): for them only a rate above the marginal band's upper end is flagged.
- **BH batches**: from a job's stored p-values (``results/scores``), ``n_batches`` batches of
  ``batch`` samples with a share ``ood_share`` of one OOD set, drawn without replacement and
  seeded; BH at alpha on each; the mean false discovery proportion (the FDR, which BH keeps
  ≤ pi0 · alpha for conformal p-values sharing one calibration set, Bates et al. 2023) and the
  mean power.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ood_bench.atomic import atomic_write
from ood_bench.environment import git_sha
from ood_bench.metrics import ALPHAS
from ood_bench.pvalues import benjamini_hochberg
from ood_bench.results import read_results
from ood_bench.scores import load
from ood_bench.verify import scores_dir_for

log = logging.getLogger("ood_bench.validity")


def conformal_fpr_band(
    n_test: int, n_calib: int, alpha: float, level: float = 0.95
) -> tuple[float, float]:
    """Central ``level`` range of the realised FPR (fraction of ``n_test`` ID samples with
    p <= alpha) of marginal conformal p-values from ``n_calib`` calibration scores: one job of
    :func:`conformal_band`."""
    lo, hi, _ = conformal_band([n_test], [n_calib], alpha, level)
    return lo, hi


def conformal_band(
    n_test: list[int], n_calib: list[int | None], alpha: float, level: float = 0.95
) -> tuple[float, float, str]:
    """The central ``level`` range of the ID test fraction rejected at ``alpha``, pooled over
    seeds, for a valid marginal conformal p-value: per seed the count is beta-binomial
    (n_test, ⌊α(n_calib + 1)⌋, n_calib + 1 − ⌊α(n_calib + 1)⌋) — the calibration draw varies —
    and the seeds are independent, so the pooled count's law is the convolution. Without the
    calibration size (no ``p_min`` row) the count is binomial(n_test, α): the calibration
    taken as fixed, a narrower band. Returns (low, high, method)."""
    from scipy import stats as sps
    from scipy.signal import fftconvolve

    known = all(c is not None and c > 0 for c in n_calib)
    pmf = np.ones(1)
    for n, c in zip(n_test, n_calib, strict=True):
        x = np.arange(n + 1)
        if known:
            a = int(np.floor(alpha * (c + 1)))
            one = sps.betabinom.pmf(x, n, max(a, 1e-9), c + 1 - a) if a > 0 else (x == 0) * 1.0
        else:
            one = sps.binom.pmf(x, n, alpha)
        pmf = np.clip(fftconvolve(pmf, one), 0, None)
    cdf = np.cumsum(pmf) / pmf.sum()
    tail = (1 - level) / 2
    lo, hi = int(np.searchsorted(cdf, tail)), int(np.searchsorted(cdf, 1 - tail))
    total = sum(n_test)
    return lo / total, hi / total, "beta-binomial" if known else "binomial"


def job_calibration(rows: pd.DataFrame) -> tuple[int | None, str]:
    """(n_calib, kind) of one job's rows: ``calib_n`` (the calibration layer) or 1/p_min - 1,
    and ``marginal``, ``class_conditional`` or ``corrected``."""
    v = rows[rows["ood_dataset"].fillna("") == ""].set_index("metric")["value"]
    kind = (
        "class_conditional"
        if v.get("calib_class_conditional", 0) == 1
        else "corrected"
        if v.get("calib_corrected", 0) == 1
        else "marginal"
    )
    if "calib_n" in v:
        return int(v["calib_n"]), kind
    if "p_min" in v and kind == "marginal" and v["p_min"] > 0:
        return int(round(1 / v["p_min"] - 1)), kind
    return None, kind


def fpr_band_table(df: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """One row per (job, alpha): the realised FPR, its band and whether it lies inside."""
    out = []
    ok = df[df["status"] == "ok"]
    for run_id, rows in ok.groupby("run_id", sort=True):
        first = rows.iloc[0]
        n_calib, kind = job_calibration(rows)
        for a in ALPHAS:
            r = rows[(rows["metric"] == f"fpr_at_{a:g}") & (rows["ood_dataset"].fillna("") == "")]
            if r.empty or n_calib is None:
                continue
            fpr, n = float(r["value"].iloc[0]), int(r["n_id"].iloc[0])
            lo, hi = conformal_fpr_band(n, n_calib, a, level)
            inside = (lo <= fpr <= hi) if kind == "marginal" else fpr <= hi
            out.append(
                {
                    "benchmark": first["benchmark"],
                    "detector": first["detector"],
                    "library": first["library"],
                    "seed": int(first["seed"]),
                    "calib_source": first["calib_source"],
                    "calibration": kind,
                    "alpha": a,
                    "n_id": n,
                    "n_calib": n_calib,
                    "fpr": fpr,
                    "band_low": lo,
                    "band_high": hi,
                    "inside": bool(inside),
                    "run_id": run_id,
                }
            )
    return pd.DataFrame(out)


def bh_batches(
    p_id: np.ndarray,
    p_ood: np.ndarray,
    alpha: float,
    batch: int = 200,
    ood_share: float = 0.1,
    n_batches: int = 200,
    seed: int = 0,
) -> dict[str, float]:
    """Mean FDP and power of BH at ``alpha`` over ``n_batches`` mixed batches (see the module
    doc); batches shrink to what the sets hold."""
    rng = np.random.default_rng(seed)
    n_ood = min(max(1, round(batch * ood_share)), len(p_ood))
    n_id = min(batch - n_ood, len(p_id))
    fdp, power = np.empty(n_batches), np.empty(n_batches)
    for b in range(n_batches):
        pi = rng.choice(p_id, n_id, replace=False)
        po = rng.choice(p_ood, n_ood, replace=False)
        reject = benjamini_hochberg(np.concatenate([pi, po]), alpha)
        false, true = int(reject[:n_id].sum()), int(reject[n_id:].sum())
        fdp[b] = false / max(false + true, 1)
        power[b] = true / n_ood
    return {
        "fdr": float(fdp.mean()),
        "fdr_se": float(fdp.std(ddof=1) / np.sqrt(n_batches)),
        "power": float(power.mean()),
        "n_id_batch": n_id,
        "n_ood_batch": n_ood,
        "n_batches": n_batches,
    }


def bh_table(df: pd.DataFrame, scores_dir: Path, **kw: float) -> pd.DataFrame:
    """BH over mixed batches for every job with stored p-values, every OOD set and level."""
    out = []
    ok = df[df["status"] == "ok"]
    for run_id, rows in ok.groupby("run_id", sort=True):
        path = scores_dir / f"{run_id}.npz"
        if not path.is_file():
            continue
        sc = load(path)
        if sc.id_set.pvalue is None:
            continue
        first = rows.iloc[0]
        for name, s in sc.ood_sets.items():
            if s.pvalue is None:
                continue
            for a in ALPHAS:
                res = bh_batches(sc.id_set.pvalue, s.pvalue, a, **kw)  # type: ignore[arg-type]
                out.append(
                    {
                        "benchmark": first["benchmark"],
                        "detector": first["detector"],
                        "library": first["library"],
                        "seed": int(first["seed"]),
                        "ood_dataset": name,
                        "alpha": a,
                        **res,
                        "run_id": run_id,
                    }
                )
    return pd.DataFrame(out)


def _write(df: pd.DataFrame, path: Path) -> Path:
    return atomic_write(path, lambda p: df.to_csv(p, index=False, float_format="%.6g"))


def main(argv: list[str] | None = None) -> int:
    """Write ``fpr_band.csv`` and ``bh_batches.csv`` for every CSV in ``RESULTS/raw``."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("results", type=Path, help="results folder (its raw/ and scores/)")
    p.add_argument("--out", type=Path, required=True, help="folder for the two CSVs")
    p.add_argument("--only", nargs="*", help="benchmark CSV stems (default: all in raw/)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    bands, bh = [], []
    for csv in sorted((args.results / "raw").glob("*.csv")):
        if args.only and csv.stem not in args.only:
            continue
        df = read_results(csv)
        bands.append(fpr_band_table(df).assign(source=csv.name))
        bh.append(bh_table(df, scores_dir_for(csv)).assign(source=csv.name))
    sha = git_sha()
    band = pd.concat(bands, ignore_index=True).assign(git_sha=sha)
    batches = pd.concat(bh, ignore_index=True).assign(git_sha=sha)
    _write(band, args.out / "fpr_band.csv")
    _write(batches, args.out / "bh_batches.csv")
    if len(band):
        log.info(
            "FPR at alpha inside its band: %d of %d (job, alpha) pairs → %s",
            int(band["inside"].sum()),
            len(band),
            args.out / "fpr_band.csv",
        )
    if len(batches):
        worst = batches.assign(excess=batches["fdr"] - batches["alpha"]).nlargest(1, "excess")
        log.info(
            "BH over mixed batches: %d (job, set, alpha) rows, largest mean FDR - alpha %.4f → %s",
            len(batches),
            float(worst["excess"].iloc[0]),
            args.out / "bh_batches.csv",
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

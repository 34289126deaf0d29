"""Simulations of the certification: its level under the null and its power on a fragmented class.

Under the null the batch holds only ID samples: conformal p-values against a fresh calibration
set each time (exchangeable uniform scores), and every rejection is put in some candidate
cluster (the worst case for the level: a clustering that finds structure everywhere), split
into random fragments of at least ``min_size``. Under the alternative a new class of ``n_new``
samples is rejected in full and split into fragments one smaller than j*, so no fragment alone
outnumbers the false alarms that the count allows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from ood_bench.novelty.bound import false_rejection_bound
from ood_bench.novelty.decision import NoveltyDetector
from ood_bench.novelty.result import ClusterEvidence


def conformal_rejections(
    rng: np.random.Generator, n_calib: int, m_id: int, alpha: float, reps: int
) -> np.ndarray:
    """Rejections among ``m_id`` ID samples at level ``alpha``, one fresh calibration set of
    ``n_calib`` per repetition (conformal p-values of exchangeable continuous scores)."""
    out = np.empty(reps, dtype=np.int64)
    for i in range(reps):
        calib = np.sort(rng.random(n_calib))
        test = rng.random(m_id)
        ge = n_calib - np.searchsorted(calib, test, side="left")  # calibration scores >= test
        out[i] = int(((1 + ge) / (n_calib + 1) <= alpha).sum())
    return out


def candidates(sizes: list[int], j_star: int) -> list[ClusterEvidence]:
    """Clusters of the given sizes that meet every criterion but the count."""
    return [
        ClusterEvidence(
            label=-1,
            size=int(n),
            certified=int(n) - j_star,
            n_id_ref=0,
            id_frac=0.0,
            dispersion=0.0,
            compact_threshold=1.0,
            low_level_atypical=0.0,
            known=False,
            large=True,
            compact=True,
            typical=True,
            is_new=False,
        )
        for n in sizes
    ]


def random_fragments(rng: np.random.Generator, r: int, min_size: int = 10) -> list[int]:
    """Split ``r`` rejections into random fragments of at least ``min_size`` (fewer than
    ``min_size`` left over are unclustered)."""
    sizes, left = [], r
    while left >= min_size:
        n = min(int(rng.integers(min_size, left + 1)), left)
        sizes.append(n)
        left -= n
    return sizes


def null_declarations(
    nd: NoveltyDetector, rng: np.random.Generator, n_calib: int, m: int, reps: int
) -> np.ndarray:
    """Whether ``nd`` declares a new class in each of ``reps`` ID-only batches of ``m``."""
    v = conformal_rejections(rng, n_calib, m, nd.alpha, reps)
    out = np.zeros(reps, dtype=bool)
    for i, r in enumerate(v):
        j = false_rejection_bound(m, int(r), nd.alpha, n_calib, nd.level)
        sizes = random_fragments(rng, int(r), int(nd.criteria["min_size"]))
        out[i] = nd.decide(candidates(sizes, j), j) > 0
    return out


def fragmented_declarations(
    nd: NoveltyDetector, rng: np.random.Generator, n_calib: int, m_id: int, n_new: int, reps: int
) -> np.ndarray:
    """Whether ``nd`` declares a new class of ``n_new`` rejected samples split into fragments
    of j* - 1 (each too small to be certified alone), beside ``m_id`` ID samples."""
    v = conformal_rejections(rng, n_calib, m_id, nd.alpha, reps)
    out = np.zeros(reps, dtype=bool)
    for i, r_id in enumerate(v):
        j = false_rejection_bound(m_id + n_new, int(r_id) + n_new, nd.alpha, n_calib, nd.level)
        size = max(j - 1, 1)
        out[i] = nd.decide(candidates([size] * (n_new // size), j), j) > 0
    return out


# (n_calib, m ID samples in a null batch, n_new samples of the fragmented class): the trial
# sizes of the digits, MNIST and CIFAR scenarios (half the held-out pool calibrates)
SETTINGS = [(180, 400, 400), (1000, 2000, 1000), (2000, 4000, 1000)]
RULES = ("union", "any", "each")


def simulate(reps: int, alpha: float, level: float, seed: int) -> pd.DataFrame:
    """One row per (setting, rule): realised level with its exact interval, and power."""
    rows = []
    for n_calib, m, n_new in SETTINGS:
        for rule in RULES:
            nd = NoveltyDetector(rule, alpha=alpha, level=level, criteria={"certify": rule})
            rng = np.random.default_rng([seed, n_calib, m])  # the same batches for every rule
            null = null_declarations(nd, rng, n_calib, m, reps)
            k = int(null.sum())
            ci = stats.binomtest(k, reps).proportion_ci(0.95, method="exact")
            power = fragmented_declarations(
                nd, np.random.default_rng([seed, n_calib, m, 1]), n_calib, m, n_new, reps
            ).mean()
            rows.append(
                {
                    "certify": rule,
                    "n_calib": n_calib,
                    "m": m,
                    "n_new": n_new,
                    "alpha": alpha,
                    "level": level,
                    "reps": reps,
                    "null_declared": k,
                    "realised_level": k / reps,
                    "level_ci_low": ci.low,
                    "level_ci_high": ci.high,
                    "power_fragmented": float(power),
                    "seed": seed,
                }
            )
    return pd.DataFrame(rows)

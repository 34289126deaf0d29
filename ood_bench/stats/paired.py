"""Two detectors on the same samples: DeLong's paired test for AUROC, a paired stratified
bootstrap for FPR95 / TPR at a fixed FPR, and Holm's correction for one-against-all comparisons.

Holm (1979) is written by hand (five lines): scipy has no Holm step-down
(``scipy.stats.false_discovery_control`` is Benjamini–Hochberg/Yekutieli only) and statsmodels,
which has it, is not a dependency of ood-bench (only of the ``openood`` extra); the tests pin
:func:`holm` against ``statsmodels.stats.multitest.multipletests(method="holm")`` where installed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy.stats import norm

from ood_bench.errors import ScoreError
from ood_bench.metrics import _check
from ood_bench.stats.intervals import (
    BOOTSTRAP_METRICS,
    bootstrap_distribution,
    delong,
    point_estimate,
)


@dataclass(frozen=True)
class PairedResult:
    """``a − b`` for one metric: estimates, difference, its interval and a two-sided p-value."""

    metric: str
    estimate_a: float
    estimate_b: float
    diff: float
    low: float
    high: float
    p_value: float
    level: float
    method: str
    n_resamples: int | None = None  # bootstrap only
    seed: int | None = None

    def as_dict(self) -> dict[str, float | int | str | None]:
        return asdict(self)


def _pair(a: np.ndarray, b: np.ndarray, what: str) -> np.ndarray:
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ScoreError(
            f"paired comparison: the two detectors have {len(a)} and {len(b)} {what} scores; "
            "score both on the same samples, in the same order"
        )
    return np.stack([a, b])


def delong_test(
    id_a: np.ndarray,
    ood_a: np.ndarray,
    id_b: np.ndarray,
    ood_b: np.ndarray,
    level: float = 0.95,
) -> PairedResult:
    """DeLong's paired test of ``AUROC(a) = AUROC(b)`` (DeLong et al. 1988): the difference
    over its standard error ``sqrt(S_aa + S_bb − 2 S_ab)``, normal two-sided p-value."""
    for s_id, s_ood in ((id_a, ood_a), (id_b, ood_b)):
        _check(s_id, s_ood)
    auroc, cov = delong(_pair(id_a, id_b, "ID"), _pair(ood_a, ood_b, "OOD"))
    diff = float(auroc[0] - auroc[1])
    var = max(float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]), 0.0)
    se = np.sqrt(var)
    # identical placements (se 0): no evidence of a difference unless the AUROCs differ
    p = float(2 * norm.sf(abs(diff) / se)) if se > 0 else (1.0 if diff == 0 else 0.0)
    half = float(norm.ppf(0.5 + level / 2) * se)
    return PairedResult(
        "auroc", float(auroc[0]), float(auroc[1]), diff, diff - half, diff + half, p,
        level, "delong",
    )  # fmt: skip


def paired_bootstrap(
    id_a: np.ndarray,
    ood_a: np.ndarray,
    id_b: np.ndarray,
    ood_b: np.ndarray,
    metric: str = "fpr95_id",
    n_resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
    fpr: float = 0.05,
) -> PairedResult:
    """Paired stratified bootstrap of ``metric(a) − metric(b)``: each resample draws the same
    ID and OOD samples for both detectors. Percentile interval; two-sided p-value from the
    resampled differences shifted to the null, ``(1 + #{|d* − d| ≥ |d|}) / (B + 1)``."""
    if metric not in BOOTSTRAP_METRICS:
        raise ValueError(f"unknown bootstrap metric {metric!r}: use one of {BOOTSTRAP_METRICS}")
    ea = point_estimate(id_a, ood_a, metric, fpr)
    eb = point_estimate(id_b, ood_b, metric, fpr)
    dist = bootstrap_distribution(
        _pair(id_a, id_b, "ID"), _pair(ood_a, ood_b, "OOD"), metric, n_resamples, seed, fpr
    )
    d_star = dist[:, 0] - dist[:, 1]
    diff = ea - eb
    low, high = np.quantile(d_star, [0.5 - level / 2, 0.5 + level / 2])
    extreme = int(np.sum(np.abs(d_star - diff) >= abs(diff) - 1e-12))
    p = (1 + extreme) / (n_resamples + 1)
    return PairedResult(
        metric, ea, eb, diff, float(low), float(high), float(p), level, "paired_bootstrap",
        n_resamples, seed,
    )  # fmt: skip


def holm(pvalues: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values (Holm 1979), in the input order: reject hypothesis i
    at family-wise level a when its adjusted p-value is ≤ a."""
    p = np.asarray(pvalues, dtype=np.float64)
    order = np.argsort(p, kind="stable")
    adjusted = np.maximum.accumulate((len(p) - np.arange(len(p))) * p[order])
    out = np.empty_like(p)
    out[order] = np.minimum(adjusted, 1.0)
    return out


LOWER_IS_BETTER = {"fpr95_id", "fpr95_ood"}


def compare_with_reference(
    scores: Mapping[str, tuple[np.ndarray, np.ndarray]],
    reference: str | None = None,
    metric: str = "auroc",
    alpha: float = 0.05,
    n_resamples: int = 2000,
    seed: int = 0,
    fpr: float = 0.05,
) -> pd.DataFrame:
    """One detector against every other on the same samples, Holm-corrected.

    ``scores`` maps a detector's name to its ``(scores_id, scores_ood)``; ``reference`` defaults
    to the best detector on ``metric``. ``auroc`` uses DeLong's test, the bootstrap metrics the
    paired bootstrap (same seed, so the same resamples, for every pair). One row per other
    detector: the estimates, ``diff`` = reference − other, ``p_value``, ``p_holm`` and
    ``different`` (``p_holm ≤ alpha``); a detector not ``different`` from the best is tied with it.
    """
    if len(scores) < 2:
        raise ValueError(f"compare_with_reference needs at least 2 detectors, got {len(scores)}")
    if metric == "auroc":

        def estimate(s: tuple[np.ndarray, np.ndarray]) -> float:
            return float(delong(*s)[0][0])
    elif metric in BOOTSTRAP_METRICS:

        def estimate(s: tuple[np.ndarray, np.ndarray]) -> float:
            return point_estimate(*s, metric, fpr)
    else:
        raise ValueError(f"unknown metric {metric!r}: use 'auroc' or one of {BOOTSTRAP_METRICS}")
    if reference is None:
        est = {name: estimate(s) for name, s in scores.items()}
        pick = min if metric in LOWER_IS_BETTER else max
        reference = pick(est, key=est.__getitem__)
    if reference not in scores:
        raise KeyError(f"reference detector {reference!r} is not among {sorted(scores)}")
    rows = []
    ref = scores[reference]
    for name, s in scores.items():
        if name == reference:
            continue
        if metric == "auroc":
            r = delong_test(ref[0], ref[1], s[0], s[1])
        else:
            r = paired_bootstrap(
                ref[0], ref[1], s[0], s[1], metric, n_resamples, seed=seed, fpr=fpr
            )
        rows.append({"reference": reference, "detector": name, **r.as_dict()})
    df = pd.DataFrame(rows)
    df["p_holm"] = holm(df["p_value"].to_numpy())
    df["different"] = df["p_holm"] <= alpha
    return df

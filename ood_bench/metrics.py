"""OOD metrics through scikit-learn, with every convention written down.

Conventions (pinned by tests/test_metrics.py):

- A score is **higher for more OOD**, everywhere.
- ``auroc``: area under the ROC curve with OOD as the positive class (0.5 = chance, 1 = perfect).
- ``aupr_in``: average precision with ID as the positive class (scores negated).
- ``aupr_out``: average precision with OOD as the positive class.
- ``fpr95_id``: fraction of OOD **accepted** at the threshold where 95 % of ID is accepted —
  the reading of the ODIN / Energy papers (ID is the positive class, TPR = ID accepted).
- ``fpr95_ood``: fraction of ID **rejected** at the threshold where 95 % of OOD is rejected —
  the reading of pytorch-ood's ``OODMetrics`` (``FPR95TPR``) and OpenOOD (OOD positive).
- ``det_err``: minimum over thresholds of ``0.5·(1 − TPR) + 0.5·FPR`` (equal priors).
- ``id_acc``: top-1 accuracy of the backbone on the ID test set.

``aupr_in``/``aupr_out`` are scikit-learn's average precision (step interpolation); pytorch-ood's
AUPR-IN/AUPR-OUT are trapezoidal areas, larger by about 0.005 on large untied sets and up to ~0.03
with many ties (tests/test_metrics.py pins the exact difference).

"At 95 %" means the first ROC point whose TPR reaches 0.95 (no interpolation), as pytorch-ood.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from ood_bench.errors import ScoreError

OOD_METRICS = ("auroc", "aupr_in", "aupr_out", "fpr95_id", "fpr95_ood", "det_err")


def _check(scores_id: np.ndarray, scores_ood: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s_id = np.asarray(scores_id, dtype=np.float64).ravel()
    s_ood = np.asarray(scores_ood, dtype=np.float64).ravel()
    if len(s_id) == 0 or len(s_ood) == 0:
        raise ScoreError("metrics need at least one ID and one OOD score")
    if not (np.isfinite(s_id).all() and np.isfinite(s_ood).all()):
        raise ScoreError("scores contain NaN or infinite values")
    return s_id, s_ood


def fpr_at_tpr(scores: np.ndarray, positive: np.ndarray, tpr: float = 0.95) -> float:
    """FPR at the first ROC threshold whose TPR reaches ``tpr`` (higher score = positive)."""
    fpr, tpr_curve, _ = roc_curve(positive, scores, drop_intermediate=False)
    return float(fpr[np.searchsorted(tpr_curve, tpr, side="left")])


def ood_metrics(scores_id: np.ndarray, scores_ood: np.ndarray) -> dict[str, float]:
    """All metrics of :data:`OOD_METRICS` for one (ID test, OOD set) pair."""
    s_id, s_ood = _check(scores_id, scores_ood)
    scores = np.concatenate([s_id, s_ood])
    is_ood = np.concatenate([np.zeros(len(s_id), int), np.ones(len(s_ood), int)])
    fpr, tpr, _ = roc_curve(is_ood, scores, drop_intermediate=False)
    return {
        "auroc": float(roc_auc_score(is_ood, scores)),
        "aupr_in": float(average_precision_score(1 - is_ood, -scores)),
        "aupr_out": float(average_precision_score(is_ood, scores)),
        # ID positive: accepting = low score, so rank by -score
        "fpr95_id": fpr_at_tpr(-scores, 1 - is_ood, 0.95),
        "fpr95_ood": fpr_at_tpr(scores, is_ood, 0.95),
        "det_err": float(np.min(0.5 * (1 - tpr) + 0.5 * fpr)),
    }


def accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy; samples labelled < 0 (unlabeled) are ignored."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    keep = labels >= 0
    return float((predictions[keep] == labels[keep]).mean()) if keep.any() else float("nan")


ALPHAS = (0.01, 0.05, 0.1)


def fpr_at_alpha(p_id: np.ndarray, alphas: tuple[float, ...] = ALPHAS) -> dict[str, float]:
    """``fpr_at_<a>``: fraction of ID test samples rejected (p ≤ a) — the realised type-I error."""
    p_id = np.asarray(p_id, dtype=np.float64)
    return {f"fpr_at_{a:g}": float(np.mean(p_id <= a)) for a in alphas}


def pvalue_metrics(
    p_id: np.ndarray, p_ood: np.ndarray, alphas: tuple[float, ...] = ALPHAS
) -> dict[str, float]:
    """Decision metrics of a p-value detector against one OOD set.

    ``tpr_at_<a>``: fraction of the OOD set rejected at level a (per-sample tests).
    ``bh_fdr_<a>`` / ``bh_power_<a>``: Benjamini–Hochberg at level a on the mixed batch
    (ID test ∪ OOD set, as evaluated): realised false discovery proportion (ID among the rejected,
    0 when nothing is rejected) and power (fraction of the OOD set rejected).
    """
    from ood_bench.pvalues import benjamini_hochberg

    p_id = np.asarray(p_id, dtype=np.float64)
    p_ood = np.asarray(p_ood, dtype=np.float64)
    out = {f"tpr_at_{a:g}": float(np.mean(p_ood <= a)) for a in alphas}
    p = np.concatenate([p_id, p_ood])
    for a in alphas:
        reject = benjamini_hochberg(p, a)
        false = int(reject[: len(p_id)].sum())
        out[f"bh_fdr_{a:g}"] = false / max(int(reject.sum()), 1)
        out[f"bh_power_{a:g}"] = float(reject[len(p_id) :].mean())
    return out

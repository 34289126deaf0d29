"""Scoring a trial against the truth: clustering accuracy, NMI, ARI, and the true classes."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment


def cluster_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Clustering accuracy: the best one-to-one map clusters → classes (Hungarian,
    ``scipy.optimize.linear_sum_assignment``); unclustered points (-1) are never correct."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if len(y_true) == 0:
        return float("nan")
    classes, clusters = np.unique(y_true), np.unique(y_pred[y_pred >= 0])
    if len(clusters) == 0:
        return 0.0
    cont = np.array([[np.sum((y_pred == k) & (y_true == c)) for c in classes] for k in clusters])
    rows, cols = linear_sum_assignment(-cont)
    return float(cont[rows, cols].sum() / len(y_true))


def clustering_scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """ACC (Hungarian), NMI and ARI (scikit-learn; unclustered = one more label)."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    if len(y_true) == 0:
        return {}
    return {
        "cluster_acc": cluster_accuracy(y_true, y_pred),
        "nmi": float(normalized_mutual_info_score(y_true, y_pred)),
        "ari": float(adjusted_rand_score(y_true, y_pred)),
    }


def true_classes(source: Any) -> np.ndarray | None:
    """Original class of each sample of an OOD :class:`~ood_bench.data.base.ImageSet` (whose
    labels are -1), or None when the set holds no classes (noise, photo patches).

    - embedded digits: the near set is ``load_digits()`` images of ``near_classes`` in their
      original order (``ood_bench.data.digits.build_digits``);
    - on-disk sets seen through an index subset (``.base``, ``.indices``): the base dataset's
      targets at those indices.
    """
    if source is None:
        return None
    spec = getattr(source, "spec", {}) or {}
    if spec.get("source") == "sklearn.load_digits" and spec.get("set") == "near_classes":
        return _digits_classes(spec["classes"], len(source))
    return _subset_classes(getattr(source, "dataset", None))


def _digits_classes(classes: list, n: int) -> np.ndarray | None:
    """The ``load_digits()`` targets of ``classes`` in their original order (None unless they
    are the set's ``n`` samples)."""
    from sklearn.datasets import load_digits

    target = load_digits().target
    y = target[np.isin(target, [int(c) for c in classes])]
    return y.astype(np.int64) if len(y) == n else None


def _subset_classes(ds: Any) -> np.ndarray | None:
    """The base dataset's targets at the indices of an index subset (``.base``, ``.indices``);
    None when they are missing or unknown (-1)."""
    base, idx = getattr(ds, "base", None), getattr(ds, "indices", None)
    if base is None or idx is None:
        return None
    for attr in ("targets", "labels", "_labels"):
        if hasattr(base, attr):
            y = np.asarray(getattr(base, attr), dtype=np.int64)[np.asarray(idx)]
            return y if len(y) and (y >= 0).all() else None
    return None

"""Pin every convention documented at the top of ``ood_bench/metrics.py``.

Hand-worked cases first (each number derived in a comment), then a cross-check against
pytorch-ood 0.4.0's ``OODMetrics`` on random scores, with and without ties.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch
from pytorch_ood.metrics import OODMetrics
from sklearn.metrics import auc, precision_recall_curve

from ood_bench.errors import ScoreError
from ood_bench.metrics import OOD_METRICS, accuracy, fpr_at_tpr, ood_metrics

# --------------------------------------------------------------------------- hand-worked cases


def test_metric_names_are_the_documented_set():
    assert OOD_METRICS == ("auroc", "aupr_in", "aupr_out", "fpr95_id", "fpr95_ood", "det_err")
    assert set(ood_metrics([0.0], [1.0])) == set(OOD_METRICS)


def test_perfect_separation_higher_is_more_ood():
    m = ood_metrics([0.0, 1.0, 2.0], [3.0, 4.0])
    assert m["auroc"] == 1.0
    assert m["aupr_in"] == 1.0
    assert m["aupr_out"] == 1.0
    assert m["fpr95_id"] == 0.0
    assert m["fpr95_ood"] == 0.0
    assert m["det_err"] == 0.0


def test_reversed_scores_are_the_worst_case():
    # OOD scored *lower* than every ID sample: the detector has the sign backwards.
    m = ood_metrics([3.0, 4.0, 5.0], [0.0, 1.0])
    assert m["auroc"] == 0.0
    # accepting 95 % of ID (score <= 5) accepts every OOD sample
    assert m["fpr95_id"] == 1.0
    # rejecting 95 % of OOD (score >= 0) rejects every ID sample
    assert m["fpr95_ood"] == 1.0
    # no threshold beats the trivial one (reject nothing: TPR 0, FPR 0 → 0.5)
    assert m["det_err"] == 0.5
    # OOD positive, descending score: ID 5, ID 4, ID 3, OOD 1 (precision 1/4), OOD 0 (2/5)
    # → AP = (1/4 + 2/5) / 2 = 0.325
    assert m["aupr_out"] == pytest.approx(0.325)
    # ID positive, ascending score: OOD,OOD,ID(1/3),ID(2/4),ID(3/5) → (1/3+1/2+3/5)/3
    assert m["aupr_in"] == pytest.approx((1 / 3 + 1 / 2 + 3 / 5) / 3)


# 20 ID and 20 OOD scores, no ties:
#   ID  = 0, 1, ..., 18 (19 values) and one ID outlier at 50
#   OOD = 5.5, 10.5 (two OOD that look like ID) and 20, 21, ..., 37 (18 values)
HAND_ID = np.r_[np.arange(19.0), 50.0]
HAND_OOD = np.r_[5.5, 10.5, np.arange(20.0, 38.0)]


def test_hand_example_fpr95_id():
    # ID is the positive class and accepted = low score. 95 % of 20 ID = 19 ID accepted,
    # reached first at threshold score <= 18 (the 19 ID 0..18; 50 is rejected).
    # OOD accepted at score <= 18: {5.5, 10.5} → 2 / 20 = 0.10
    assert ood_metrics(HAND_ID, HAND_OOD)["fpr95_id"] == pytest.approx(0.10, abs=1e-12)


def test_hand_example_fpr95_ood():
    # OOD is the positive class and rejected = high score. 95 % of 20 OOD = 19 OOD rejected,
    # reached first at threshold score >= 10.5 (all OOD but 5.5).
    # ID rejected at score >= 10.5: {11, ..., 18} (8 values) and 50 → 9 / 20 = 0.45
    assert ood_metrics(HAND_ID, HAND_OOD)["fpr95_ood"] == pytest.approx(0.45, abs=1e-12)


def test_hand_example_auroc_and_det_err():
    m = ood_metrics(HAND_ID, HAND_OOD)
    # AUROC = P(score OOD > score ID) over the 400 pairs:
    #   each of 20..37 beats ID 0..18 (19) and loses to 50 → 18·19 = 342
    #   10.5 beats ID 0..10 → 11;   5.5 beats ID 0..5 → 6
    #   (342 + 11 + 6) / 400 = 359 / 400 = 0.8975
    assert m["auroc"] == pytest.approx(359 / 400, abs=1e-12)
    # det_err = min_t 0.5·(1 − TPR) + 0.5·FPR. At "score >= 20": TPR = 18/20, FPR = 1/20
    # (only the ID outlier 50) → 0.5·0.1 + 0.5·0.05 = 0.075. Other candidates are worse:
    # ">= 10.5" → 0.5·0.05 + 0.5·0.45 = 0.25; ">= 5.5" → 0.5·0 + 0.5·14/20 = 0.35; none → 0.5.
    assert m["det_err"] == pytest.approx(0.075, abs=1e-12)


def test_hand_example_average_precision_in_and_out():
    m = ood_metrics(HAND_ID, HAND_OOD)
    # aupr_out: OOD positive, ranked by descending score:
    #   rank 1: ID 50; ranks 2..19: OOD 37..20 → the k-th OOD has precision k/(k+1), k=1..18;
    #   ranks 20..27: ID 18..11; rank 28: OOD 10.5 → 19/28;
    #   ranks 29..33: ID 10..6;  rank 34: OOD 5.5  → 20/34.   AP = mean over the 20 OOD.
    ap_out = sum(Fraction(k, k + 1) for k in range(1, 19)) + Fraction(19, 28) + Fraction(20, 34)
    ap_out /= 20
    # aupr_in: ID positive, ranked by ascending score:
    #   ranks 1..6: ID 0..5 → precision 1 (six times); rank 7: OOD 5.5;
    #   ranks 8..12: ID 6..10 → k-th ID (k=7..11) has precision k/(k+1); rank 13: OOD 10.5;
    #   ranks 14..21: ID 11..18 → k=12..19, precision k/(k+2); ranks 22..39: OOD 20..37;
    #   rank 40: ID 50 → 20/40.   AP = mean over the 20 ID.
    ap_in = (
        6
        + sum(Fraction(k, k + 1) for k in range(7, 12))
        + sum(Fraction(k, k + 2) for k in range(12, 20))
        + Fraction(20, 40)
    ) / 20
    assert m["aupr_out"] == pytest.approx(float(ap_out), abs=1e-12)  # ≈ 0.83595
    assert m["aupr_in"] == pytest.approx(float(ap_in), abs=1e-12)  # ≈ 0.90296
    assert m["aupr_in"] != pytest.approx(m["aupr_out"], abs=1e-3)


def test_aupr_in_vs_aupr_out_asymmetry():
    # ID = 0, 1, 3; OOD = 2.
    # aupr_out (OOD positive, descending): ID 3, OOD 2 → precision 1/2 at its rank → AP = 0.5
    # aupr_in  (ID positive, ascending): ID 0 (1/1), ID 1 (2/2), OOD 2, ID 3 (3/4)
    #          → AP = (1 + 1 + 3/4) / 3 = 11/12
    m = ood_metrics([0.0, 1.0, 3.0], [2.0])
    assert m["aupr_out"] == pytest.approx(0.5, abs=1e-12)
    assert m["aupr_in"] == pytest.approx(11 / 12, abs=1e-12)


def test_fpr95_reads_the_first_roc_point_without_interpolation():
    # 10 ID at 0..9, 9 OOD at 10..18 and one OOD at -1. 95 % of 10 OOD needs all 10 (9/10 is
    # only 90 %), i.e. threshold score >= -1, which rejects every ID: fpr95_ood = 1.0.
    # An interpolating implementation would report something between 0 and 1.
    # ID side: 95 % of 10 ID needs all 10 accepted (score <= 9) → OOD accepted: {-1} → 0.1.
    s_id = np.arange(10.0)
    s_ood = np.r_[-1.0, np.arange(10.0, 19.0)]
    m = ood_metrics(s_id, s_ood)
    assert m["fpr95_ood"] == 1.0
    assert m["fpr95_id"] == pytest.approx(0.1, abs=1e-12)


def test_fpr_at_tpr_helper_positive_is_high_score():
    # positives 2, 3, 4, 5; negatives 0, 1, 4.5. Descending: 5P 4.5N 4P 3P 2P 1N 0N.
    scores = np.array([2.0, 3.0, 4.0, 5.0, 0.0, 1.0, 4.5])
    positive = np.array([1, 1, 1, 1, 0, 0, 0])
    assert fpr_at_tpr(scores, positive, 0.25) == 0.0  # ">= 5": no negative above
    assert fpr_at_tpr(scores, positive, 0.5) == pytest.approx(1 / 3)  # ">= 4": 4.5 above
    assert fpr_at_tpr(scores, positive, 0.75) == pytest.approx(1 / 3)  # ">= 3"
    assert fpr_at_tpr(scores, positive, 1.0) == pytest.approx(1 / 3)  # ">= 2"
    # TPR 0.6 is not on the curve: the first point reaching it is TPR 0.75 (">= 3")
    scores[-1] = 3.5  # now 5P 4P 3.5N 3P 2P: TPR 0.5 reached before the negative
    assert fpr_at_tpr(scores, positive, 0.5) == 0.0
    assert fpr_at_tpr(scores, positive, 0.6) == pytest.approx(1 / 3)
    # reading the score as "higher = negative" would give different numbers
    # (-scores descending: 0N -1N -2P -3P → TPR 0.5 at ">= -3" with both negatives above)
    assert fpr_at_tpr(-scores, positive, 0.5) == pytest.approx(2 / 3)


def test_all_scores_tied():
    # one threshold only: everything accepted or everything rejected
    m = ood_metrics([1.0] * 4, [1.0] * 2)
    assert m["auroc"] == 0.5
    assert m["fpr95_id"] == 1.0
    assert m["fpr95_ood"] == 1.0
    assert m["det_err"] == 0.5
    # AP with one threshold = base rate of the positive class
    assert m["aupr_out"] == pytest.approx(2 / 6)
    assert m["aupr_in"] == pytest.approx(4 / 6)


def test_partial_ties_count_half_in_auroc():
    # ID = 0, 1, 1; OOD = 1, 2. Pairs (OOD, ID): (1,0)=1, (1,1)=½, (1,1)=½, (2,·)=3 → 5/6.
    m = ood_metrics([0.0, 1.0, 1.0], [1.0, 2.0])
    assert m["auroc"] == pytest.approx(5 / 6, abs=1e-12)
    # fpr95_ood: 95 % of 2 OOD = both → threshold >= 1 → ID rejected {1, 1} → 2/3
    assert m["fpr95_ood"] == pytest.approx(2 / 3, abs=1e-12)
    # fpr95_id: 95 % of 3 ID = all → accept score <= 1 → OOD accepted {1} → 1/2
    assert m["fpr95_id"] == pytest.approx(1 / 2, abs=1e-12)


def test_swapping_roles_swaps_the_in_and_out_metrics():
    # ID positive on scores s is OOD positive on -s with the sets swapped
    rng = np.random.default_rng(7)
    s_id = np.round(rng.normal(0, 1, 57), 1)
    s_ood = np.round(rng.normal(0.8, 1, 43), 1)
    m = ood_metrics(s_id, s_ood)
    w = ood_metrics(-s_ood, -s_id)
    assert m["aupr_in"] == pytest.approx(w["aupr_out"], abs=1e-12)
    assert m["aupr_out"] == pytest.approx(w["aupr_in"], abs=1e-12)
    assert m["fpr95_id"] == pytest.approx(w["fpr95_ood"], abs=1e-12)
    assert m["fpr95_ood"] == pytest.approx(w["fpr95_id"], abs=1e-12)
    assert m["auroc"] == pytest.approx(w["auroc"], abs=1e-12)


def test_inputs_are_flattened_and_any_array_like():
    a = ood_metrics(HAND_ID.reshape(4, 5), list(HAND_OOD))
    b = ood_metrics(HAND_ID, HAND_OOD)
    assert a == b


@pytest.mark.parametrize(
    "s_id, s_ood",
    [
        ([0.0, np.nan], [1.0]),
        ([0.0], [1.0, np.nan]),
        ([0.0, np.inf], [1.0]),
        ([0.0], [-np.inf, 1.0]),
    ],
)
def test_nan_or_inf_scores_raise(s_id, s_ood):
    with pytest.raises(ScoreError, match="NaN or infinite"):
        ood_metrics(s_id, s_ood)


@pytest.mark.parametrize("s_id, s_ood", [([], [1.0]), ([1.0], []), ([], [])])
def test_empty_input_raises(s_id, s_ood):
    with pytest.raises(ScoreError, match="at least one"):
        ood_metrics(s_id, s_ood)


def test_accuracy_ignores_unlabeled_samples():
    preds = np.array([0, 1, 2, 3, 7, 7])
    labels = np.array([0, 1, 0, -1, -1, 7])
    # kept: (0,0) ✓ (1,1) ✓ (2,0) ✗ (7,7) ✓ → 3/4; the two label -1 samples are ignored even
    # though prediction 7 == -1 is false and 3 != -1 would count as wrong otherwise
    assert accuracy(preds, labels) == pytest.approx(0.75)
    assert np.isnan(accuracy(np.array([1, 2]), np.array([-1, -1])))


# ------------------------------------------------------------------ cross-check: pytorch-ood


def _pood(s_id: np.ndarray, s_ood: np.ndarray) -> dict[str, float]:
    scores = torch.tensor(np.r_[s_id, s_ood])
    labels = torch.tensor(np.r_[np.zeros(len(s_id), int), -np.ones(len(s_ood), int)])
    return OODMetrics().update(scores, labels).compute()


def _pr_curve(positive: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    precision, recall, _ = precision_recall_curve(positive, scores, drop_intermediate=False)
    return precision, recall  # recall decreasing, ending at (recall 0, precision 1)


def _trapezoid_aupr(positive: np.ndarray, scores: np.ndarray) -> float:
    precision, recall = _pr_curve(positive, scores)
    return float(auc(recall, precision))


def _trapezoid_minus_ap(positive: np.ndarray, scores: np.ndarray) -> float:
    """trapezoid − AP = ½·Σ ΔRecall·(P_next − P) over consecutive points of the curve."""
    precision, recall = _pr_curve(positive, scores)
    # points run from high to low recall; going the other way, AP takes the precision at the
    # higher-recall end of each step, the trapezoid the mean of both ends
    return float(np.sum(-np.diff(recall) * (precision[1:] - precision[:-1]) / 2))


def _random_scores(seed: int, ties: bool) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n_id, n_ood = rng.integers(150, 400), rng.integers(100, 350)
    s_id = rng.normal(0.0, 1.0, n_id)
    s_ood = rng.normal(rng.uniform(0.0, 2.0), rng.uniform(0.5, 2.0), n_ood)
    if ties:  # few distinct values: many ID/OOD ties
        s_id, s_ood = np.round(s_id * 2) / 2, np.round(s_ood * 2) / 2
    return s_id, s_ood


CASES = [(seed, ties) for seed in range(5) for ties in (False, True)]


@pytest.mark.parametrize("seed, ties", CASES)
def test_matches_pytorch_ood_auroc_and_fpr95(seed, ties):
    s_id, s_ood = _random_scores(seed, ties)
    ours, theirs = ood_metrics(s_id, s_ood), _pood(s_id, s_ood)
    assert ours["auroc"] == pytest.approx(theirs["AUROC"], abs=1e-12)
    # fpr95_ood is pytorch-ood's FPR95TPR (OOD positive), exactly
    assert ours["fpr95_ood"] == pytest.approx(theirs["FPR95TPR"], abs=1e-12)
    # fpr95_id is FPR95TPR with the roles swapped: ID labelled as the "OOD" (-1) positive
    # class, OOD as ID (0), and scores negated (low score = accepted as ID)
    swapped = OODMetrics()
    swapped.update(
        torch.tensor(-np.r_[s_id, s_ood]),
        torch.tensor(np.r_[-np.ones(len(s_id), int), np.zeros(len(s_ood), int)]),
    )
    assert ours["fpr95_id"] == pytest.approx(swapped.compute()["FPR95TPR"], abs=1e-12)
    # with enough overlap the two readings really differ, so the test can tell them apart
    if seed in (0, 1):
        assert ours["fpr95_id"] != pytest.approx(ours["fpr95_ood"], abs=1e-3)


@pytest.mark.parametrize("seed, ties", CASES)
def test_aupr_average_precision_vs_pytorch_ood_trapezoid(seed, ties):
    """pytorch-ood 0.4.0's AUPR is the *trapezoidal* area under sklearn's precision-recall
    curve (``sklearn.metrics.auc(recall, precision)``, see ``pytorch_ood.metrics.functional.aupr``),
    while ours is *average precision* (step interpolation, ``average_precision_score``). They
    are different estimators of the same area and differ by exactly
    ``½·Σ ΔRecall·ΔPrecision`` over the curve's steps. Without ties the steps are small and the
    gap is O(1/N) (≤ 0.005 here); with ties a whole tie group is one recall step, which the
    trapezoid interpolates linearly while AP takes its end precision, so the gap reaches ~0.03
    on these 14–19-level scores (and 0.024 on the 40-sample hand example). Hence:

    1. pytorch-ood's values are reproduced to 1e-12 by the trapezoid on sklearn's curve
       (pins *which* quantity pytorch-ood reports, and that the positive classes agree);
    2. ours + the exact step correction equals pytorch-ood's to 1e-12 (so a swapped in/out
       or a wrong score sign in ours would fail here, not hide in a tolerance);
    3. as a plain sanity bound, ours is within 0.01 (untied) / 0.05 (tied) of pytorch-ood's.
    """
    s_id, s_ood = _random_scores(seed, ties)
    ours, theirs = ood_metrics(s_id, s_ood), _pood(s_id, s_ood)
    scores = np.r_[s_id, s_ood]
    is_ood = np.r_[np.zeros(len(s_id), int), np.ones(len(s_ood), int)]
    assert theirs["AUPR-OUT"] == pytest.approx(_trapezoid_aupr(is_ood, scores), abs=1e-12)
    assert theirs["AUPR-IN"] == pytest.approx(_trapezoid_aupr(1 - is_ood, -scores), abs=1e-12)
    corr_out = _trapezoid_minus_ap(is_ood, scores)
    corr_in = _trapezoid_minus_ap(1 - is_ood, -scores)
    assert ours["aupr_out"] + corr_out == pytest.approx(theirs["AUPR-OUT"], abs=1e-12)
    assert ours["aupr_in"] + corr_in == pytest.approx(theirs["AUPR-IN"], abs=1e-12)
    tol = 0.05 if ties else 0.01
    assert ours["aupr_out"] == pytest.approx(theirs["AUPR-OUT"], abs=tol)
    assert ours["aupr_in"] == pytest.approx(theirs["AUPR-IN"], abs=tol)


def test_pytorch_ood_hand_example_shows_the_aupr_difference():
    theirs = _pood(HAND_ID, HAND_OOD)
    ours = ood_metrics(HAND_ID, HAND_OOD)
    assert theirs["AUROC"] == pytest.approx(ours["auroc"])
    assert theirs["FPR95TPR"] == pytest.approx(0.45)
    # on 40 samples the two AUPR estimators differ by ~0.024 (see the docstring above)
    assert ours["aupr_out"] - theirs["AUPR-OUT"] == pytest.approx(0.02429, abs=1e-4)

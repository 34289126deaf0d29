"""The guarantee checks (ood_bench.validity): the exact FPR band and BH over mixed batches."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ood_bench.calibration import ConformalCalibrator
from ood_bench.validity import bh_batches, conformal_fpr_band, fpr_band_table, job_calibration


def test_the_band_holds_95_percent_of_realised_fprs():
    """Null simulation: fresh calibration set and test set each draw (n_calib 199, n 300)."""
    rng = np.random.default_rng(0)
    n_cal, n, draws, alpha = 199, 300, 2000, 0.05
    lo, hi = conformal_fpr_band(n, n_cal, alpha)
    inside = 0
    for _ in range(draws):
        cal = ConformalCalibrator(num_classes=1).fit(rng.normal(size=n_cal), np.zeros(n_cal, int))
        fpr = np.mean(cal.pvalues(rng.normal(size=n), np.zeros(n, int)) <= alpha)
        inside += lo <= fpr <= hi
    # the interval is discrete: at least 95 %, not much more
    assert 0.94 <= inside / draws <= 0.985, inside / draws
    assert lo < alpha < hi


def test_bh_keeps_the_fdr_under_alpha_and_has_power():
    """FDR control is marginal over the calibration set (Bates et al. 2023): averaged over 60
    calibration draws x 20 batches each, the FDR is <= alpha (given one calibration set it
    may exceed it, which is why the committed check averages over seeds)."""
    rng = np.random.default_rng(1)
    for alpha in (0.05, 0.1):
        fdr, power = [], []
        for _ in range(60):
            cal = ConformalCalibrator(num_classes=1).fit(rng.normal(size=499), np.zeros(499, int))
            p_id = cal.pvalues(rng.normal(size=600), np.zeros(600, int))
            p_ood = cal.pvalues(rng.normal(size=200) + 4, np.zeros(200, int))
            r = bh_batches(p_id, p_ood, alpha, n_batches=20, seed=len(fdr))
            fdr.append(r["fdr"])
            power.append(r["power"])
        assert (r["n_id_batch"], r["n_ood_batch"]) == (180, 20)
        se = np.std(fdr, ddof=1) / np.sqrt(len(fdr))
        assert np.mean(fdr) <= alpha * 0.9 + 2 * se, (alpha, np.mean(fdr))  # pi0 = 0.9
        assert np.mean(power) > 0.5


def _rows(metric_values, n_id=500, run="r"):
    base = {
        "run_id": run,
        "status": "ok",
        "benchmark": "b",
        "detector": "d",
        "library": "l",
        "seed": 0,
        "calib_source": "test",
        "ood_dataset": "",
    }
    return pd.DataFrame(
        [{**base, "metric": m, "value": v, "n_id": n_id} for m, v in metric_values.items()]
    )


def test_jobs_are_checked_against_their_own_calibration():
    marginal = _rows({"p_min": 1 / 200, "calib_class_conditional": 0, "fpr_at_0.05": 0.05})
    assert job_calibration(marginal) == (199, "marginal")
    layer = _rows({"calib_n": 134, "p_min": 1 / 135, "fpr_at_0.05": 0.2})
    assert job_calibration(layer) == (134, "marginal")
    t = fpr_band_table(pd.concat([marginal, layer.assign(run_id="s")]))
    assert list(t["inside"]) == [True, False] and (t["alpha"] == 0.05).all()
    cc = _rows({"p_min": 0.02, "calib_class_conditional": 1, "calib_n": 1000, "fpr_at_0.05": 0.0})
    assert job_calibration(cc)[1] == "class_conditional"
    assert fpr_band_table(cc)["inside"].all()  # below the band is allowed when class-conditional

"""What a novelty job prints: a few columns that answer its question per scenario (the CSVs keep
every metric), and a trial report whose per-cluster counts never read "certified -10 → NEW
CLASS" (a cluster declared new only together with the other candidates says so)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from ood_bench import novelty as nv
from ood_bench.novelty.simulation import candidates
from ood_bench.run_novelty import summary_table

# the metrics of one job's scenarios as run_novelty writes them (values from a digits_open job)
METRICS = {
    "control_id": {
        "n_trials": 5,
        "novelty_decision_acc": 1.0,
        "novelty_false_alarm": 0.0,
        "n_new_est": 0.0,
        "n_new_true": 0.0,
        "n_new_exact": 1.0,
        "n_rejected": 11.2,
        "true_outliers_lb": 0.2,
        "true_outliers": 0.0,
        "outlier_bound_coverage": 0.8,
    },
    "digits_open": {
        "n_trials": 5,
        "novelty_decision_acc": 1.0,
        "novelty_miss": 0.0,
        "n_new_est": 5.2,
        "n_new_true": 4.0,
        "n_new_exact": 0.0,
        "n_rejected": 346.0,
        "true_outliers_lb": 322.4,
        "true_outliers": 333.2,
        "outlier_bound_coverage": 1.0,
        "cluster_acc": 0.8,
        "nmi": 0.711,
        "ari": 0.73,
    },
    "stream": {
        "n_trials": 5,
        "stream_false_alarm": 0.0,
        "stream_detect_rate": 1.0,
        "stream_delay": 40.2,
        "stream_delay_median": 39.0,
    },
}


def job_frame() -> pd.DataFrame:
    rows = [
        {"ood_dataset": sc, "ood_group": "novelty", "metric": k, "value": float(v)}
        for sc, metrics in METRICS.items()
        for k, v in metrics.items()
    ]
    rows.append({"ood_dataset": "", "ood_group": "", "metric": "id_acc", "value": 0.97})
    return pd.DataFrame(rows)


def test_the_terminal_shows_the_decision_false_alarms_classes_found_and_acc():
    text = summary_table(job_frame())
    lines = text.splitlines()
    header = [c.strip() for c in lines[0].split("|")[1:-1]]
    assert header == [
        "scenario",
        "trials",
        "right decision",
        "false alarms",
        "new classes found",
        "ACC",
    ]
    cells = {
        ln.split("|")[1].strip(): [c.strip() for c in ln.split("|")[2:-1]] for ln in lines[2:5]
    }
    assert cells == {
        "control_id": ["5", "100 %", "0 %", "0.0 of 0", "–"],
        "digits_open": ["5", "100 %", "–", "5.2 of 4", "0.80"],
        "stream": ["5", "100 % detected, delay 39", "0 %", "–", "–"],
    }
    assert "nan" not in text and max(len(ln) for ln in lines) <= 110
    # the rest is named, not printed: its columns live in metrics.csv
    assert "nmi" not in lines[0].lower() and "metrics.csv" in text


def test_a_cluster_declared_with_the_others_does_not_print_a_negative_count():
    """certify: union declares fragments together; each one's size - j* may be below 1."""
    j_star = 25
    clusters = [
        dataclasses.replace(c, label=i, is_new=True)
        for i, c in enumerate(candidates([91, 13], j_star))
    ]
    known = dataclasses.replace(candidates([2], j_star)[0], known=True, id_frac=0.95)
    res = nv.NoveltyResult(
        new_class=True,
        n_new=2,
        rejected=np.arange(106),
        labels=np.zeros(106, dtype=int),
        clusters=[*clusters, known],
        m=400,
        n_rejected=106,
        false_bound=j_star,
        true_lower=81,
        p_excess=1e-9,
        alpha=0.05,
        level=0.05,
        n_calib=200,
    )
    text = res.summary()
    assert "certified -" not in text
    big, small, other = text.splitlines()[1:]
    assert ">= 66 true outliers alone" in big and big.endswith("→ NEW CLASS")
    assert "no count alone (13 rejected <= 25 false alarms)" in small
    assert small.endswith("→ NEW CLASS (with the other candidates: >= 79 true outliers)")
    assert other.endswith("→ no: a known class (ID fraction too high)")

"""Per-sample scores (ood_bench.scores) and the verify command (ood_bench.verify)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ood_bench.config import compose
from ood_bench.errors import DataError
from ood_bench.results import read_results, to_frame, write_csv
from ood_bench.scores import SCORES_FILE, JobScores, ScoreSet, load, nbytes, save
from ood_bench.verify import collect_scores, main, recompute, scores_dir_for, verify_path
from tests.conftest import FAST_TRAIN


def test_scores_round_trip_exactly(tmp_path):
    rng = np.random.default_rng(0)
    js = JobScores(
        [
            ScoreSet("digits_test", "id", "id", rng.normal(size=50), rng.uniform(size=50)),
            ScoreSet("noise", "ood", "far", rng.normal(size=30) + 1e-12),
        ],
        {"run_id": "r1", "detector": "d"},
    )
    path = save(js, tmp_path / SCORES_FILE)
    back = load(path)
    assert back.meta["run_id"] == "r1" and back.meta["format"] == 1
    for a, b in zip(js.sets, back.sets, strict=True):
        assert (a.name, a.role, a.group) == (b.name, b.role, b.group)
        np.testing.assert_array_equal(a.score, b.score)  # float64: no rounding
        np.testing.assert_array_equal(a.index, b.index)
    assert back.ood_sets["noise"].pvalue is None and back.id_set.pvalue is not None
    assert nbytes(js) == path.stat().st_size or abs(nbytes(js) - path.stat().st_size) < 64


def test_a_damaged_or_foreign_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "x.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(DataError, match="cannot read scores file"):
        load(bad)
    np.savez(tmp_path / "y.npz", a=np.zeros(3))
    with pytest.raises(DataError, match="not an ood-bench scores file"):
        load(tmp_path / "y.npz")


@pytest.fixture(scope="module")
def job_folder(tmp_path_factory, cache_dir):
    """One real job (stat_maha_energy on digits) written as a job folder: rows + scores."""
    from ood_bench.job import job_identity
    from ood_bench.run import evaluate_scored

    cfg = compose(["detector=stat_maha_energy", f"cache_dir={cache_dir}", FAST_TRAIN])
    job = {**job_identity(cfg, "test"), "run_id": "r-test"}
    rows, scores = evaluate_scored(cfg, job)
    folder = tmp_path_factory.mktemp("job")
    write_csv(to_frame(rows), folder / "metrics.csv")
    save(scores, folder / SCORES_FILE)
    return folder


def test_verify_recomputes_every_metric_of_a_job(job_folder, capsys):
    report = verify_path(job_folder)
    assert report.ok and report.jobs_checked == 1
    df = read_results(job_folder / "metrics.csv")
    # every OOD metric and every decision metric of the job was checked
    checked = set(recompute(load(job_folder / SCORES_FILE)))
    assert {
        ("uniform_noise", "auroc"),
        ("", "fpr_at_0.05"),
        ("uniform_noise", "bh_fdr_0.1"),
    } <= checked
    assert report.rows_checked == sum(
        (("" if pd.isna(o) else o), m) in checked
        for o, m in zip(df.ood_dataset, df.metric, strict=True)
    )
    assert main([str(job_folder)]) == 0
    assert "0 differ" in capsys.readouterr().out


def test_verify_fails_on_an_edited_row(job_folder, tmp_path, capsys):
    df = read_results(job_folder / "metrics.csv")
    hit = (df.metric == "auroc") & (df.ood_dataset == "uniform_noise")
    df.loc[hit, "value"] = df.loc[hit, "value"] - 0.001
    edited = tmp_path / "raw" / "edited.csv"
    write_csv(df, edited)
    copied = collect_scores([job_folder], df, scores_dir_for(edited))
    assert copied == 1 and (tmp_path / "scores" / "edited" / "r-test.npz").is_file()
    assert main([str(edited)]) == 1
    out = capsys.readouterr().out
    assert "1 differ" in out and "DIFFERS r-test stat_maha_energy uniform_noise auroc" in out


def test_verify_with_nothing_to_check_fails(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty")]) == 1
    assert "nothing to check" in capsys.readouterr().out

"""End to end: a multirun sweep, collect, make_tables; cache reuse; failed jobs leave a row."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from ood_bench.errors import ConfigError
from ood_bench.names import is_valid_name
from ood_bench.results import COLUMNS, METRICS, read_results
from tests.conftest import FAST_TRAIN, run_module


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """2 detectors × 2 seeds into a temp dir, then a second sweep with another detector."""
    tmp = tmp_path_factory.mktemp("sweep")
    common = [f"cache_dir={tmp / 'cache'}", FAST_TRAIN]
    first = run_module(
        "-m",
        "ood_bench.run",
        "-m",
        "detector=pood_msp,pood_knn",
        "seed=0,1",
        f"hydra.sweep.dir={tmp / 'sweep1'}",
        *common,
        cwd=tmp,
    )
    second = run_module(
        "-m",
        "ood_bench.run",
        "detector=pood_energy",
        "seed=0",
        f"hydra.run.dir={tmp / 'run2'}",
        *common,
        cwd=tmp,
    )
    return tmp, first, second


def test_multirun_writes_one_csv_per_job(sweep):
    tmp, _, _ = sweep
    files = sorted((tmp / "sweep1").rglob("metrics.csv"))
    assert len(files) == 4
    for f in files:
        df = pd.read_csv(f)
        assert list(df.columns) == COLUMNS
        assert (df["status"] == "ok").all()


def test_collect_and_make_tables(sweep):
    tmp, _, _ = sweep
    out = tmp / "collected.csv"
    run_module("-m", "ood_bench.cli", "collect", str(tmp / "sweep1"), "--out", str(out), cwd=tmp)
    df = read_results(out)
    assert df["run_id"].nunique() == 4
    assert set(df["detector"]) == {"pood_msp", "pood_knn"} and set(df["seed"]) == {0, 1}
    ood = df[df["ood_dataset"] != ""]
    assert set(ood["ood_dataset"]) == {
        "sklearn_photos",
        "skimage_photos",
        "uniform_noise",
        "gaussian_noise",
    }
    # one row per (job, OOD set, metric): nothing duplicated
    assert not ood.duplicated(["run_id", "ood_dataset", "metric"]).any()
    acc = df.loc[df["metric"] == "id_acc", "value"]
    assert (acc > 0.85).all(), acc
    proc = run_module(
        "-m", "ood_bench.cli", "tables", str(out), "--out", str(tmp / "tables"), cwd=tmp
    )
    text = (tmp / "tables" / "results.md").read_text()
    assert "pood_knn" in text and "pood_msp" in text and "±" in text
    assert "| digits / digits_cnn / pood_knn" in proc.stdout
    # the seeds column says 2 for every detector
    auroc = text.split("## AUROC")[1].split("\n## ")[0]
    rows = [line for line in auroc.splitlines() if "/ pood_" in line]
    assert len(rows) == 2
    assert rows and all(line.split("|")[2].strip() == "2" for line in rows)


def test_second_detector_does_zero_forward_passes(sweep):
    tmp, _, second = sweep
    df = read_results(next((tmp / "run2").rglob("metrics.csv")))
    value = df.set_index("metric")["value"]
    assert value["forward_samples"] == 0 and value["extract_s"] == 0
    assert value["cache_hits"] == 7  # fit(=train), calib, test, four OOD sets
    assert "0 forward passes" in second.stdout + second.stderr


def test_runtime_and_environment_rows(sweep):
    tmp, _, _ = sweep
    df = read_results(tmp / "sweep1")
    metrics = set(df["metric"])
    assert {
        "fit_s",
        "score_ms_per_sample",
        "extract_s",
        "peak_rss_mb",
        "forward_ms_per_sample",
    } <= metrics
    assert metrics <= set(METRICS), f"undocumented metrics {metrics - set(METRICS)}"
    assert (df["torch"] != "").all() and (df["pytorch_ood"] != "").all()
    assert (df["device"] == "cpu").all()
    assert df["threads"].str.fullmatch("[1-9][0-9]*").all()  # the count each job used
    assert df["backbone_sha256"].str.fullmatch("[0-9a-f]{64}").all()


def test_failed_job_leaves_a_row_and_the_sweep_goes_on(tmp_path):
    # KNN with k larger than the fit set fails inside scikit-learn; k=5 works
    proc = run_module(
        "-m",
        "ood_bench.run",
        "-m",
        "detector=pood_knn",
        "detector.params.k=5,100000",
        f"hydra.sweep.dir={tmp_path / 's'}",
        f"cache_dir={tmp_path / 'cache'}",
        FAST_TRAIN,
        "allow_failures=true",  # without it the sweep exits 1 (tests/test_sweep_summary.py)
        cwd=tmp_path,
    )
    assert proc.returncode == 0
    assert "2 jobs: 1 ok, 1 failed, 0 skipped" in proc.stdout
    df = read_results(tmp_path / "s")
    status = df.groupby("config_hash")["status"].first()
    assert sorted(status) == ["failed", "ok"]
    failed = df[df["status"] == "failed"]
    assert len(failed) == 1 and failed["metric"].iloc[0] == "job"
    assert "k" in failed["error"].iloc[0] or "neighbors" in failed["error"].iloc[0]


def test_single_run_failure_exits_nonzero_with_row(tmp_path):
    proc = run_module(
        "-m",
        "ood_bench.run",
        "ood_sets=[no_such_set]",
        f"hydra.run.dir={tmp_path / 'r'}",
        f"cache_dir={tmp_path / 'cache'}",
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode != 0
    assert "no OOD set 'no_such_set'" in proc.stderr + proc.stdout
    assert "uniform_noise" in proc.stderr + proc.stdout  # the error lists the options
    df = read_results(tmp_path / "r" / "metrics.csv")
    assert df["status"].tolist() == ["failed"]


SECRET = "s3cr3t-d0-not-leak-4711"


def test_env_secret_in_a_name_reaches_no_written_file(tmp_path):
    """``${oc.env:...}`` in a field that goes into rows stops the job before anything resolves:
    the secret is in no file the job writes (rows, status, logs, Hydra's files) nor its output."""
    proc = run_module(
        "-m",
        "ood_bench.run",
        "detector.name=msp_${oc.env:OOD_BENCH_TEST_TOKEN}",
        f"hydra.run.dir={tmp_path / 'r'}",
        f"cache_dir={tmp_path / 'c'}",
        cwd=tmp_path,
        env={"OOD_BENCH_TEST_TOKEN": SECRET},
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "read the environment" in out, out
    assert "${oc.env:OOD_BENCH_TEST_TOKEN}" in out  # the unresolved text, not the value
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "metrics.csv" for p in files)
    assert SECRET not in out
    assert [p for p in files if SECRET.encode() in p.read_bytes()] == []
    row = read_results(tmp_path / "r" / "metrics.csv").iloc[0]
    assert row["status"] == "failed" and row["detector"] == "msp___oc.env_OOD_BENCH_TEST_TOKEN_"
    assert is_valid_name(row["detector"])  # the failed row itself passes the site's name check


def test_env_reads_follow_interpolations_and_allow_locations():
    from ood_bench.config import compose, env_reads

    assert env_reads(compose()) == {}  # cache_dir, data_root, results_dir read it by design
    assert env_reads(compose(["detector=openood_dice", "benchmark=mnist"])) == {}
    reads = env_reads(compose(["+tag=${oc.env:USER}", "detector.name=run_${tag}", "seed=1"]))
    assert reads == {"tag": "${oc.env:USER}", "detector.name": "run_${tag}"}
    assert "detector.name" in env_reads(compose(["detector.name=${cache_dir}"]))  # a path too
    assert "detector.params.k" in env_reads(
        compose(["detector=pood_knn", "detector.params.k=${oc.env:K,5}"])
    )


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("detector.name=../../x", "invalid detector name '../../x'"),
        ("detector.name='javascript:alert(3)//'", "invalid detector name"),
        ("backbone.name='a b'", "invalid backbone name"),
        ("seed=${oc.env:HOME}", "seed=.*read the environment"),
    ],
)
def test_job_config_refuses_names_and_environment_reads(override, match):
    from ood_bench.config import compose
    from ood_bench.job import check_job_config

    check_job_config(compose())
    with pytest.raises(ConfigError, match=match):
        check_job_config(compose([override]))


def test_novelty_method_and_scenario_names_are_checked():
    from omegaconf import open_dict

    from ood_bench.config import compose
    from ood_bench.job import check_job_config

    check_job_config(compose(config_name="novelty"))
    with pytest.raises(ConfigError, match="invalid novelty method name"):
        check_job_config(compose(["novelty.name=x/y"], config_name="novelty"))
    cfg = compose(config_name="novelty")
    with open_dict(cfg):
        cfg.scenarios["../escape"] = cfg.scenarios.control_id
    with pytest.raises(ConfigError, match="invalid novelty scenario name '../escape'"):
        check_job_config(cfg)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_on_a_cpu_only_machine_is_refused_before_any_work():
    """Refused up front, so a job whose features are all cached cannot record device=cuda."""
    from ood_bench.config import compose
    from ood_bench.job import check_job_config
    from ood_bench.pipeline import prepare

    with pytest.raises(ConfigError, match="device=cuda but torch sees no CUDA device.*device=cpu"):
        check_job_config(compose(["device=cuda"]))
    with pytest.raises(ConfigError, match="device=cuda"):  # scripts that call prepare directly
        prepare(compose(["device=cuda"]))
    with pytest.raises(ConfigError, match="not a torch device"):
        check_job_config(compose(["device=gpu"]))

"""Real data (MNIST, FashionMNIST in torchvision's layout under $OOD_BENCH_DATA): LeNet trains to
≥ 97 % in one epoch, and the harness runs MNIST vs FashionMNIST end to end."""

from __future__ import annotations

import pytest

from ood_bench.results import read_results
from tests.conftest import DATA, run_module

pytestmark = pytest.mark.skipif(
    not (DATA / "MNIST" / "raw").is_dir() or not (DATA / "FashionMNIST" / "raw").is_dir(),
    reason=f"MNIST/FashionMNIST not found under {DATA}: set OOD_BENCH_DATA to a folder with "
    "them in torchvision's layout to run the real-data tests",
)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("real")
    proc = run_module(
        "-m",
        "ood_bench.run",
        "-m",
        "benchmark=mnist_fashion",
        "backbone=lenet",
        "detector=stat_masf,stat_maha_cauchy,pood_msp,pood_energy",
        f"data_root={DATA}",
        f"cache_dir={tmp / 'cache'}",
        f"hydra.sweep.dir={tmp / 's'}",
        "benchmark.fit_max=5000",
        "benchmark.test_max=3000",
        "benchmark.ood_max=3000",
        cwd=tmp,
    )
    return read_results(tmp / "s"), proc


def test_lenet_one_epoch_reaches_97_percent(sweep):
    df, proc = sweep
    acc = df.loc[df["metric"] == "id_acc", "value"]
    assert len(acc) == 4 and (acc >= 0.97).all(), acc
    assert "trained lenet" in proc.stdout + proc.stderr


def test_mnist_vs_fashionmnist_end_to_end(sweep):
    df, _ = sweep
    assert (df["status"] == "ok").all()
    auroc = df[(df["metric"] == "auroc") & (df["ood_dataset"] == "fashionmnist")]
    by_det = auroc.set_index("detector")["value"]
    assert set(by_det.index) == {"stat_masf", "stat_maha_cauchy", "pood_msp", "pood_energy"}
    assert (by_det > 0.8).all(), by_det
    fwd = df[df["metric"] == "forward_samples"].set_index("detector")["value"]
    assert (fwd > 0).sum() == 1, "features must be extracted once and reused by every detector"

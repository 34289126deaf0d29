"""The ``threads`` option: auto takes OMP_NUM_THREADS, else the cores this process may use
shared among the jobs a parallel launcher runs at once (at most 4); a number is taken as given;
anything else is an error naming the fix. It applies to torch and the BLAS pools, and is not part
of the config hash (a given checkpoint computes the same numbers with any thread count)."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from threadpoolctl import threadpool_info

import ood_bench.threads as th
from ood_bench.config import config_hash
from ood_bench.errors import ConfigError
from tests.conftest import CONF

JOBLIB = OmegaConf.create(
    {"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", "n_jobs": 2}
)
BASIC = OmegaConf.create({"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"})


@pytest.fixture
def cores(monkeypatch):
    """Pretend this process may use ``n`` cores, with OMP_NUM_THREADS unset."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)

    def set_to(n: int) -> None:
        monkeypatch.setattr(th, "available_cores", lambda: n)

    return set_to


def test_auto_shares_the_cores_among_parallel_jobs_and_stays_at_most_four(cores):
    cores(2)
    assert th.resolve_threads("auto", BASIC) == 2  # one job at a time: both cores
    assert th.resolve_threads("auto", JOBLIB) == 1  # two jobs at once on 2 cores: one each
    assert th.resolve_threads("auto", OmegaConf.merge(JOBLIB, {"n_jobs": -1})) == 1  # all cores
    cores(16)
    assert th.resolve_threads("auto") == th.AUTO_MAX == 4
    assert th.resolve_threads("auto", OmegaConf.merge(JOBLIB, {"n_jobs": 8})) == 2
    cores(1)
    assert th.resolve_threads("auto", JOBLIB) == 1  # never 0


def test_auto_takes_omp_num_threads_and_a_number_is_taken_as_given(cores, monkeypatch):
    cores(8)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert th.resolve_threads("auto") == 1
    assert th.resolve_threads(3) == th.resolve_threads("3") == 3


@pytest.mark.parametrize("bad", ["abc", 0, -2, "1.5"])
def test_a_bad_thread_count_names_the_fix(bad):
    with pytest.raises(ConfigError, match=r"threads=.* neither auto nor a positive integer.*Fix"):
        th.resolve_threads(bad)


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)
    th._limits.restore_original_limits()
    th._limits = None


def test_apply_sets_torch_and_the_blas_pools(restore_threads):
    assert th.apply_threads(1) == 1
    assert torch.get_num_threads() == 1
    pools = threadpool_info()
    assert pools and all(p["num_threads"] == 1 for p in pools), pools


def test_threads_is_recorded_not_hashed():
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        default = compose("config")
        one = compose("config", overrides=["threads=1"])
        novelty = compose("novelty")
        train = compose("train")
    assert default.threads == novelty.threads == train.threads == "auto"
    assert config_hash(default) == config_hash(one)

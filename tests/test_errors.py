"""Bad input stops with an error that names the cause and the fix."""

from __future__ import annotations

import pytest

from ood_bench.data.root import ENV_VAR, require_dataset, resolve_data_root
from ood_bench.errors import ConfigError, DataError
from tests.conftest import run_module


def test_missing_data_root_says_how_to_set_it(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    with pytest.raises(ConfigError, match=f"data_root=.*{ENV_VAR}"):
        resolve_data_root(None, "mnist")


def test_wrong_data_root_names_the_path(tmp_path):
    with pytest.raises(DataError, match=str(tmp_path / "nope")):
        resolve_data_root(tmp_path / "nope")


def test_env_var_is_the_fallback(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    assert resolve_data_root(None) == tmp_path.resolve()


def test_missing_dataset_names_path_layout_and_download(tmp_path):
    with pytest.raises(DataError, match=r"MNIST.*MNIST/raw.*download=true"):
        require_dataset(tmp_path, "MNIST", "MNIST/raw/*-ubyte")


def test_run_with_wrong_data_root_fails_clearly(tmp_path):
    proc = run_module(
        "-m",
        "ood_bench.run",
        f"data_root={tmp_path / 'missing'}",
        f"hydra.run.dir={tmp_path / 'r'}",
        f"cache_dir={tmp_path / 'c'}",
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode != 0
    assert "does not exist" in proc.stderr and "OOD_BENCH_DATA" in proc.stderr


def test_unknown_detector_on_the_command_line_lists_options(tmp_path):
    proc = run_module("-m", "ood_bench.run", "detector=nope", cwd=tmp_path, check=False)
    assert proc.returncode != 0
    assert "Available options" in proc.stderr and "pood_knn" in proc.stderr


def test_wrong_channel_count_says_which_transform():
    import torch

    from ood_bench.backbones import DigitsCNN

    with pytest.raises(ConfigError, match=r"1×H×W.*3, 8, 8.*grayscale"):
        DigitsCNN(in_channels=1)(torch.zeros(2, 3, 8, 8))

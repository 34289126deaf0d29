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


# --- issue 15, item 7: bad input that passed silently or crashed unhelpfully ---------------


def _npz(tmp_path, y, n=6):
    import numpy as np

    path = tmp_path / "set.npz"
    np.savez(path, x=np.zeros((n, 4, 4), np.uint8), y=y)
    return path


def test_npz_labels_of_another_length_are_refused(tmp_path):
    import numpy as np

    from ood_bench.data.images import NpzSet

    path = _npz(tmp_path, np.arange(4) % 2)  # 6 images, 4 labels: 2 images would vanish
    with pytest.raises(DataError, match=rf"{path}: y has shape \(4,\) but x holds 6.*Fix"):
        NpzSet(path)


def test_npz_float_labels_must_be_whole_numbers(tmp_path):
    import numpy as np

    from ood_bench.data.images import NpzSet

    path = _npz(tmp_path, np.array([0.0, 1.0, 2.5, 1.0, 0.0, 2.0]))  # 2.5 would become 2
    with pytest.raises(DataError, match=r"non-integer labels.*y\[2\]=2\.5.*integral.*Fix"):
        NpzSet(path)
    ds = NpzSet(_npz(tmp_path, np.array([0.0, 1.0, 2.0, 1.0, 0.0, -1.0])))
    assert ds.targets.dtype == np.int64 and ds.targets.tolist() == [0, 1, 2, 1, 0, -1]
    with pytest.raises(DataError, match="integer class labels, got dtype <U1"):
        NpzSet(_npz(tmp_path, np.array(list("abcabc"))))


def test_corrupt_checkpoint_card_is_named_and_rewritten(digits_bench, tmp_path, caplog):
    import json

    from ood_bench.backbones import get_backbone

    first = get_backbone("digits_cnn", digits_bench, tmp_path, seed=0, train={"epochs": 1})
    card = first.checkpoint.with_suffix(".json")
    card.write_text('{"sha256": "abc", "trunc')  # e.g. a disk that filled up mid-write
    with caplog.at_level("WARNING", logger="ood_bench.backbones"):
        again = get_backbone("digits_cnn", digits_bench, tmp_path, seed=0, train={"epochs": 1})
    assert f"checkpoint card {card} is corrupt" in caplog.text and "retrained" in caplog.text
    assert json.loads(card.read_text())["sha256"] == again.sha256 == first.sha256


def test_backbone_too_large_for_the_images_says_which_fits(digits_bench, tmp_path):
    from ood_bench.backbones import get_backbone

    with pytest.raises(ConfigError, match=r"lenet.*1×8×8.*at least 10×10.*backbone=digits_cnn"):
        get_backbone("lenet", digits_bench, tmp_path, train={"epochs": 1})
    assert not (tmp_path / "checkpoints").exists() or not any(
        (tmp_path / "checkpoints").glob("*.pt")
    ), "nothing is trained before the check"


def _compose(*overrides: str):
    from hydra import compose, initialize_config_dir

    from tests.conftest import CONF

    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        return compose(config_name="config", overrides=list(overrides))


def test_missing_key_names_the_key_to_pass():
    from omegaconf import OmegaConf

    from ood_bench.config import build

    cfg = _compose("backbone=checkpoint")
    with pytest.raises(ConfigError, match=r"needs backbone\.arch, backbone\.checkpoint") as e:
        build(cfg.backbone, "backbone")
    assert "backbone.backbone" not in str(e.value) and "pass e.g. backbone.arch=" in str(e.value)
    standalone = OmegaConf.create({"_target_": "builtins.dict", "arch": "???"})
    with pytest.raises(ConfigError, match=r"needs backbone\.arch "):
        build(standalone, "backbone")


def test_one_ood_set_name_is_that_set_not_its_letters(digits_bench):
    from ood_bench.pipeline import ood_set_names

    assert [s.name for s in digits_bench.select_ood("uniform_noise").ood] == ["uniform_noise"]
    assert ood_set_names("uniform_noise", digits_bench) == ["uniform_noise"]
    assert ood_set_names(None, digits_bench) is None  # null = all


def test_image_benchmark_takes_one_ood_set_name(tmp_path):
    import numpy as np

    from ood_bench.data.image_benchmark import build_image_benchmark

    for split in ("train", "test"):
        np.savez(tmp_path / f"{split}.npz", x=np.zeros((20, 8, 8), np.uint8), y=np.arange(20) % 2)
    bench = build_image_benchmark(
        name="toy",
        id_set={"npz": "{split}.npz"},
        ood=[
            {"name": "uniform_noise", "group": "far", "noise": "uniform", "n": 5},
            {"name": "gaussian_noise", "group": "far", "noise": "gaussian", "n": 5},
        ],
        preprocess={"channels": 1},
        data_root=str(tmp_path),
        ood_sets="uniform_noise",
    )
    assert [s.name for s in bench.ood] == ["uniform_noise"]


def test_empty_ood_sets_is_an_error_unlike_null(digits_bench):
    from ood_bench.pipeline import ood_set_names

    with pytest.raises(ConfigError, match=r"ood_sets=\[\] selects no OOD set.*uniform_noise.*"):
        ood_set_names([], digits_bench)


def test_run_with_empty_ood_sets_fails_with_a_failed_row(tmp_path):
    """ood_sets=[] stops before the backbone is built, so this end-to-end run is quick."""
    from ood_bench.results import read_results
    from tests.conftest import ROOT

    proc = run_module(
        "-m",
        "ood_bench.run",
        "ood_sets=[]",
        f"hydra.run.dir={tmp_path / 'r'}",
        f"cache_dir={tmp_path / 'c'}",
        cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT)},  # this checkout's code, not an installed one
        check=False,
    )
    assert proc.returncode != 0 and "ood_sets=null for all" in proc.stderr
    row = read_results(tmp_path / "r" / "metrics.csv").iloc[0]
    assert row["status"] == "failed" and "ood_sets=[] selects no OOD set" in row["error"]


def test_full_disk_names_the_file_and_the_fix(tmp_path, monkeypatch):
    import errno
    from pathlib import Path

    from ood_bench.atomic import atomic_write_text

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full)
    target = tmp_path / "out" / "metrics.csv"
    with pytest.raises(OSError, match=rf"cannot write {target}: No space.*Fix: free space") as e:
        atomic_write_text(target, "x")
    assert e.value.errno == errno.ENOSPC
    assert not list((tmp_path / "out").iterdir()), "the temp file is removed"

    def broken(self, *args, **kwargs):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(Path, "write_text", broken)
    with pytest.raises(OSError, match=r"^\[Errno 5\] Input/output error$"):  # others unchanged
        atomic_write_text(target, "x")


def test_detector_param_of_the_wrong_type_names_key_value_and_type():
    from ood_bench.config import build

    cfg = _compose("detector=pood_knn", "detector.params.k=abc")
    with pytest.raises(ConfigError, match=r"detector\.params\.k='abc' is a str.*KNN.*k to be int"):
        build(cfg.detector, "detector")
    cfg = _compose("detector=stat_masf", "detector.alpha=abc")  # any target, by its type hints
    with pytest.raises(ConfigError, match=r"detector\.alpha='abc'.*StatDetector.*float"):
        build(cfg.detector, "detector")


@pytest.mark.parametrize("group", ["benchmark", "backbone", "detector", "corruption"])
def test_every_option_passes_the_type_check(group):
    """No false alarms: every shipped option's values fit its target's type hints."""
    from hydra.utils import get_object
    from omegaconf import OmegaConf

    from ood_bench.config import check_types
    from tests.conftest import CONF

    for f in sorted((CONF / group).glob("*.yaml")):
        extra = ["backbone.arch=lenet", "backbone.checkpoint=x"] if f.stem == "checkpoint" else []
        node = _compose(f"{group}={f.stem}", *extra)[group]
        values = OmegaConf.to_container(node, resolve=True)
        if "_target_" not in values:  # e.g. corruption=none: plain settings
            continue
        check_types(get_object(values.pop("_target_")), values, group, f.stem)


def test_header_only_results_csv_is_an_error(tmp_path):
    from ood_bench.results import COLUMNS, collect, read_results
    from tests.conftest import ROOT

    job = tmp_path / "sweep" / "0_pood_msp"
    job.mkdir(parents=True)
    csv = job / "metrics.csv"
    csv.write_text(",".join(COLUMNS) + "\n")
    with pytest.raises(DataError, match=rf"{csv} has the results header but no result rows"):
        read_results(csv)
    with pytest.raises(DataError, match=rf"{csv} has the results header"):
        collect(tmp_path / "sweep")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match="empty.csv is empty"):
        read_results(tmp_path / "empty.csv")
    proc = run_module(
        "-m",
        "ood_bench.cli",
        "tables",
        str(csv),
        "--out",
        str(tmp_path / "tables"),
        cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT)},
        check=False,
    )
    assert proc.returncode != 0 and "no result rows" in proc.stderr
    assert not (tmp_path / "tables" / "results.md").exists()


def test_openood_param_of_the_wrong_type_names_key_value_and_default():
    pytest.importorskip("openood")
    from ood_bench.config import build

    det = build(_compose("detector=openood_knn", "detector.params.K=abc").detector, "detector")
    with pytest.raises(ConfigError, match=r"detector\.params\.K='abc'.*knn.*a number.*K=50"):
        det._build(None, 10, (8, 8))  # the check precedes any use of OpenOOD


def test_search_on_the_only_ood_set_is_an_error(tmp_path):
    """Tuning on the one selected OOD set would leave nothing to evaluate (an ok job, no AUROC)."""
    from ood_bench.results import read_results
    from tests.conftest import ROOT

    proc = run_module(
        "-m",
        "ood_bench.run",
        "detector=pood_knn",
        "detector.search=true",
        "ood_sets=[uniform_noise]",
        "backbone.train.epochs=1",
        f"hydra.run.dir={tmp_path / 'r'}",
        f"cache_dir={tmp_path / 'c'}",
        cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT)},
        check=False,
    )
    assert proc.returncode != 0 and "no other OOD set is left" in proc.stderr
    assert read_results(tmp_path / "r" / "metrics.csv").iloc[0]["status"] == "failed"


@pytest.mark.parametrize("size", [1, 2, 4])
def test_calib_test_size_too_small_for_a_stratified_cut_names_a_size_that_works(digits_bench, size):
    """1 or 2 of 450 test images round to no image in any class: the fix names the smallest
    count that works (a count 'smaller than the test split' did not)."""
    import re

    from ood_bench.pipeline import check_calib_test_size

    with pytest.raises(ConfigError, match="stratified") as e:
        check_calib_test_size(size, digits_bench)
    low, high = map(int, re.search(r"a count from (\d+) to (\d+)", str(e.value)).groups())
    for ok in (low, high):
        check_calib_test_size(ok, digits_bench)
        cut = digits_bench.calib_from_test(ok)
        assert len(cut.split("calib")) > 0 and len(cut.split("test")) > 0
    with pytest.raises(ConfigError):
        check_calib_test_size(low - 1, digits_bench)
    with pytest.raises(ConfigError):
        check_calib_test_size(high + 1, digits_bench)


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("trials=0", r"trials=0: .*Fix: trials=<an integer >= 1>"),
        ("trials=-3", r"trials=-3"),
        ("+scenarios.control_id.trials=0", r"scenarios.control_id.trials=0: .*or null"),
    ],
)
def test_novelty_without_trials_is_refused(override, match):
    from ood_bench.config import compose
    from ood_bench.run_novelty import check_trials

    check_trials(compose(config_name="novelty"))
    with pytest.raises(ConfigError, match=match):
        check_trials(compose([override], config_name="novelty"))


def test_results_dir_that_is_a_file_is_refused_with_the_fix(tmp_path):
    from ood_bench.job import check_results_dir

    check_results_dir(tmp_path / "shared")  # created
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ConfigError, match=r"results_dir=.*afile.*Fix: .*results_dir=null"):
        check_results_dir(tmp_path / "afile")


def test_memory_guard_refuses_a_huge_ood_set_before_allocating():
    import time

    from ood_bench.config import compose
    from ood_bench.pipeline import check_memory_plan, machine_memory

    n = int(machine_memory() // 200)  # 1280 bytes per digits noise image at its peak
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match=r"max_memory_fraction=0.8 .*benchmark.n_ood") as e:
        check_memory_plan(compose([f"benchmark.n_ood={n}"]))
    assert time.perf_counter() - t0 < 2, "refused from the arguments, nothing allocated"
    assert "null switches the guard off" in str(e.value)
    check_memory_plan(compose([f"benchmark.n_ood={n}", "max_memory_fraction=null"]))
    check_memory_plan(compose())  # the default benchmark fits
    with pytest.raises(ConfigError, match=r"max_memory_fraction=1.5 is not a fraction"):
        check_memory_plan(compose(["max_memory_fraction=1.5"]))


def test_memory_plan_of_an_image_benchmark_counts_its_generated_sets():
    from ood_bench.data.image_benchmark import planned_images

    ood = [
        {"name": "fashionmnist", "group": "near", "dataset": "fashionmnist"},
        {"name": "uniform_noise", "group": "far", "noise": "uniform", "n": 10},
        {"name": "gaussian_noise", "group": "far", "noise": "gaussian", "n": 20},
    ]
    pre = {"channels": 3, "size": [32, 32]}
    px = 3 * 32 * 32
    assert planned_images(ood, pre) == [
        ("uniform_noise", 10, px, 0),
        ("gaussian_noise", 20, px, 24 * px),
    ]
    assert planned_images(ood, pre, ood_sets=["uniform_noise"], ood_max=4) == [
        ("uniform_noise", 4, px, 0)
    ]


def test_memory_guard_counts_the_features_before_extracting(
    digits_bench, digits_backbone, tmp_path
):
    from ood_bench.config import compose
    from ood_bench.features import FeatureExtractor
    from ood_bench.pipeline import check_feature_memory, machine_memory

    ex = FeatureExtractor(digits_backbone, tmp_path)
    sets = [digits_bench.split("test")]
    row = ex.row_nbytes(sets[0])
    assert row > 4 * digits_bench.num_classes and ex.forward_samples == 0
    need = row * 2 * len(sets[0])
    fraction = 0.5 * need / machine_memory()
    with pytest.raises(ConfigError, match=r"features of 450 images.*max_memory_fraction"):
        check_feature_memory(compose([f"max_memory_fraction={fraction}"]), ex, sets)
    check_feature_memory(compose([f"max_memory_fraction={4 * fraction}"]), ex, sets)

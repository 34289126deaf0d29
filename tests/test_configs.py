"""Every option of every config group composes and instantiates; bad choices say what exists."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import MissingConfigException

from ood_bench.backbones import Backbone, build_model, discover_taps
from ood_bench.config import build
from ood_bench.data.base import tensor_set
from ood_bench.data.root import ENV_VAR
from ood_bench.errors import ConfigError, DataError
from tests.conftest import CONF, DATA, FAST_TRAIN

GROUPS = ("benchmark", "backbone", "detector")


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def compose_cfg(*overrides: str):
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        return compose(config_name="config", overrides=list(overrides))


def test_every_group_has_options():
    for g in GROUPS:
        assert options(g), f"conf/{g} is empty"


@pytest.mark.parametrize("option", options("detector"))
def test_detector_options_instantiate(option):
    cfg = compose_cfg(f"detector={option}")
    det = build(cfg.detector, "detector")
    assert det.name == option, "a detector's name must equal its option name (results use it)"


EMBEDDED = ("digits", "digits_open")
ON_DISK = [o for o in options("benchmark") if o not in EMBEDDED]
SMALL = ("benchmark.ood_max=50", "benchmark.test_max=50")


@pytest.mark.parametrize("option", options("benchmark"))
def test_benchmark_options_instantiate(option):
    """Embedded benchmarks build; on-disk ones build from the data root ($OOD_BENCH_DATA, else
    ../shared/data) when all their sets are there, and otherwise stop with a DataError naming
    what is missing under that root. Without a data root the on-disk ones skip."""
    if option in EMBEDDED:
        cfg = compose_cfg(f"benchmark={option}")
    else:
        if not DATA.is_dir():
            pytest.skip(f"{option} reads data from disk and {DATA} does not exist: set {ENV_VAR}")
        cfg = compose_cfg(f"benchmark={option}", f"data_root={DATA}", *SMALL)
    assert cfg.benchmark.name == option, "a benchmark's name must equal its option name"
    try:
        bench = build(cfg.benchmark, "benchmark")
    except DataError as e:
        msg = str(e)
        assert option not in EMBEDDED and "not found" in msg and "ood_sets" in msg, e
        assert str(DATA.resolve()) in msg, f"the error should name the data root given: {e}"
        return
    assert bench.name == option
    assert {"train", "fit", "calib", "test"} <= set(bench.splits)
    assert bench.ood and all(s.group in ("near", "far") for s in bench.ood)
    x, y = bench.split("test").dataset[0]
    assert tuple(x.shape) == (bench.in_channels, *bench.image_size)


@pytest.mark.parametrize("option", ON_DISK)
def test_benchmark_option_without_its_data_names_the_root_given(option, tmp_path):
    """A data root that exists but lacks the sets: the DataError names a set and that folder."""
    cfg = compose_cfg(f"benchmark={option}", f"data_root={tmp_path}", *SMALL)
    with pytest.raises(DataError, match=r"not found.*ood_sets") as e:
        build(cfg.benchmark, "benchmark")
    assert str(tmp_path.resolve()) in str(e.value), e.value


# input each architecture is meant for (channels, size)
INPUT = {
    "digits_cnn": (1, 8),
    "lenet": (1, 28),
    "vgg_small_32x32": (3, 32),
    "resnet18_32x32": (3, 32),
}


@pytest.mark.parametrize("option", options("backbone"))
def test_backbone_options_build_and_tap(option):
    """Every backbone option builds its architecture; its taps (configured or discovered) are
    modules that produce features. Weights are not trained here (see test_backbone.py)."""
    cfg = compose_cfg(f"backbone={option}")
    b = cfg.backbone
    assert b.name == option
    arch = b.arch if option != "checkpoint" else "lenet"  # checkpoint: the user names it
    ch, size = INPUT.get(arch, (3, 224))
    torch.manual_seed(0)
    model = build_model(arch, num_classes=10, in_channels=ch, **(b.get("arch_kwargs") or {}))
    bb = Backbone(
        option,
        model.eval(),
        "0" * 64,
        Path("."),
        *([list(b.taps), b.penultimate] if b.get("taps") else model_taps_for(model, ch, size)),
    )
    from ood_bench.features import FeatureExtractor

    ex = FeatureExtractor(bb, Path("never-written"))  # extract() only: no cache
    f = ex.extract(
        tensor_set(
            "x", np.random.rand(2, ch, size, size).astype(np.float32), np.zeros(2), {"t": option}
        )
    )
    assert f.logits.shape == (2, 10) and f.penultimate.shape[0] == 2 and f.taps


def model_taps_for(model, ch: int, size: int):
    if getattr(model, "taps", None):
        return list(model.taps), model.penultimate
    return discover_taps(model, torch.zeros(2, ch, size, size))


def test_checkpoint_options_demand_a_file():
    for option in ("checkpoint", "resnet50", "vit_b_16"):
        cfg = compose_cfg(f"backbone={option}")
        with pytest.raises(ConfigError, match=r"needs backbone.*checkpoint.*\?\?\?"):
            build(cfg.backbone, "backbone", benchmark=None, cache_dir="/tmp")


def test_digits_cnn_option_trains_and_loads(digits_bench, cache_dir):
    cfg = compose_cfg("backbone=digits_cnn", FAST_TRAIN)
    bb = build(cfg.backbone, "backbone", benchmark=digits_bench, cache_dir=str(cache_dir))
    assert bb.taps and bb.sha256 and bb.info["id_acc"] > 0.5


@pytest.mark.parametrize("group", GROUPS)
def test_unknown_option_lists_the_choices(group):
    with pytest.raises(MissingConfigException) as e:
        compose_cfg(f"{group}=does_not_exist")
    msg = str(e.value)
    assert "does_not_exist" in msg
    assert all(o in msg for o in options(group)), msg


def test_unknown_pytorch_ood_class_lists_available():
    cfg = compose_cfg("detector=pood_knn", "detector.cls=NoSuchDetector")
    with pytest.raises(ConfigError, match="available:.*KNN"):
        build(cfg.detector, "detector")


def test_bad_hyperparameter_is_a_config_error():
    cfg = compose_cfg("detector=pood_msp", "+detector.params.no_such_arg=1")
    with pytest.raises(ConfigError, match="MaxSoftmax"):
        build(cfg.detector, "detector")


def test_unexpected_argument_names_the_target():
    cfg = compose_cfg("+benchmark.no_such_arg=1")
    with pytest.raises(ConfigError, match="build_digits.*no_such_arg"):
        build(cfg.benchmark, "benchmark")

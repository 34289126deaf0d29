"""Every option of every config group composes and instantiates; bad choices say what exists."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import MissingConfigException

from ood_bench.config import build
from ood_bench.errors import ConfigError
from tests.conftest import CONF, FAST_TRAIN

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


@pytest.mark.parametrize("option", options("benchmark"))
def test_benchmark_options_instantiate(option):
    cfg = compose_cfg(f"benchmark={option}")
    bench = build(cfg.benchmark, "benchmark")
    assert bench.name == option
    assert {"train", "fit", "calib", "test"} <= set(bench.splits)
    assert bench.ood and all(s.group in ("near", "far") for s in bench.ood)


@pytest.mark.parametrize("option", options("backbone"))
def test_backbone_options_instantiate(option, digits_bench, cache_dir):
    cfg = compose_cfg(f"backbone={option}", FAST_TRAIN)
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

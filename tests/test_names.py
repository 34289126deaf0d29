"""The name rule (ood_bench.names): hostile names refused, every shipped option accepted."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ood_bench.errors import ConfigError
from ood_bench.names import check_name, check_names, is_valid_name, suggest_name

CONF = Path(__file__).resolve().parents[1] / "conf"

HOSTILE = [
    "../../../x",
    "..",
    ".",
    "javascript:alert(3)//",
    "a/b",
    "a\\b",
    "^^5cinput{/etc/hostname}",
    "${oc.env:HOME}",
    "with space",
    "-flag",
    "",
    "x" * 65,
    "é",
    None,
    3,
]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_are_refused(name):
    assert not is_valid_name(name)
    with pytest.raises(ConfigError, match="invalid benchmark name") as e:
        check_name(name, "benchmark name", "results/raw/x.csv")
    assert "Fix: rename it" in str(e.value)
    assert is_valid_name(suggest_name(name))


@pytest.mark.parametrize(
    "name",
    [
        "digits",
        "cifar10_split",
        "pood_rmd",
        "openood_mds_ensemble",
        "mnist-5.0",
        "resnet18_32x32",
        "a+b",
        "0",
    ],
)
def test_ordinary_names_pass(name):
    assert check_name(name, "detector name") == name


def test_a_name_given_twice_is_refused():
    with pytest.raises(ConfigError, match="given twice"):
        check_names(["mnist", "photos", "mnist"], "OOD set name", "ood_sets")


def _shipped_names():
    for group in ("benchmark", "detector", "backbone", "novelty", "corruption"):
        for f in sorted((CONF / group).rglob("*.yaml")):
            yield f"{group}/{f.stem}", f.stem
    for f in sorted((CONF / "benchmark").glob("*.yaml")):
        node = yaml.safe_load(f.read_text())
        if node.get("name"):
            yield f"{f.name}: name", node["name"]
        for entry in node.get("ood") or []:
            yield f"{f.name}: ood", entry["name"]


def test_every_shipped_option_fits_the_rule():
    bad = [(where, n) for where, n in _shipped_names() if not is_valid_name(n)]
    assert not bad, bad
    assert len(list(_shipped_names())) > 100

"""The README documents every metric name and results column the code writes."""

from __future__ import annotations

from ood_bench.results import COLUMNS, METRICS
from tests.conftest import ROOT

README = (ROOT / "README.md").read_text()


def test_every_metric_is_documented():
    missing = [m for m in METRICS if m != "job" and f"`{m}`" not in README]
    assert not missing, f"README lacks metrics {missing}"


def test_every_column_is_documented():
    missing = [c for c in COLUMNS if f"`{c}`" not in README]
    assert not missing, f"README lacks columns {missing}"


def test_quick_start_is_the_makefile_targets_ci_calls():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make demo" in README and "make test" in README
    assert "make test" in ci

"""The results site against careless and hostile input: a name that is a path or a URL scheme
is refused where the CSVs are read, nothing is written outside --out, failed-only results are a
clear error."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from ood_bench.errors import DataError
from ood_bench.site import build_site
from tests.conftest import ROOT, run_module

RESULTS = ROOT / "results"
SMALL = "openood_seeds.csv"  # the smallest committed raw CSV that makes a whole site

HOSTILE = [
    ("raw", "benchmark", "../../../x"),
    ("raw", "benchmark", "javascript:alert(3)//"),
    ("raw", "detector", "^^5cinput{/etc/hostname}"),
    ("raw", "ood_dataset", "../../evil"),
    ("raw", "backbone", "a b"),
    ("raw", "library", "javascript:alert(1)"),
    ("novelty", "ood_dataset", "javascript:alert(2)//"),
    ("calib_leak", "detector", "${oc.env:HOME}"),
]


def results_folder(tmp_path: Path, folder: str = "raw", **change: str) -> Path:
    """A results folder holding one small committed raw CSV, with ``change`` (column → value)
    applied to the 4th row of the CSV under ``folder`` (raw, novelty or calib_leak)."""
    root = tmp_path / "results"
    (root / "raw").mkdir(parents=True)
    raw = pd.read_csv(RESULTS / "raw" / SMALL, dtype=str, keep_default_na=False)
    if folder == "raw":
        for col, value in change.items():
            raw.loc[3, col] = value
    raw.to_csv(root / "raw" / SMALL, index=False)
    if folder != "raw":
        (root / folder).mkdir()
        src = next((RESULTS / folder).glob("*.csv"))
        d = pd.read_csv(src, dtype=str, keep_default_na=False)
        for col, value in change.items():
            d.loc[3, col] = value
        d.to_csv(root / folder / "x.csv", index=False)
    return root


def files_under(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")}


@pytest.mark.parametrize(("folder", "column", "value"), HOSTILE)
def test_a_hostile_name_in_a_csv_is_refused_before_anything_is_written(
    tmp_path: Path, folder: str, column: str, value: str
):
    root = results_folder(tmp_path / "a" / "b", folder, **{column: value})
    before = files_under(tmp_path)
    with pytest.raises(DataError) as e:
        build_site(root, tmp_path / "a" / "b" / "site")
    msg = str(e.value)
    csv = root / folder / (SMALL if folder == "raw" else "x.csv")
    assert f"{csv}, column {column}, line 5" in msg, msg
    assert repr(value) in msg and "Fix:" in msg
    assert files_under(tmp_path) == before  # no page, no image, no folder: nothing written


def test_make_report_refuses_a_traversal_name_with_exit_code_2(tmp_path: Path):
    root = results_folder(tmp_path / "a" / "b", benchmark="../../../x")
    proc = run_module(
        str(ROOT / "scripts" / "make_report.py"),
        str(root),
        "--out",
        str(tmp_path / "a" / "b" / "site"),
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert "column benchmark" in proc.stderr and "Traceback" not in proc.stderr
    assert not list(tmp_path.rglob("x*")) and not (tmp_path / "a" / "b" / "site").exists()


def test_failed_only_results_are_a_clear_error(tmp_path: Path):
    root = results_folder(tmp_path)
    raw = pd.read_csv(root / "raw" / SMALL, dtype=str, keep_default_na=False)
    raw = raw.assign(status="failed", error="DataError: no data at /nowhere", value="")
    raw.to_csv(root / "raw" / SMALL, index=False)
    with pytest.raises(DataError, match=r"all \d+ jobs failed \(the first error: DataError: no"):
        build_site(root, tmp_path / "site")


def test_results_under_corruption_only_are_a_clear_error(tmp_path: Path):
    root = tmp_path / "results"
    (root / "raw").mkdir(parents=True)
    raw = pd.read_csv(RESULTS / "raw" / "robustness_openood.csv", dtype=str, keep_default_na=False)
    raw[raw["corruption"] != "none"].to_csv(root / "raw" / "r.csv", index=False)
    with pytest.raises(DataError, match="no result without corruption.*Fix: collect the clean"):
        build_site(root, tmp_path / "site")

"""The worked examples of docs/architecture.md#extend-ood-bench, run as written: a detector, a
benchmark (both through ``--config-dir``) and a metric (patched into a copy of the package)."""

from __future__ import annotations

import re
import shutil
import time

import pandas as pd
import pytest

from tests.conftest import FAST_TRAIN, ROOT, run_module

DOC = ROOT / "docs" / "architecture.md"
MARKER = re.compile(r"<!-- example: (\S+) (\S+) -->\n```\w*\n(.*?)```", re.S)


def examples() -> dict[str, tuple[str, str]]:
    """``{example: (file it goes to, its text)}`` from the doc's marked blocks."""
    return {m[1]: (m[2], m[3]) for m in MARKER.finditer(DOC.read_text())}


def write(tmp_path, *names: str) -> None:
    """The named examples written into ``tmp_path`` at their paths."""
    for name in names:
        rel, text = examples()[name]
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_doc_has_the_examples():
    assert set(examples()) == {
        "detector-module",
        "detector-config",
        "benchmark-config",
        "metric-patch",
    }


def job_rows(tmp_path, cache_dir, *overrides: str, env=None) -> pd.DataFrame:
    """Run one job with the example folder as ``--config-dir`` and return its rows."""
    run_module(
        "-m",
        "ood_bench.run",
        "--config-dir",
        str(tmp_path / "conf"),
        *overrides,
        f"cache_dir={cache_dir}",
        FAST_TRAIN,
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
        env=env,
    )
    return pd.read_csv(tmp_path / "run" / "metrics.csv")


@pytest.mark.slow
def test_add_a_detector_example_runs(tmp_path, cache_dir):
    write(tmp_path, "detector-module", "detector-config")
    t0 = time.perf_counter()
    df = job_rows(
        tmp_path, cache_dir, "detector=my_maxlogit", env={"PYTHONPATH": f"{ROOT}:{tmp_path}"}
    )
    took = time.perf_counter() - t0
    assert (df["status"] == "ok").all() and set(df["detector"]) == {"my_maxlogit"}
    auroc = df.loc[df["metric"] == "auroc", "value"]
    assert len(auroc) == 4 and auroc.mean() > 0.5  # every digits OOD set, better than chance
    print(f"add-a-detector example: {took:.1f} s from writing its two files to the job's rows")


@pytest.mark.slow
def test_add_a_benchmark_example_runs(tmp_path, cache_dir):
    write(tmp_path, "benchmark-config")
    df = job_rows(tmp_path, cache_dir, "benchmark=digits_even", "detector=pood_msp")
    assert (df["status"] == "ok").all() and set(df["benchmark"]) == {"digits_even"}
    sets = df.loc[df["metric"] == "auroc"].set_index("ood_dataset")["ood_group"].to_dict()
    assert sets == {"digits_1_3_5_7_9": "near", "uniform_noise": "far"}


def test_add_a_metric_example_reaches_the_metrics(tmp_path):
    _, lines = examples()["metric-patch"]
    copy = tmp_path / "ood_bench"
    shutil.copytree(ROOT / "ood_bench", copy, ignore=shutil.ignore_patterns("__pycache__"))
    metrics = copy / "metrics.py"
    anchor = lines.splitlines(keepends=True)[0]  # the example's first line is already there
    source = metrics.read_text()
    assert source.count(anchor) == 1
    new = re.search(r'"(\w+)":', lines.splitlines()[1])[1]
    source = source.replace(anchor, lines).replace('"det_err")', f'"det_err", "{new}")', 1)
    metrics.write_text(source)
    proc = run_module(
        "-c",
        "import numpy as np; from ood_bench.metrics import OOD_METRICS, ood_metrics; "
        "m = ood_metrics(np.arange(100.0), np.arange(50.0, 150.0)); "
        "print(sorted(m) == sorted(OOD_METRICS), m['fpr90_ood'])",
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path)},
    )
    ok, value = proc.stdout.split()
    assert ok == "True" and 0 < float(value) < 1

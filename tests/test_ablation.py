"""scripts/ablate_detector.py: one command writes the ablation, per-layer and calibration
analyses (tables, figures, raw CSVs) of a statistical preset."""

from __future__ import annotations

import importlib.util

import pandas as pd
import pytest

from tests.conftest import ROOT


def load_script():
    spec = importlib.util.spec_from_file_location("ablate", ROOT / "scripts" / "ablate_detector.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ablation_writes_every_analysis(tmp_path):
    ablate = load_script()
    out = tmp_path / "abl"
    args = ["--benchmarks", "digits", "--seeds", "0", "--out", str(out)]
    assert ablate.main([*args, f"cache_dir={tmp_path / 'cache'}"]) == 0
    for name in ("ablation", "layers", "calibration"):
        assert (out / f"{name}.csv").is_file() and (out / f"{name}.png").is_file()
    abl = pd.read_csv(out / "ablation.csv")
    assert list(dict.fromkeys(abl["variant"])) == list(ablate.VARIANTS)
    by = abl.groupby("variant")[["auroc", "fpr_at_0.05"]].mean()
    # switching calibration off leaves the ranking (AUROC) and breaks the level
    assert by.loc["calibration: none", "auroc"] == pytest.approx(by.loc["full", "auroc"])
    assert by.loc["full", "fpr_at_0.05"] <= 0.1 < by.loc["calibration: none", "fpr_at_0.05"]
    layers = pd.read_csv(out / "layers.csv")
    assert set(layers["layer"]) == {"block1.max", "block2.max", "block3.max", "fc1", "logits"}
    table = (out / "ablation.md").read_text()
    assert all(f"| {v} |" in table for v in ablate.VARIANTS)


def test_missing_data_skips_a_benchmark_with_the_reason(tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("OOD_BENCH_DATA", raising=False)
    ablate = load_script()
    with pytest.raises(SystemExit, match="no benchmark could be built"):
        ablate.main(
            ["--benchmarks", "mnist_split", "--seeds", "0", "--out", str(tmp_path / "o"),
             "data_root=null", f"cache_dir={tmp_path / 'c'}"]
        )  # fmt: skip
    assert "skipping mnist_split" in caplog.text and "no data root" in caplog.text

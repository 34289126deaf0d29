"""Backbone training is reproducible: same seed → same checkpoint, whatever ran before."""

from __future__ import annotations

import torch

from ood_bench.backbones import get_backbone


def test_training_is_deterministic_in_the_seed(digits_bench, tmp_path):
    a = get_backbone("digits_cnn", digits_bench, tmp_path / "a", seed=3, train={"epochs": 2})
    torch.rand(1000)  # other code consuming the global RNG must not change the result
    b = get_backbone("digits_cnn", digits_bench, tmp_path / "b", seed=3, train={"epochs": 2})
    assert a.sha256 == b.sha256
    c = get_backbone("digits_cnn", digits_bench, tmp_path / "c", seed=4, train={"epochs": 2})
    assert c.sha256 != a.sha256


def test_checkpoint_is_reused_not_retrained(digits_bench, tmp_path):
    a = get_backbone("digits_cnn", digits_bench, tmp_path, seed=0, train={"epochs": 2})
    mtime = a.checkpoint.stat().st_mtime_ns
    b = get_backbone("digits_cnn", digits_bench, tmp_path, seed=0, train={"epochs": 2})
    assert b.checkpoint == a.checkpoint and b.checkpoint.stat().st_mtime_ns == mtime
    assert b.sha256 == a.sha256 and b.info["id_acc"] == a.info["id_acc"]
    meta = a.checkpoint.with_suffix(".json").read_text()
    assert a.sha256 in meta and '"epochs": 2' in meta


def test_train_backbone_script_card_and_reuse(tmp_path):
    import json

    from ood_bench.results import read_results
    from tests.conftest import ROOT, run_module

    proc = run_module(
        str(ROOT / "scripts" / "train_backbone.py"),
        f"out_dir={tmp_path / 'ck'}",
        "backbone.train.epochs=2",
        f"hydra.run.dir={tmp_path / 'h'}",
        cwd=tmp_path,
    )
    card = json.loads((tmp_path / "ck" / "digits_cnn_digits_s0.json").read_text())
    assert {"id_test_acc", "sha256", "epochs", "wall_s", "versions"} <= set(card)
    use = [line for line in proc.stdout.splitlines() if line.startswith("use it:")][0]
    args = use.removeprefix("use it: ").split()
    run_module(
        "-m",
        "ood_bench.run",
        *args,
        "detector=pood_msp",
        f"cache_dir={tmp_path / 'c'}",
        f"hydra.run.dir={tmp_path / 'r'}",
        cwd=tmp_path,
    )
    df = read_results(tmp_path / "r" / "metrics.csv")
    assert df["backbone_sha256"].iloc[0] == card["sha256"] and (df["status"] == "ok").all()
    acc = df.loc[df["metric"] == "id_acc", "value"].iloc[0]
    assert abs(acc - card["id_test_acc"]) < 1e-9
    # the script's card records the split it trained on: calib_source=auto keeps that split's calib
    assert (df["calib_source"] == "train").all()

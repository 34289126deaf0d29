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

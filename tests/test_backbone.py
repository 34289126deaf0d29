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


def test_train_backbone_script_card_and_reuse(tmp_path, digits_bench):
    import json

    from ood_bench.results import read_results
    from tests.conftest import ROOT, run_module

    proc = run_module(
        "-m",
        "ood_bench.cli",
        "train",
        f"out_dir={tmp_path / 'ck'}",
        "backbone.train.epochs=2",
        "threads=1",
        f"hydra.run.dir={tmp_path / 'h'}",
        cwd=tmp_path,
    )
    card = json.loads((tmp_path / "ck" / "digits_cnn_digits_s0.json").read_text())
    assert {"id_test_acc", "sha256", "wall_s", "versions"} <= set(card)
    # the package's one card format (backbones.cards.save_checkpoint), as the cache writes it
    own = get_backbone("digits_cnn", digits_bench, tmp_path / "own", train={"epochs": 2})
    cached = json.loads(own.checkpoint.with_suffix(".json").read_text())
    assert set(cached) <= set(card) and set(card["identity"]) == set(cached["identity"])
    assert card["identity"]["train"]["epochs"] == 2
    assert card["threads"] == 1  # the weights depend on it
    use = [line for line in proc.stdout.splitlines() if line.startswith("use it:")][0]
    args = use.removeprefix("use it: ").split()
    # the trained option itself (its arch_kwargs and taps), loading the file: as the docs say
    assert args[0] == "backbone=digits_cnn" and args[1].startswith("backbone.checkpoint=")
    promised = "`use it: backbone=digits_cnn backbone.checkpoint=<file.pt> backbone.sha256=<hex>`"
    assert promised in " ".join((ROOT / "docs" / "backbones.md").read_text().split())
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
    assert (df["threads"] != "").all()  # the job's own count, recorded in every row
    acc = df.loc[df["metric"] == "id_acc", "value"].iloc[0]
    assert abs(acc - card["id_test_acc"]) < 1e-9
    # the script's card records the split it trained on: calib_source=auto keeps that split's calib
    assert (df["calib_source"] == "train").all()


def test_train_config_identity_keeps_old_checkpoint_names():
    from ood_bench.backbones import TrainConfig

    old = {"epochs": 1, "batch_size": 64, "lr": 0.002, "weight_decay": 0.0001}
    assert TrainConfig(**old).identity() == old  # checkpoints trained before the new fields
    new = TrainConfig(**old, crop_pad=4, flip=True).identity()
    assert new == {**old, "crop_pad": 4, "flip": True}


def test_unknown_optimizer_or_schedule_is_a_config_error():
    import pytest

    from ood_bench.backbones import TrainConfig
    from ood_bench.errors import ConfigError

    with pytest.raises(ConfigError, match="adamw or sgd"):
        TrainConfig(optimizer="adam")
    with pytest.raises(ConfigError, match="cosine or onecycle"):
        TrainConfig(schedule="step")


def test_augment_crops_and_flips_per_image_reproducibly():
    from ood_bench.backbones.training import augment

    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8) + 1
    a = augment(x, 2, True, torch.Generator().manual_seed(0))
    b = augment(x, 2, True, torch.Generator().manual_seed(0))
    assert a.shape == x.shape and torch.equal(a, b)
    assert torch.equal(augment(x, 0, False, torch.Generator()), x)
    # every output is a shifted (zero-padded) window of its own image, possibly mirrored
    for i in range(2):
        windows = torch.nn.functional.pad(x[i], (2, 2, 2, 2)).unfold(1, 8, 1).unfold(2, 8, 1)
        cands = windows.permute(1, 2, 0, 3, 4).reshape(-1, 3, 8, 8)
        hits = [torch.equal(a[i], c) or torch.equal(a[i], c.flip(2)) for c in cands]
        assert any(hits)


def test_cifar_cnn_recipe_runs_and_learns_on_a_toy_task():
    """The CIFAR recipe (SGD one-cycle, label smoothing, crop/flip, channels-last) trains
    CifarCNN on a separable 32×32 RGB toy task; eval mode and the default layout after."""
    from torch.utils.data import DataLoader, TensorDataset

    from ood_bench.backbones import CifarCNN, TrainConfig, model_accuracy, train_classifier

    g = torch.Generator().manual_seed(0)
    y = torch.arange(512) % 2
    x = torch.randn(512, 3, 32, 32, generator=g) * 0.3 + (y.float() * 2 - 1)[:, None, None, None]
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True, generator=g)
    model = CifarCNN(num_classes=2, widths=(8, 16, 16), stem=8)
    cfg = TrainConfig(  # 64 steps: enough for the batch-norm running statistics to settle
        epochs=4, batch_size=32, lr=0.05, weight_decay=5e-4, optimizer="sgd",
        schedule="onecycle", label_smoothing=0.2, crop_pad=4, flip=True, channels_last=True,
    )  # fmt: skip
    train_classifier(model, loader, cfg, seed=0)
    assert not model.training
    assert model.stem[0].weight.is_contiguous()
    assert model_accuracy(model, DataLoader(TensorDataset(x, y), batch_size=128)) > 0.9


def test_the_committed_training_cards_read_in_the_one_format():
    import json

    from ood_bench.backbones.cards import IDENTITY_KEYS, normalized_card
    from ood_bench.docsync.results import training_cards
    from tests.conftest import ROOT

    paths = sorted((ROOT / "results" / "backbones").glob("*.json"))
    assert paths, "no committed training card"
    for path in paths:
        card = normalized_card(json.loads(path.read_text()))
        assert set(card["identity"]) == set(IDENTITY_KEYS), path
        assert card["identity"]["train"]["epochs"] > 0 and card["identity"]["arch"] == "cifar_cnn"
        assert card["identity"]["train_data"]["split"] == "train"
    table = training_cards(ROOT / "results")
    assert all(f"`results/backbones/{p.name}`" in table for p in paths)

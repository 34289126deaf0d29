"""Corruptions and adversarial OOD: every family runs on small gray images, seeded, and only the
targeted sets change."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ood_bench.corruptions import (
    CORRUPTIONS,
    CorruptionConfig,
    apply_corruption,
    attack_ood,
    corrupt_image,
)
from ood_bench.errors import ConfigError


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_every_corruption_runs_on_8x8_and_is_seeded(name, digits_bench):
    bench = apply_corruption(digits_bench, CorruptionConfig(name=name, severity=3, target="id"))
    test = bench.split("test").dataset
    x1, y1 = test[5]
    x2, _ = test[5]
    clean, y0 = digits_bench.split("test").dataset[5]
    assert x1.shape == clean.shape == (1, 8, 8) and y1 == y0
    assert torch.equal(x1, x2), "the same image gets the same corruption every time"
    assert torch.isfinite(x1).all() and float(x1.min()) >= -1e-6 and float(x1.max()) <= 1 + 1e-6
    assert not torch.allclose(x1, clean, atol=1e-3), f"{name} changed nothing"


def test_severity_grows_the_shift(digits_bench):
    clean = torch.stack([digits_bench.split("test").dataset[i][0] for i in range(40)])
    dist = []
    for sev in (1, 3, 5):
        b = apply_corruption(digits_bench, CorruptionConfig("gaussian_noise", sev, "id"))
        x = torch.stack([b.split("test").dataset[i][0] for i in range(40)])
        dist.append(float((x - clean).abs().mean()))
    assert dist[0] < dist[1] < dist[2], dist


def test_only_the_target_sets_change_and_keys_follow(digits_bench):
    c = CorruptionConfig("contrast", 2, "id")
    b = apply_corruption(digits_bench, c)
    assert b.split("fit") is digits_bench.split("fit") and b.split("calib") is digits_bench.split(
        "calib"
    )
    assert b.split("test").spec != digits_bench.split("test").spec
    assert b.split("test").spec["corruption"] == "contrast"
    assert all(s is t for s, t in zip(b.ood, digits_bench.ood, strict=True))
    both = apply_corruption(digits_bench, CorruptionConfig("contrast", 2, "both"))
    assert all(s.spec["severity"] == 2 for s in both.ood)
    other = apply_corruption(digits_bench, CorruptionConfig("contrast", 3, "id"))
    assert other.split("test").spec != b.split("test").spec


def test_replaced_and_package_corruptions_on_rgb():
    img = (np.random.default_rng(0).random((40, 40, 3)) * 255).astype(np.uint8)
    for name in ("gaussian_blur", "glass_blur", "jpeg_compression", "pixelate"):
        out = corrupt_image(img, name, 2)
        assert out.shape == img.shape and np.isfinite(out).all()


def test_bad_corruption_config():
    with pytest.raises(ConfigError, match="unknown corruption 'fog'"):
        CorruptionConfig("fog", 1).check()
    with pytest.raises(ConfigError, match="severity must be 1..5"):
        CorruptionConfig("contrast", 7).check()
    with pytest.raises(ConfigError, match="target=ood"):
        CorruptionConfig("pgd", 0, "id").check()


def test_pgd_makes_ood_look_more_id(digits_bench, digits_backbone):
    bench = digits_bench.select_ood(["uniform_noise"])
    model = digits_backbone.model
    atk = attack_ood(bench, model, CorruptionConfig("pgd", 0, "ood", eps=0.1, steps=5))
    x0 = torch.stack([bench.ood[0].dataset[i][0] for i in range(200)])
    x1 = torch.stack([atk.ood[0].dataset[i][0] for i in range(200)])
    assert float((x1 - x0).abs().max()) <= 0.1 + 1e-5  # inside the L∞ ball
    with torch.no_grad():
        msp0 = model(x0).softmax(1).max(1).values.mean()
        msp1 = model(x1).softmax(1).max(1).values.mean()
    assert msp1 > msp0 + 0.05, (msp0, msp1)
    assert atk.ood[0].spec != bench.ood[0].spec

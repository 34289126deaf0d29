"""The leak ``calib_source`` prevents, measured on real data (FashionMNIST under $OOD_BENCH_DATA).

A LeNet trained on the *whole* FashionMNIST train split (the benchmark's ``train`` ∪ ``calib``:
a user's ``backbone=checkpoint`` file) has seen the benchmark's own ``calib`` split. Conformal
p-values calibrated there are not exchangeable with the unseen ID test images, so the realised
FPR at α leaves its band; calibrated on held-out ID test images (what ``calib_source=auto``
picks for such a checkpoint) it stays inside.

The score that shows the leak is the MSP (``pood_msp``) turned into conformal p-values by the
harness's own :func:`ood_bench.pvalues.conformal_pvalues`: memorised images get a saturated
softmax. The ``stat_*`` family reads channel maxima and distances of intermediate layers, which
barely move between seen and unseen images of such a backbone (their leaked FPR is printed, and
their held-out FPR must stay in the band like every conformal p-value's).

Bands at α = 0.05: the exact binomial 95 % band of n test samples, and the exact band of a
conformal FPR (Beta-binomial: the calibration draw adds its own spread). Run with ``-m slow -s``
to see the numbers (about 3 min on 2 CPU cores).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import betabinom, binom
from torch.utils.data import DataLoader, TensorDataset

from ood_bench.backbones import TrainConfig, build_model, train_classifier
from ood_bench.config import build, compose
from ood_bench.pipeline import prepare
from ood_bench.pvalues import conformal_pvalues
from tests.conftest import DATA

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (DATA / "FashionMNIST" / "raw").is_dir(),
        reason=f"FashionMNIST not found under {DATA}: set OOD_BENCH_DATA to a folder with it in "
        "torchvision's layout to run the leak test",
    ),
]

ALPHA = 0.05
EPOCHS = 20  # no weight decay: train loss ≈ 0.06 vs test loss ≈ 0.35, a clear memorisation gap
MEAN, STD = 0.2860, 0.3530  # FashionMNIST's pixel statistics


def binomial_band(n: int, alpha: float = ALPHA) -> tuple[float, float]:
    """Central 95 % range of the rejected fraction of n exchangeable test samples at level α."""
    return binom.ppf(0.025, n, alpha) / n, binom.ppf(0.975, n, alpha) / n


def conformal_band(n: int, m: int, alpha: float = ALPHA) -> tuple[float, float]:
    """Central 95 % range of a conformal FPR: n test samples, m calibration samples
    (rejection probability Beta(⌊α(m+1)⌋, m+1-⌊α(m+1)⌋) given the calibration draw)."""
    a = np.floor(alpha * (m + 1))
    dist = betabinom(n, a, m + 1 - a)
    return dist.ppf(0.025) / n, dist.ppf(0.975) / n


def train_on_whole_train_split(path) -> None:
    """LeNet on all 60,000 FashionMNIST training images (seeded, AdamW, cosine), saved at
    ``path`` without a harness card: a foreign checkpoint that saw the benchmark's calib."""
    from torchvision.datasets import FashionMNIST

    ds = FashionMNIST(str(DATA), train=True)
    x = ((ds.data.float() / 255 - MEAN) / STD)[:, None]
    loader = DataLoader(
        TensorDataset(x, ds.targets.long()),
        batch_size=128,
        shuffle=True,
        generator=torch.Generator().manual_seed(0),
    )
    torch.manual_seed(0)
    model = build_model("lenet", num_classes=10, in_channels=1)
    tcfg = TrainConfig(epochs=EPOCHS, batch_size=128, lr=3e-3, weight_decay=0.0)
    train_classifier(model, loader, tcfg, seed=0)
    torch.save(model.state_dict(), path)


@pytest.fixture(scope="module")
def realised(tmp_path_factory) -> dict[str, dict]:
    """Realised FPR at α on ID test, calibrated on leaked (train) and held-out (auto) calib."""
    tmp = tmp_path_factory.mktemp("leak")
    ckpt = tmp / "lenet_fashionmnist_all.pt"
    train_on_whole_train_split(ckpt)
    common = [
        "benchmark=mnist_fashion",  # its OOD list is not used: uniform noise only
        "benchmark.name=fashionmnist",
        "benchmark.id_set.dataset=fashionmnist",
        f"benchmark.preprocess.mean=[{MEAN}]",
        f"benchmark.preprocess.std=[{STD}]",
        "ood_sets=[uniform_noise]",
        f"data_root={DATA}",
        f"cache_dir={tmp / 'cache'}",
        "backbone=checkpoint",
        "backbone.arch=lenet",
        f"backbone.checkpoint={ckpt}",
        "calib_test_size=0.5",  # 5,000 calibration and 5,000 test images
    ]
    out: dict[str, dict] = {}
    for source in ("train", "auto"):
        prep = prepare(compose([*common, f"calib_source={source}"]))
        msp = build(compose([*common, "detector=pood_msp"]).detector, "detector")
        msp.fit(prep.fit, prep.calib)
        stat = build(compose([*common, "detector=stat_masf"]).detector, "detector")
        stat.fit(prep.fit, prep.calib)
        p = {
            "msp": conformal_pvalues(msp.score(prep.calib), msp.score(prep.test)),
            "stat_masf": stat.pvalues(prep.test),
        }
        n, m = len(prep.test), len(prep.calib)
        out[source] = {
            "source": prep.calib_source,
            "n": n,
            "m": m,
            "fpr": {k: float(np.mean(v <= ALPHA)) for k, v in p.items()},
            "binomial": binomial_band(n),
            "conformal": conformal_band(n, m),
        }
        r = out[source]
        print(
            f"\ncalib_source={source} → {r['source']}: n_calib={m} n_test={n}, realised FPR at "
            f"α={ALPHA}: "
            + ", ".join(f"{k} {v:.4f}" for k, v in r["fpr"].items())
            + f"; binomial band [{r['binomial'][0]:.4f}, {r['binomial'][1]:.4f}], conformal "
            f"band [{r['conformal'][0]:.4f}, {r['conformal'][1]:.4f}]"
        )
    return out


def test_auto_calibrates_a_foreign_checkpoint_on_held_out_test_images(realised):
    assert realised["auto"]["source"] == "test"
    assert realised["train"]["source"] == "train"
    assert realised["auto"]["n"] + realised["auto"]["m"] == 10_000  # calib ∪ test = ID test
    assert realised["train"]["n"] == 10_000 and realised["train"]["m"] == 6_000


def test_leaked_calibration_lies_above_the_band(realised):
    r = realised["train"]
    fpr, (_, hi), (_, hi_conformal) = r["fpr"]["msp"], r["binomial"], r["conformal"]
    assert fpr > max(hi, hi_conformal), (
        f"calibrated on images the backbone saw, the realised FPR {fpr:.4f} should exceed "
        f"α={ALPHA}'s band (binomial ≤ {hi:.4f}, conformal ≤ {hi_conformal:.4f})"
    )


@pytest.mark.parametrize("score", ["msp", "stat_masf"])
def test_held_out_calibration_lies_inside_the_band(realised, score):
    r = realised["auto"]
    fpr, (lo, hi) = r["fpr"][score], r["conformal"]
    assert lo <= fpr <= hi, f"{score}: realised FPR {fpr:.4f} outside [{lo:.4f}, {hi:.4f}]"

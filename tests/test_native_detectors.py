"""ood-bench's own implementations of published detectors (ood_bench/detectors/native/):
checked against the authors' code on a committed fixture, and one property per paper."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from ood_bench.detectors.native.kpca import KernelPCA
from ood_bench.detectors.native.mahalanobis_pp import MahalanobisPP
from ood_bench.detectors.native.neco import NECO
from ood_bench.detectors.native.weiper import WeiPer
from ood_bench.errors import NotApplicable
from ood_bench.features import Features

AUTHORS = Path(__file__).parent / "fixtures" / "authors"


def _inputs() -> dict[str, np.ndarray]:
    with np.load(AUTHORS / "digits_inputs.npz") as z:
        return {k: v.astype(np.float32) if v.dtype == np.float16 else v for k, v in z.items()}


INPUTS = _inputs()


def feats(split: str, scale: float | np.ndarray = 1.0) -> Features:
    """Fixture features of ``fit`` or ``eval`` (penultimate times ``scale``)."""
    d = INPUTS
    n = len(d[f"{split}_logits"])
    labels = d["fit_labels"] if split == "fit" else np.zeros(n, dtype=np.int64)
    pen = (d[f"{split}_penultimate"] * scale).astype(np.float32)
    return Features(
        torch.from_numpy(d[f"{split}_logits"]), torch.from_numpy(pen), torch.from_numpy(labels)
    )


def with_head(det: WeiPer) -> WeiPer:
    det.set_head(torch.from_numpy(INPUTS["head_weight"]), torch.from_numpy(INPUTS["head_bias"]))
    return det


CROSS = [
    ("mahalanobis_pp.json", "maha_pp", lambda: MahalanobisPP("ob_maha_pp")),
    ("mahalanobis_pp.json", "rmds_pp", lambda: MahalanobisPP("ob_rmds_pp", relative=True)),
    ("neco.json", "standardised", lambda: NECO("ob_neco", max_logit=True)),
    ("kpca.json", "cop", lambda: KernelPCA("ob_cop")),
    (
        "kpca.json",
        "corp",
        lambda: KernelPCA("ob_corp", kernel="cosine_rff", explained_variance=0.8),
    ),
    ("weiper.json", "weiper_kld", lambda: with_head(WeiPer("ob_weiper_kld"))),
    ("weiper.json", "weiper_msp", lambda: with_head(WeiPer("ob_weiper", kld=False))),
]


@pytest.mark.parametrize(("fixture", "key", "make"), CROSS, ids=[c[1] for c in CROSS])
def test_scores_match_the_authors_code(fixture, key, make):
    ref = json.loads((AUTHORS / fixture).read_text())
    ours = make().fit(feats("fit")).score(feats("eval"))
    theirs = np.asarray(ref[key])
    # relative to the scores' scale: the authors' float32 against our float64
    err = np.abs(ours - theirs).max() / np.abs(theirs).max()
    assert err < ref["rtol"], f"{key}: max relative difference {err:.2e} to {ref['repo']}"


def test_neco_port_difference_is_the_missing_standardisation():
    """The maha-norm OpenOOD port projects raw test features; with them standardised (the NECO
    paper) its numbers are ours, and without they differ: the fixture pins both."""
    ref = json.loads((AUTHORS / "neco.json").read_text())
    det = NECO("ob_neco", max_logit=True).fit(feats("fit"))
    assert det.d_ == ref["dim"]
    ours = det.score(feats("eval"))
    assert np.abs(ours - np.asarray(ref["port"])).max() > 0.1


@pytest.mark.parametrize("relative", [False, True])
def test_mahalanobis_pp_ignores_the_feature_scale(relative):
    """Mueller & Hein: after L2 normalisation the score does not depend on the feature norm, so a
    global rescaling (and any positive per-sample one) leaves it unchanged; plain Mahalanobis
    does change under a per-sample rescaling."""
    base = MahalanobisPP("m", relative=relative).fit(feats("fit")).score(feats("eval"))
    scaled = MahalanobisPP("m", relative=relative).fit(feats("fit", 7.5)).score(feats("eval", 7.5))
    per_sample = np.random.default_rng(0).uniform(0.1, 10, size=(80, 1))
    rescaled = (
        MahalanobisPP("m", relative=relative).fit(feats("fit")).score(feats("eval", per_sample))
    )
    np.testing.assert_allclose(scaled, base, rtol=1e-6, atol=1e-6 * np.abs(base).max())
    np.testing.assert_allclose(rescaled, base, rtol=1e-4, atol=1e-4 * np.abs(base).max())
    plain = MahalanobisPP("m", relative=relative, normalise=False).fit(feats("fit"))
    assert not np.allclose(plain.score(feats("eval", per_sample)), plain.score(feats("eval")))


def test_neco_ratio_is_in_unit_interval_and_one_on_the_full_space():
    """Ammar et al.: NECO = ||P z|| / ||z|| of an orthogonal projection, so it lies in [0, 1]
    (before the max-logit factor) and is 1 when the subspace is the whole space."""
    r = NECO("n").fit(feats("fit")).ratio(feats("eval"))
    assert (r >= 0).all() and (r <= 1 + 1e-9).all() and r.min() < 0.99
    full = NECO("n", dim=INPUTS["fit_penultimate"].shape[1]).fit(feats("fit"))
    np.testing.assert_allclose(full.ratio(feats("eval")), 1.0, atol=1e-9)


def test_cop_reconstruction_error_is_zero_on_the_fit_span():
    """Fang et al.: the score is the residual outside the principal subspace of the mapped ID
    features; with every component of non-zero variance kept the fit samples reconstruct
    exactly, and CoP's error is 0 for any vector in their span."""
    rng = np.random.default_rng(0)
    basis = rng.normal(size=(4, 24))
    fit_x = np.abs(rng.normal(size=(60, 4))) @ basis
    new_in = np.abs(rng.normal(size=(10, 4))) @ basis
    off = rng.normal(size=(10, 24))

    def f(x: np.ndarray) -> Features:
        t = torch.from_numpy(x.astype(np.float64))
        return Features(torch.zeros(len(x), 3), t, torch.zeros(len(x), dtype=torch.long))

    det = KernelPCA("k", explained_variance=1 - 1e-9).fit(f(fit_x))
    assert det.q_ <= 4
    assert det.score(f(fit_x)).max() < 1e-6
    assert det.score(f(new_in)).max() < 1e-6  # the span of the normalised fit features holds it
    assert det.score(f(off)).min() > 1e-2


def test_weiper_perturbations_sit_at_relative_distance_delta_and_vanish_at_zero():
    """Granz et al.: each perturbed class projection is at distance delta * ||w_c|| from w_c;
    with delta = 0 every perturbed head is the head, and WeiPer's MSP is the plain MSP."""
    det = with_head(WeiPer("w", kld=False, repeats=5, delta=1.8)).fit(feats("fit"))
    w = torch.from_numpy(INPUTS["head_weight"])
    dist = (det.w_tilde[0].reshape(5, *w.shape) - w).norm(dim=2)
    np.testing.assert_allclose(dist.numpy(), 1.8 * w.norm(dim=1).expand(5, -1).numpy(), rtol=1e-5)
    zero = with_head(WeiPer("w", kld=False, repeats=3, delta=0.0)).fit(feats("fit"))
    msp = torch.from_numpy(INPUTS["eval_logits"]).softmax(1).max(1).values.double().numpy()
    np.testing.assert_allclose(zero.score(feats("eval")), -msp, atol=1e-6)


def test_weiper_reads_the_head_at_bind_and_refuses_a_head_that_is_not_the_map():
    """bind copies the last nn.Linear; a network whose last linear layer does not give the
    logits from the penultimate features is NotApplicable, with the reason."""
    w, b = torch.from_numpy(INPUTS["head_weight"]), torch.from_numpy(INPUTS["head_bias"])
    head = nn.Linear(w.shape[1], w.shape[0])
    head.weight.data, head.bias.data = w.clone(), b.clone()
    det = WeiPer("w", kld=False, repeats=2)
    det.bind(nn.Sequential(nn.Flatten(), head), "cpu")
    assert det.model is None  # only the head is kept
    det.fit(feats("fit"))
    other = nn.Linear(w.shape[1], w.shape[0])
    det2 = WeiPer("w", kld=False, repeats=2)
    det2.bind(nn.Sequential(other), "cpu")
    with pytest.raises(NotApplicable, match="does not map the penultimate"):
        det2.fit(feats("fit"))

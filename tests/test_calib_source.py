"""Calibration data the backbone never saw: ``calib_source`` (auto | train | test).

auto keeps the benchmark's calib split only for a backbone the harness trained on this very
train split (its card says so), else re-cuts calib from ID test; the rows say which; the config
hash and the feature-cache keys follow. The leak itself is measured in test_calib_leak.py."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pandas as pd
import pytest

from ood_bench.backbones import get_backbone, trained_on
from ood_bench.config import compose, config_hash
from ood_bench.data.base import calib_test_fraction
from ood_bench.data.digits import build_digits
from ood_bench.errors import ConfigError
from ood_bench.pipeline import calib_source_of, choose_calib
from ood_bench.results import COLUMNS, collect, read_results
from tests.conftest import FAST_TRAIN, ROOT
from tests.test_image_data import root, toy  # noqa: F401  (root: the npz data fixture)


def _positions(bench, split: str) -> np.ndarray:
    """Positions in the original ID test split of a re-cut split's images."""
    return np.asarray(bench.split(split).dataset.indices)


def _foreign(digits_backbone, tmp_path, card: bool):
    """The harness's digits checkpoint as a user's ``backbone=checkpoint`` file, with or
    without its card beside it."""
    path = tmp_path / "user.pt"
    shutil.copyfile(digits_backbone.checkpoint, path)
    if card:
        shutil.copyfile(digits_backbone.checkpoint.with_suffix(".json"), path.with_suffix(".json"))
    return path


# ------------------------------------------------------------------ auto's decision


def test_auto_keeps_train_calib_for_a_harness_trained_backbone(digits_bench, digits_backbone):
    assert trained_on(digits_backbone, digits_bench.split("train"))
    bench, source = choose_calib(digits_bench, digits_backbone, "auto")
    assert source == "train" and bench is digits_bench


def test_auto_takes_test_calib_for_a_checkpoint_without_card(
    digits_bench, digits_backbone, tmp_path, caplog
):
    path = _foreign(digits_backbone, tmp_path, card=False)
    bb = get_backbone("digits_cnn", digits_bench, tmp_path, checkpoint=str(path))
    assert bb.sha256 == digits_backbone.sha256 and "train_data" not in bb.info
    with caplog.at_level(logging.INFO, logger="ood_bench.pipeline"):
        bench, source = choose_calib(digits_bench, bb, "auto")
    assert source == "test"
    assert len(bench.split("calib")) + len(bench.split("test")) == len(digits_bench.split("test"))
    line = [r.getMessage() for r in caplog.records if r.getMessage().startswith("calib:")]
    assert line == [
        f"calib: {len(bench.split('calib'))} held-out ID test images (backbone not trained by "
        f"the harness on this split); ID test: the other {len(bench.split('test'))}"
    ]


def test_auto_trusts_the_harness_card_beside_a_checkpoint(digits_bench, digits_backbone, tmp_path):
    path = _foreign(digits_backbone, tmp_path, card=True)
    bb = get_backbone("digits_cnn", digits_bench, tmp_path, checkpoint=str(path))
    assert choose_calib(digits_bench, bb, "auto")[1] == "train"
    # a card of other weights says nothing about these
    other = tmp_path / "other"
    other.mkdir()
    shutil.copyfile(path, other / "user.pt")
    (other / "user.json").write_text(
        path.with_suffix(".json").read_text().replace(digits_backbone.sha256, "0" * 64)
    )
    bb = get_backbone("digits_cnn", digits_bench, tmp_path, checkpoint=str(other / "user.pt"))
    assert choose_calib(digits_bench, bb, "auto")[1] == "test"


def test_auto_takes_test_calib_for_a_harness_checkpoint_of_another_seed(digits_backbone, tmp_path):
    # trained by the harness on seed 0's train split, which covers seed 1's calib
    bench1 = build_digits(seed=1)
    path = _foreign(digits_backbone, tmp_path, card=True)
    bb = get_backbone("digits_cnn", bench1, tmp_path, checkpoint=str(path))
    assert "train_data" in bb.info and not trained_on(bb, bench1.split("train"))
    calib1 = {r.tobytes() for r in bench1.split("calib").dataset.tensors[0].numpy()}
    train0 = {r.tobytes() for r in build_digits(seed=0).split("train").dataset.tensors[0].numpy()}
    assert len(calib1 & train0) > 100, "the leak this guards against"
    assert choose_calib(bench1, bb, "auto")[1] == "test"


def test_forcing_train_with_a_foreign_checkpoint_warns(
    digits_bench, digits_backbone, tmp_path, caplog
):
    path = _foreign(digits_backbone, tmp_path, card=False)
    bb = get_backbone("digits_cnn", digits_bench, tmp_path, checkpoint=str(path))
    with caplog.at_level(logging.INFO, logger="ood_bench.pipeline"):
        bench, source = choose_calib(digits_bench, bb, "train")
    assert source == "train" and bench is digits_bench
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "guarantee" in warned[0].getMessage()
    assert "calib_source=test" in warned[0].getMessage()


def test_forcing_test_with_a_harness_backbone(digits_bench, digits_backbone):
    bench, source = choose_calib(digits_bench, digits_backbone, "test")
    assert source == "test" and bench.info["calib_source"] == "test"


# ------------------------------------------------------------------ the re-cut split


def test_calib_from_test_is_disjoint_stratified_and_shrinks_test(digits_bench):
    test = digits_bench.split("test")
    b = digits_bench.calib_from_test()
    calib, rest = _positions(b, "calib"), _positions(b, "test")
    assert not set(calib) & set(rest)
    assert sorted(np.concatenate([calib, rest])) == list(range(len(test)))
    # the digits' default share keeps its fractions' calib : test = 0.15 : 0.25
    assert abs(len(calib) - 0.375 * len(test)) <= 10
    y = test.labels()
    assert np.array_equal(b.split("calib").labels(), y[calib])
    share = np.bincount(y[calib], minlength=10) / np.bincount(y, minlength=10)
    assert np.all(np.abs(share - len(calib) / len(test)) < 0.06)  # stratified
    # the other splits are untouched
    for s in ("train", "fit"):
        assert b.split(s) is digits_bench.split(s)


def test_calib_from_test_sizes_and_determinism(digits_bench):
    n = len(digits_bench.split("test"))
    a, b = digits_bench.calib_from_test(0.5), digits_bench.calib_from_test(0.5)
    assert np.array_equal(_positions(a, "calib"), _positions(b, "calib"))
    assert abs(len(a.split("calib")) - n / 2) <= 10
    counted = digits_bench.calib_from_test(100)
    assert abs(len(counted.split("calib")) - 100) <= 10  # stratified rounding per class
    other_seed = digits_bench.calib_from_test(0.5, seed=1)
    assert not np.array_equal(_positions(other_seed, "calib"), _positions(a, "calib"))


def test_recut_splits_get_specs_of_their_own(digits_bench):
    """Feature-cache keys come from specs: a re-cut split must never share one."""
    a, b = digits_bench.calib_from_test(0.5), digits_bench.calib_from_test(0.3)
    specs = [
        digits_bench.split("calib").spec,
        digits_bench.split("test").spec,
        a.split("calib").spec,
        a.split("test").spec,
        b.split("calib").spec,
        b.split("test").spec,
    ]
    assert len({repr(sorted(s.items())) for s in specs}) == len(specs)
    assert a.split("calib").spec["calib_source"] == "test"
    assert a.split("test").name == digits_bench.split("test").name == "digits_test"
    assert a.split("calib").name == "digits_calib"


@pytest.mark.parametrize("bad", [0, 1.5, -0.1, 10_000, 0.0, "half", True])
def test_bad_calib_test_size_names_the_fix(digits_bench, bad):
    with pytest.raises(ConfigError, match="Fix: calib_test_size="):
        digits_bench.calib_from_test(bad)


def test_calib_test_fraction_of_counts_and_fractions():
    assert calib_test_fraction(0.25, 400) == 0.25
    assert calib_test_fraction(100, 400) == 0.25


def test_image_benchmark_recut(request):
    bench = toy(request.getfixturevalue("root"), calib_fraction=0.2)
    assert bench.info["calib_test_fraction"] == 0.2
    b = bench.calib_from_test()
    assert len(b.split("calib")) == 12 and len(b.split("test")) == 48  # 0.2 of 3 × 20
    x, y = b.split("calib").dataset[0]
    assert x.shape == (1, 12, 12) and int(y) == int(b.split("calib").labels()[0])
    assert b.split("calib").spec["subset_of"] == "toy_test"
    assert b.split("calib").spec["preprocess"] == bench.split("test").spec["preprocess"]


# ------------------------------------------------------------------ config, hash, rows


def test_calib_source_is_in_every_job_config_and_its_hash():
    base = compose()
    assert base.calib_source == "auto" and base.calib_test_size is None
    assert compose(config_name="novelty").calib_source == "auto"
    hashes = {
        config_hash(compose(o))
        for o in ([], ["calib_source=test"], ["calib_source=train"], ["calib_test_size=0.5"])
    }
    assert len(hashes) == 4
    hashes = {
        config_hash(compose(["calib_source=test", *o], config_name="novelty"))
        for o in ([], ["calib_test_size=200"])
    }
    assert len(hashes) == 2


def test_novelty_pool_is_the_id_test_split_with_test_calib(cache_dir):
    """The novelty job pools calib ∪ test and redraws it per trial: with calib from test, the
    pool is exactly the ID test split, and no image of it is counted twice."""
    from ood_bench.pipeline import prepare

    over = ["benchmark=digits_open", FAST_TRAIN, f"cache_dir={cache_dir}", "calib_source=test"]
    prep = prepare(compose(over, config_name="novelty"))
    assert prep.calib_source == "test"
    full = build_digits(name="digits_open", id_classes=[0, 1, 2, 3, 4, 5], seed=0)
    assert len(prep.calib) + len(prep.test) == len(full.split("test"))
    pool = np.concatenate([prep.bench.split(s).dataset.indices for s in ("calib", "test")])
    assert len(np.unique(pool)) == len(pool)


def test_a_bad_calib_source_names_the_fix(digits_bench, digits_backbone):
    with pytest.raises(ConfigError, match="Fix: calib_source=auto"):
        calib_source_of(compose(["calib_source=held_out"]))
    with pytest.raises(ConfigError, match="Fix: calib_source=auto"):
        choose_calib(digits_bench, digits_backbone, "Test")


def test_a_bad_calib_test_size_fails_before_the_backbone_trains(tmp_path):
    from ood_bench.pipeline import prepare

    cfg = compose([f"cache_dir={tmp_path}", "calib_test_size=5000"])
    with pytest.raises(ConfigError, match="Fix: calib_test_size="):
        prepare(cfg)
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize("source", ["auto", "test"])
def test_rows_carry_the_calib_source(cache_dir, source):
    from ood_bench.job import job_identity
    from ood_bench.results import to_frame
    from ood_bench.run import evaluate

    over = [f"cache_dir={cache_dir}", FAST_TRAIN, "detector=stat_masf", f"calib_source={source}"]
    cfg = compose(over)
    job = job_identity(cfg, "run")
    assert job["calib_source"] == ""
    df = to_frame(evaluate(cfg, job))
    want = "train" if source == "auto" else "test"  # the harness trained this digits_cnn
    assert (df["calib_source"] == want).all()
    n_test = df.loc[df["metric"] == "fpr_at_0.05", "n_id"].iloc[0]
    assert n_test == (450 if want == "train" else 283)


def test_old_csvs_without_the_column_read_as_train(tmp_path):
    df = collect(ROOT / "results" / "raw")  # committed results, written before the column
    assert list(df.columns) == COLUMNS
    assert set(df.loc[df.status == "ok", "calib_source"]) <= {"train", "test"}
    first = sorted((ROOT / "results" / "raw").glob("*.csv"))[0]
    old = pd.read_csv(first, dtype=str, keep_default_na=False).head(3)
    old = old.drop(columns=["calib_source"], errors="ignore")
    old.loc[0, "status"] = "failed"
    old.to_csv(tmp_path / "old.csv", index=False)
    back = read_results(tmp_path / "old.csv")
    assert sorted(back["calib_source"]) == ["", "train", "train"]

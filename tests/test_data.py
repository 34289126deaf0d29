"""Splits and the embedded digits benchmarks: determinism, partitions, labels, OOD value ranges."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf
from sklearn.datasets import load_digits

from ood_bench.data.base import Benchmark, stratified_split
from ood_bench.data.digits import FAR_SETS, build_digits
from ood_bench.errors import ConfigError, DataError

CONF = Path(__file__).resolve().parents[1] / "conf" / "benchmark"
FRACTIONS = {"train": 0.5, "fit": 0.1, "calib": 0.15, "test": 0.25}


def _xy(s):
    x, y = s.dataset.tensors
    return x.numpy(), y.numpy()


# ------------------------------------------------------------------------- stratified_split


@pytest.fixture(scope="module")
def labels() -> np.ndarray:
    # unbalanced classes: 0 ×100, 1 ×40, 2 ×7, 3 ×253, shuffled
    y = np.repeat([0, 1, 2, 3], [100, 40, 7, 253])
    return np.random.default_rng(123).permutation(y)


def test_split_is_deterministic_for_a_seed(labels):
    a = stratified_split(labels, FRACTIONS, seed=5)
    b = stratified_split(labels, dict(FRACTIONS), seed=5)
    assert list(a) == list(FRACTIONS)
    for k in FRACTIONS:
        np.testing.assert_array_equal(a[k], b[k])


def test_split_differs_for_another_seed(labels):
    a = stratified_split(labels, FRACTIONS, seed=5)
    b = stratified_split(labels, FRACTIONS, seed=6)
    for k in FRACTIONS:
        assert len(a[k]) == len(b[k])  # same sizes: only the membership is reshuffled
        assert not np.array_equal(a[k], b[k]), k


@pytest.mark.parametrize(
    "fractions",
    [
        FRACTIONS,
        # cumulative sums that land just below 1 in floating point (0.7 + 0.2 + 0.1 =
        # 0.9999999999999999): the last cut must still reach the end of every class
        {"a": 0.7, "b": 0.2, "c": 0.1},
        {"a": 1 / 3, "b": 1 / 3, "c": 1 / 3},
        {"only": 1.0},
    ],
)
def test_split_is_a_partition(labels, fractions):
    parts = stratified_split(labels, fractions, seed=0)
    assert list(parts) == list(fractions)
    allidx = np.concatenate(list(parts.values()))
    assert len(allidx) == len(labels)  # disjoint (no index twice) ...
    np.testing.assert_array_equal(np.sort(allidx), np.arange(len(labels)))  # ... and covering
    for k, idx in parts.items():
        assert idx.dtype.kind == "i", k
        assert np.all(np.diff(idx) > 0), f"{k} indices should be sorted and unique"


def test_split_is_stratified(labels):
    parts = stratified_split(labels, FRACTIONS, seed=1)
    for c in np.unique(labels):
        n_c = int((labels == c).sum())
        for k, frac in FRACTIONS.items():
            got = int((labels[parts[k]] == c).sum())
            # each class is cut at round(cumulative fraction · n_c): within one of frac · n_c
            assert abs(got - frac * n_c) <= 1, (c, k, got, frac * n_c)
    # overall proportions follow the fractions as well
    n = len(labels)
    for k, frac in FRACTIONS.items():
        assert abs(len(parts[k]) - frac * n) <= len(np.unique(labels)), k


def test_split_with_a_zero_fraction_is_empty(labels):
    parts = stratified_split(labels, {"train": 0.7, "fit": 0.0, "test": 0.3}, seed=0)
    assert len(parts["fit"]) == 0
    assert len(parts["train"]) + len(parts["test"]) == len(labels)


@pytest.mark.parametrize(
    "fractions",
    [
        {"train": 0.5, "test": 0.4},  # sums to 0.9
        {"train": 0.8, "test": 0.4},  # sums to 1.2
        {"train": 1.2, "test": -0.2},  # sums to 1 but negative
        {"train": float("nan"), "test": 0.5},
        {},
    ],
)
def test_bad_fractions_raise(labels, fractions):
    with pytest.raises(ConfigError, match="fractions"):
        stratified_split(labels, fractions, seed=0)


# -------------------------------------------------------------------------------- build_digits


@pytest.fixture(scope="module")
def digits_a() -> Benchmark:
    return build_digits(seed=0)


@pytest.fixture(scope="module")
def digits_b() -> Benchmark:
    return build_digits(seed=0)


@pytest.fixture(scope="module")
def digits_other_seed() -> Benchmark:
    return build_digits(seed=1)


@pytest.fixture(scope="module")
def digits_open() -> Benchmark:
    """The shipped conf/benchmark/digits_open.yaml, instantiated as Hydra would."""
    cfg = OmegaConf.create({"seed": 0, "benchmark": OmegaConf.load(CONF / "digits_open.yaml")})
    return instantiate(cfg.benchmark)


@pytest.fixture(scope="module")
def sk_digits():
    d = load_digits()
    return d.images, d.target


def test_digits_splits_are_deterministic_given_seed(digits_a, digits_b):
    assert list(digits_a.splits) == list(digits_b.splits)
    for k in digits_a.splits:
        assert digits_a.split(k).spec == digits_b.split(k).spec, k
        xa, ya = _xy(digits_a.split(k))
        xb, yb = _xy(digits_b.split(k))
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert [s.spec for s in digits_a.ood] == [s.spec for s in digits_b.ood]


def test_digits_another_seed_changes_splits_and_random_ood(digits_a, digits_other_seed):
    for k in ("train", "calib", "test"):
        fa = digits_a.split(k).spec["fingerprint"]
        fb = digits_other_seed.split(k).spec["fingerprint"]
        assert fa != fb, k
        assert len(digits_a.split(k)) == len(digits_other_seed.split(k))
    for name in FAR_SETS:  # the generated sets are drawn from the seed too
        assert (
            digits_a.ood_set(name).spec["fingerprint"]
            != digits_other_seed.ood_set(name).spec["fingerprint"]
        ), name


def test_digits_default_splits(digits_a, sk_digits):
    images, target = sk_digits
    assert digits_a.num_classes == 10 and digits_a.id_name == "digits"
    assert digits_a.in_channels == 1 and digits_a.image_size == (8, 8)
    # fit: 0 → detectors fit on the backbone's training set, the very same object
    assert digits_a.split("fit") is digits_a.split("train")
    sizes = {k: len(digits_a.split(k)) for k in ("train", "calib", "test")}
    assert sum(sizes.values()) == len(target) == 1797
    # the ID splits hold exactly the digits images, as x/16, each exactly once
    xs = np.concatenate([_xy(digits_a.split(k))[0] for k in sizes])[:, 0]
    ys = np.concatenate([_xy(digits_a.split(k))[1] for k in sizes])
    got = sorted(zip(ys.tolist(), map(bytes, (xs * 16).astype(np.uint8)), strict=True))
    want = sorted(zip(target.tolist(), map(bytes, images.astype(np.uint8)), strict=True))
    assert got == want
    # the split spec names its content
    spec = digits_a.split("test").spec
    assert spec["split"] == "test" and spec["seed"] == 0 and spec["transform"] == "x/16"
    assert spec["n"] == sizes["test"] and spec["shape"] == [1, 8, 8]
    assert [s.name for s in digits_a.ood] == list(FAR_SETS)
    assert all(s.group == "far" for s in digits_a.ood)


def test_digits_separate_fit_split():
    b = build_digits(far_sets=["uniform_noise"], fractions=FRACTIONS, seed=0)
    fit, train = b.split("fit"), b.split("train")
    assert fit is not train
    assert fit.spec["split"] == "fit" and fit.spec["fingerprint"] != train.spec["fingerprint"]
    assert len(fit) == pytest.approx(0.1 * 1797, abs=10)
    # fit holds images neither train, calib nor test has
    keys = {k: {bytes(x) for x in _xy(b.split(k))[0]} for k in ("train", "fit", "calib", "test")}
    fit_only = keys["fit"] - keys["train"] - keys["calib"] - keys["test"]
    assert len(fit_only) > 0.9 * len(keys["fit"])  # (the digits have a few duplicate images)
    assert sum(len(b.split(k)) for k in ("train", "fit", "calib", "test")) == 1797


def test_digits_open_config(digits_open, sk_digits):
    images, target = sk_digits
    b = digits_open
    assert b.name == "digits_open"
    assert b.classes == ["0", "1", "2", "3", "4", "5"] and b.num_classes == 6
    ys = np.concatenate([_xy(b.split(k))[1] for k in ("train", "calib", "test")])
    assert sorted(np.unique(ys).tolist()) == [0, 1, 2, 3, 4, 5]  # contiguous labels 0..5
    assert len(ys) == int(np.isin(target, range(6)).sum())
    near = [s for s in b.ood if s.group == "near"]
    assert len(near) == 1
    (near_set,) = near
    assert len(near_set) == 714 == int(np.isin(target, [6, 7, 8, 9]).sum())
    assert near_set.spec["classes"] == [6, 7, 8, 9]
    x, y = _xy(near_set)
    assert np.all(y == -1)
    np.testing.assert_array_equal(x[:, 0] * 16, images[np.isin(target, [6, 7, 8, 9])])
    assert sorted(s.name for s in b.ood if s.group == "far") == sorted(FAR_SETS)


def test_id_labels_are_remapped_in_the_order_of_id_classes(sk_digits):
    images, target = sk_digits
    b = build_digits(id_classes=[7, 3, 9], far_sets=[], seed=0)
    assert b.classes == ["7", "3", "9"] and b.id_name == "digits_739" and b.ood == []
    for k in ("train", "calib", "test"):
        x, y = _xy(b.split(k))
        assert set(np.unique(y).tolist()) == {0, 1, 2}
        # label 0 is digit 7, label 1 digit 3, label 2 digit 9
        for label, digit in enumerate([7, 3, 9]):
            originals = {bytes(im.astype(np.uint8)) for im in images[target == digit]}
            mine = {bytes((im[0] * 16).astype(np.uint8)) for im in x[y == label]}
            assert mine <= originals, (k, label, digit)


def test_ood_sets_are_on_the_digits_grey_levels(digits_open):
    levels = np.arange(17) / 16
    id_x, _ = _xy(digits_open.split("train"))
    assert np.isin(id_x, levels).all()  # the ID convention the OOD sets must follow
    for s in digits_open.ood:
        x, y = _xy(s)
        assert x.dtype == np.float32 and x.shape[1:] == (1, 8, 8), s.name
        assert x.min() >= 0.0 and x.max() <= 1.0, s.name
        assert np.isin(x, levels).all(), f"{s.name} has values off the 17 levels k/16"
        assert np.all(y == -1), s.name
        # not degenerate: several levels used, and images are not all identical
        assert len(np.unique(x)) >= 5, s.name
        assert len({bytes(im) for im in x}) > 0.9 * len(x), s.name
    assert all(len(s) == 500 for s in digits_open.ood if s.group == "far")


def test_unknown_far_set_raises():
    with pytest.raises(ConfigError, match="unknown far OOD set") as e:
        build_digits(far_sets=["uniform_noise", "cifar10"])
    assert "cifar10" in str(e.value) and "gaussian_noise" in str(e.value)


def test_bad_digits_config_raises():
    with pytest.raises(ConfigError, match="train, fit, calib and test"):
        build_digits(fractions={"train": 0.75, "test": 0.25}, far_sets=[])
    with pytest.raises(ConfigError, match="both ID and near-OOD"):
        build_digits(id_classes=[0, 1, 2], near_classes=[2, 3], far_sets=[])


def test_select_ood_keeps_named_sets(digits_open):
    sel = digits_open.select_ood(["uniform_noise", "digits_6_7_8_9"])
    assert [s.name for s in sel.ood] == ["uniform_noise", "digits_6_7_8_9"]
    assert sel.ood[0] is digits_open.ood_set("uniform_noise")
    assert sel.splits is digits_open.splits and sel.classes == digits_open.classes
    assert len(digits_open.ood) == 5  # the original is untouched
    assert digits_open.select_ood(None) is digits_open


def test_select_ood_unknown_name_lists_the_options(digits_open):
    with pytest.raises(ConfigError, match="no OOD set 'svhn'") as e:
        digits_open.select_ood(["uniform_noise", "svhn"])
    msg = str(e.value)
    for s in digits_open.ood:
        assert s.name in msg


def test_unknown_split_raises(digits_a):
    with pytest.raises(ConfigError, match="no split 'val'"):
        digits_a.split("val")


# --- issue 26: names, duplicates and empty OOD sets refused where the benchmark is built -----


def test_select_ood_refuses_a_set_named_twice(digits_open):
    """ood_sets=[uniform_noise,uniform_noise] evaluated the set twice: duplicated rows."""
    with pytest.raises(
        ConfigError,
        match=r"\['uniform_noise'\].*more than once.*"
        r"ood_sets=\[uniform_noise,digits_6_7_8_9\]",
    ):
        digits_open.select_ood(["uniform_noise", "digits_6_7_8_9", "uniform_noise"])


def test_digits_names_are_checked_and_n_ood_must_be_positive():
    with pytest.raises(ConfigError, match=r"invalid benchmark name 'javascript:alert\(3\)//'"):
        build_digits(name="javascript:alert(3)//", far_sets=[])
    with pytest.raises(ConfigError, match=r"OOD set name 'uniform_noise' is given twice"):
        build_digits(far_sets=["uniform_noise", "uniform_noise"], n_ood=5)
    for n in (0, -3):  # 0 gave four empty sets and a KeyError: 'labels' after extraction
        with pytest.raises(ConfigError, match=rf"n_ood={n}: each far OOD set .*n_ood=<number"):
            build_digits(n_ood=n)
    assert build_digits(far_sets=[], n_ood=0).ood == []  # no far set: n_ood unused


def test_a_benchmark_refuses_an_empty_ood_set_and_bad_names(digits_a):
    """However a benchmark is built (a builder, ``replace``), its names and OOD sets are
    checked: an OOD set of 0 images named with the fix, a path-like name refused."""
    from dataclasses import replace

    empty = digits_a.ood[0].subset(np.arange(0), "empty", {})
    with pytest.raises(
        DataError, match=r"OOD set 'empty' of benchmark 'digits' holds no images.*Fix"
    ):
        replace(digits_a, ood=[empty])
    with pytest.raises(ConfigError, match=r"invalid benchmark name '\.\./x'"):
        replace(digits_a, name="../x")
    renamed = digits_a.ood[1].subset(np.arange(3), digits_a.ood[0].name, {})
    with pytest.raises(ConfigError, match="given twice"):
        replace(digits_a, ood=[digits_a.ood[0], renamed])

"""On-disk image sets: npz and ImageFolder sources, preprocessing, clear errors when missing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ood_bench.data.image_benchmark import build_image_benchmark
from ood_bench.data.images import Preprocess
from ood_bench.errors import ConfigError, DataError


@pytest.fixture
def root(tmp_path):
    """A data root with an npz ID set (train/test files), an ImageFolder OOD set, RGB images."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 200), ("test", 60)):
        y = np.arange(n) % 3
        x = (rng.random((n, 12, 12)) * 60 + y[:, None, None] * 60).astype(np.uint8)
        np.savez(tmp_path / f"toy_{split}.npz", x=x, y=y)
    for cls in ("a", "b"):
        (tmp_path / "folder" / cls).mkdir(parents=True)
        for i in range(5):
            arr = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
            Image.fromarray(arr).save(tmp_path / "folder" / cls / f"{i}.png")
    return tmp_path


def toy(root, **kw):
    args = dict(
        name="toy",
        id_set={"npz": "toy_{split}.npz"},
        ood=[
            {"name": "pics", "group": "far", "imagefolder": "folder"},
            {"name": "noise", "group": "far", "noise": "uniform", "n": 30},
        ],
        preprocess={"channels": 1, "size": [12, 12], "mean": [0.5], "std": [0.25]},
        data_root=str(root),
        calib_fraction=0.2,
        seed=0,
    )
    return build_image_benchmark(**{**args, **kw})


def test_npz_and_imagefolder_sets_build_with_preprocessing(root):
    b = toy(root)
    n_train, n_calib = len(b.split("train")), len(b.split("calib"))
    assert n_train + n_calib == 200 and abs(n_calib - 40) <= 1  # stratified, rounded per class
    assert len(b.split("test")) == 60 and b.split("fit") is b.split("train")
    x, y = b.split("test").dataset[0]
    assert x.shape == (1, 12, 12) and y in (0, 1, 2)
    px, py = b.ood_set("pics").dataset[0]
    assert px.shape == (1, 12, 12) and py == -1  # RGB 16×16 folder images → gray 12×12
    assert len(b.ood_set("pics")) == 10 and len(b.ood_set("noise")) == 30
    # normalisation: (v/255 - 0.5)/0.25 lies in [-2, 2]
    assert float(x.min()) >= -2 - 1e-6 and float(x.max()) <= 2 + 1e-6


def test_rgb_preprocessing_expands_gray(root):
    b = toy(root, preprocess={"channels": 3, "size": [8, 8], "mean": [0.5] * 3, "std": [0.5] * 3})
    x, _ = b.split("train").dataset[0]
    assert x.shape == (3, 8, 8) and torch.equal(x[0], x[1])


def test_class_subsets_and_selection(root):
    b = toy(
        root,
        id_set={"npz": "toy_{split}.npz", "classes": [2, 0]},
        ood=[{"name": "held_out", "group": "near", "npz": "toy_test.npz", "classes": [1]}],
    )
    labels = [b.split("test").dataset[i][1] for i in range(len(b.split("test")))]
    assert sorted(set(labels)) == [0, 1]  # classes 2, 0 relabelled 0, 1
    assert len(b.ood_set("held_out")) == 20
    only = toy(root, ood_sets=["noise"])
    assert [s.name for s in only.ood] == ["noise"]
    with pytest.raises(ConfigError, match=r"no OOD set\(s\) \['nope'\].*pics"):
        toy(root, ood_sets=["nope"])


def test_specs_are_deterministic_and_differ_by_seed(root):
    a, b, c = toy(root), toy(root), toy(root, seed=1)
    assert a.split("calib").spec == b.split("calib").spec
    assert a.split("calib").spec != c.split("calib").spec


def test_missing_sets_say_where_and_how(root, tmp_path_factory):
    empty = tmp_path_factory.mktemp("empty")
    with pytest.raises(DataError, match=r"npz set .*toy_train.npz not found"):
        toy(empty)
    with pytest.raises(DataError, match=r"ImageFolder root .*nothere.*ood_sets"):
        toy(root, ood=[{"name": "x", "group": "far", "imagefolder": "nothere"}])
    with pytest.raises(DataError, match=r"MNIST.*not found.*MNIST/raw.*download=true"):
        toy(empty, id_set={"dataset": "mnist"})


def test_bad_preprocess_is_a_config_error():
    with pytest.raises(ConfigError, match="one per channel"):
        Preprocess.from_cfg({"channels": 3, "mean": [0.5], "std": [0.5]})


def test_natural_photo_crops_in_the_id_raw_shape(root):
    """``photos: natural``: offline crops of the bundled photos, uint8 in the ID raw shape
    (grey here), reproducible, ``exclude`` checked."""
    entry = {"name": "photos", "group": "far", "photos": "natural", "n": 25}
    a = toy(root, ood=[entry])
    b = toy(root, ood=[entry])
    x, y = a.ood_set("photos").dataset[3]
    assert len(a.ood_set("photos")) == 25 and x.shape == (1, 12, 12) and y == -1
    assert torch.equal(x, b.ood_set("photos").dataset[3][0])
    with pytest.raises(ConfigError, match="no scikit-image photo"):
        toy(root, ood=[{**entry, "exclude": ["garfield"]}])


def test_colour_photo_crops_keep_their_levels():
    from ood_bench.data.image_benchmark import natural_photos

    crops = natural_photos({"name": "p", "n": 40, "exclude": ["chelsea"]}, (32, 32, 3), seed=0)
    assert crops.shape == (40, 32, 32, 3) and crops.dtype == np.uint8
    spread = crops.reshape(40, -1).max(1) - crops.reshape(40, -1).min(1)
    assert (spread < 255).any()  # not min-max stretched like the grey digits patches


# --- issue 26: labels, class index, names and sizes validated where the data enter ----------


def _folder(path, classes, n=4, size=8):
    """An ImageFolder root with ``n`` grey PNGs per class; the pixel level codes the class."""
    for k, cls in enumerate(classes):
        (path / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img = np.full((size, size), 10 * k + i, np.uint8)
            Image.fromarray(img).save(path / cls / f"{i}.png")


def _folder_bench(root, id_set, **kw):
    return build_image_benchmark(
        name="folders",
        id_set=id_set,
        ood=[{"name": "noise", "group": "far", "noise": "uniform", "n": 5}],
        preprocess={"channels": 1},
        data_root=str(root),
        calib_fraction=0.25,
        **kw,
    )


def test_imagefolder_splits_share_the_train_class_index(tmp_path, caplog):
    """A test/ lacking class c3 numbered its own folders: c4 became label 3 (every later class
    shifted, no warning). Labels now follow train's folders; undeclared, the gap is an error
    naming the class and the split; declared (names or ids), it is allowed and correct."""
    _folder(tmp_path / "d" / "train", ["c0", "c1", "c2", "c3", "c4"])
    _folder(tmp_path / "d" / "test", ["c0", "c1", "c2", "c4"])
    with pytest.raises(
        DataError,
        match=r"class\(es\) 3 \(c3\) of the train split .*train\) have "
        r"no image in the ID test split .*test\).*declare the ID classes",
    ):
        _folder_bench(tmp_path, {"imagefolder": "d/{split}"})
    for declared in (["c0", "c1", "c2", "c3", "c4"], [0, 1, 2, 3, 4]):
        b = _folder_bench(tmp_path, {"imagefolder": "d/{split}", "classes": declared})
        test = b.split("test")
        base = test.dataset.base
        folder_of = [base.classes[base.targets[i]] for i in test.dataset.indices]
        assert sorted(set(zip(folder_of, test.labels().tolist(), strict=True))) == [
            ("c0", 0),
            ("c1", 1),
            ("c2", 2),
            ("c4", 4),
        ]
        assert b.num_classes == 5 and test.spec["class_index"] == "train"  # a new cache key
    assert "ID class(es) 3 (c3) have no image in the ID test split" in caplog.text


def test_a_class_only_in_test_is_an_error_naming_class_and_splits(root, tmp_path):
    """A test class absent from train used to be dropped with its images, without a word."""
    y = np.arange(60) % 4  # class 3 exists in test only (train holds 0, 1, 2)
    np.savez(tmp_path / "t_test.npz", x=np.zeros((60, 12, 12), np.uint8), y=y)
    (tmp_path / "t_train.npz").write_bytes((root / "toy_train.npz").read_bytes())
    with pytest.raises(
        DataError,
        match=r"class\(es\) 3 of the ID test split \(.*t_test.npz\) "
        r"have no image in the train split \(.*t_train.npz\).*15 test images",
    ):
        toy(tmp_path, id_set={"npz": "t_{split}.npz"})
    b = toy(tmp_path, id_set={"npz": "t_{split}.npz", "classes": [0, 1, 2]})  # declared: dropped
    assert len(b.split("test")) == 45
    _folder(tmp_path / "f" / "train", ["a", "b"])
    _folder(tmp_path / "f" / "test", ["a", "b", "c"])
    with pytest.raises(DataError, match=r"class folder\(s\) \['c'\] of the ID test split"):
        _folder_bench(tmp_path, {"imagefolder": "f/{split}"})


def test_npz_labels_are_classes_or_minus_one_in_ood_sets_only(root, tmp_path):
    """-1 in an ID split merged with the last class (``remap[-1]``) and emptied class 0; other
    negatives are no label at all. -1 stays valid in OOD sets, which need no labels."""
    x = np.zeros((30, 12, 12), np.uint8)
    y = np.arange(30) % 3
    np.savez(tmp_path / "u_train.npz", x=x, y=np.where(np.arange(30) < 4, -1, y))
    (tmp_path / "u_test.npz").write_bytes((root / "toy_test.npz").read_bytes())
    with pytest.raises(
        DataError,
        match=r"u_train.npz: 4 of 30 images of the ID train split are "
        r"unlabeled.*OOD sets only.*Fix",
    ):
        toy(tmp_path, id_set={"npz": "u_{split}.npz"})
    np.savez(tmp_path / "neg.npz", x=x, y=np.where(np.arange(30) == 7, -2, y))
    with pytest.raises(
        DataError,
        match=r"neg.npz: y holds negative labels other than -1 "
        r"\(1 of 30, e.g. y\[7\]=-2\)",
    ):
        toy(root, ood=[{"name": "n", "group": "far", "npz": str(tmp_path / "neg.npz")}])
    np.savez(tmp_path / "unlabeled.npz", x=x)  # no y: all -1, fine for an OOD set
    b = toy(root, ood=[{"name": "u", "group": "far", "npz": str(tmp_path / "unlabeled.npz")}])
    assert len(b.ood_set("u")) == 30 and b.split("train").labels().min() == 0
    with pytest.raises(
        DataError,
        match=r"ID class\(es\) 5 of benchmark.id_set.classes have no "
        r"image in the train split",
    ):
        toy(root, id_set={"npz": "toy_{split}.npz", "classes": [0, 5]})
    with pytest.raises(DataError, match=r"OOD set 'h'.*class\(es\) \[7\].*no image"):
        toy(root, ood=[{"name": "h", "group": "near", "npz": "toy_test.npz", "classes": [1, 7]}])


class _Boom:
    """Unpickling this object would create the file it names."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_npz_object_array_and_empty_files_are_named_errors(root, tmp_path):
    witness = tmp_path / "pwned"
    bad = tmp_path / "obj.npz"
    np.savez(bad, x=np.array([_Boom(witness)] * 3, dtype=object), y=np.zeros(3, np.int64))
    with pytest.raises(DataError, match=rf"{bad} holds an object array.*never loaded.*Fix"):
        toy(root, ood=[{"name": "o", "group": "far", "npz": str(bad)}])
    assert not witness.exists()
    empty = tmp_path / "empty.npz"
    np.savez(empty, x=np.zeros((0, 12, 12), np.uint8), y=np.zeros(0, np.int64))
    with pytest.raises(DataError, match=rf"{empty} holds no images.*Fix"):
        toy(root, ood=[{"name": "e", "group": "far", "npz": str(empty)}])


def test_empty_imagefolder_class_folder_is_named(root):
    (root / "folder" / "c_empty").mkdir()
    with pytest.raises(DataError, match=r"class folder\(s\) .*folder/c_empty hold no image.*Fix"):
        toy(root)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"fit_max": 0}, r"fit_max=0 is not a whole number of images ≥ 1.*fit_max=null"),
        ({"fit_max": -5}, r"fit_max=-5 is not"),
        ({"fit_max": 2.5}, r"fit_max=2.5 is not"),
        ({"test_max": 0}, r"test_max=0 is not"),
        ({"ood_max": 0}, r"ood_max=0 is not"),
        (
            {"ood": [{"name": "z", "group": "far", "noise": "uniform", "n": 0}]},
            r"n=0 \(OOD set 'z' of benchmark 'toy'\) is not",
        ),
        (
            {"ood": [{"name": "z", "group": "far", "imagefolder": "folder", "max_samples": 0}]},
            r"max_samples=0 \(OOD set 'z'",
        ),
    ],
)
def test_sizes_of_zero_are_refused_with_the_fix(root, kw, match):
    """fit_max=0 was ignored (fit = all of train); n=0 / ood_max=0 gave an empty OOD set and a
    KeyError: 'labels' after extraction."""
    with pytest.raises(ConfigError, match=match):
        toy(root, **kw)


def test_fit_max_caps_the_fit_split(root):
    b = toy(root, fit_max=7)
    assert len(b.split("fit")) == 7 and len(b.split("train")) > 7


def test_names_are_checked_where_the_benchmark_is_built(root):
    """Names become paths and links: a hostile one is refused; two OOD entries of one name
    (the second's numbers in the first's rows) and ood_sets naming a set twice too."""
    with pytest.raises(ConfigError, match=r"invalid benchmark name '\.\./\.\./x'"):
        toy(root, name="../../x")
    evil = {"name": "javascript:alert(3)//", "group": "far", "noise": "uniform", "n": 5}
    with pytest.raises(ConfigError, match=r"invalid OOD set name 'javascript:alert\(3\)//'"):
        toy(root, ood=[evil])
    twins = [
        {"name": "x", "group": "far", "noise": "uniform", "n": 5},
        {"name": "x", "group": "far", "noise": "gaussian", "n": 9},
    ]
    with pytest.raises(ConfigError, match=r"OOD set name 'x' is given twice in benchmark 'toy'"):
        toy(root, ood=twins)
    with pytest.raises(
        ConfigError,
        match=r"ood_sets names the OOD set\(s\) \['noise'\].*more "
        r"than once.*ood_sets=\[noise,pics\]",
    ):
        toy(root, ood_sets=["noise", "pics", "noise"])

"""The selection protocol (issue 29): options chosen without test OOD data."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset, Subset

from ood_bench.config import compose
from ood_bench.data.image_benchmark import check_validation_disjoint
from ood_bench.detectors.stat import StatDetector
from ood_bench.errors import ConfigError
from ood_bench.features import FeatureExtractor
from ood_bench.selection import TRANSFORMS, load_space, outlier_sets, run_selection
from ood_bench.selection.search import StatScorer, auroc, search, stat_options
from ood_bench.selection.space import resolve_taps
from tests.conftest import CONF

SMALL = {
    "name": "small",
    "protocol": "id_only",
    "transforms": ["patch_permute", "blur", "mix"],
    "val_size": 0.3,
    "val_max": 200,
    "axes": {
        "statistic": [
            {"statistic": "mahalanobis", "normalize": False},
            {"statistic": "mahalanobis", "normalize": True},
            {"statistic": "euclidean"},
        ],
        "reduction": ["max", "both"],
        "taps": ["all", "last_1"],
        "across": ["fisher", "cauchy"],
    },
}


class Refusing(Dataset):
    """A deleted OOD set: reading any image fails."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):
        raise FileNotFoundError("test OOD set deleted from disk")


def test_the_shipped_space_starts_at_stat_maha_energy():
    space = load_space("stat")
    cands = space.candidates()
    n = 1
    for values in space.axes.values():
        n *= len(values)
    assert len(cands) == n and n >= 100
    maha = __import__("yaml").safe_load((CONF / "detector" / "stat_maha_energy.yaml").read_text())
    first = cands[0].as_dict
    assert first.pop("taps") == "all"
    assert all(maha.get(k, False) == v for k, v in first.items()), first


def test_taps_resolve_to_the_deepest_layers():
    taps = ["a", "b", "c"]
    assert resolve_taps({"taps": "last_2"}, taps) == {"layers": ["b", "c"]}
    assert resolve_taps({"taps": "all"}, taps) == {"layers": None}
    assert resolve_taps({"taps": "last_5"}, taps) == {"layers": None}
    with pytest.raises(ConfigError, match="last_<n>"):
        resolve_taps({"taps": "deep"}, taps)


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_each_transformation_changes_the_images_and_is_seeded(name, digits_bench):
    val = digits_bench.split("test")
    a, b = outlier_sets(val, [name], 3)[0], outlier_sets(val, [name], 3)[0]
    x = torch.stack([val.dataset[i][0] for i in range(len(val))]).numpy()
    xa = a.dataset.tensors[0].numpy()
    assert xa.shape == x.shape and not np.allclose(xa, x)
    assert a.spec == b.spec and a.spec["selection_transform"] == name
    assert outlier_sets(val, [name], 4)[0].spec != a.spec or name.startswith("rotate")


def root_indices(ds) -> set[int]:
    """Positions in the underlying dataset of a (nested) Subset."""
    return set(root_positions(ds).tolist())


def root_positions(ds) -> np.ndarray:
    """In order: each item's position in the underlying dataset."""
    if isinstance(ds, Subset):
        return root_positions(ds.dataset)[np.asarray(ds.indices, dtype=np.int64)]
    return np.arange(len(ds))


def test_val_is_cut_from_test_disjoint_from_calib_and_test(digits_bench):
    """With calib from test too, calib, val and test are Subsets of the one ID test array:
    disjoint; the test split shrinks by as much, and the cut is seeded. (train and fit are
    other arrays: the backbone and the detector's fit never hold a val image.)"""
    b = digits_bench.calib_from_test(0.2).val_from_test(0.25)
    ids = {k: root_indices(b.split(k).dataset) for k in ("calib", "test", "val")}
    assert not ids["val"] & ids["test"] and not ids["val"] & ids["calib"]
    assert b.split("val").dataset is not b.split("fit").dataset
    assert len(ids["val"]) + len(ids["test"]) == len(
        digits_bench.calib_from_test(0.2).split("test")
    )
    assert b.split("val").spec != b.split("test").spec and b.split("val").spec["split"] == "val"
    again = digits_bench.calib_from_test(0.2).val_from_test(0.25)
    assert root_indices(again.split("val").dataset) == ids["val"]


def test_the_fast_path_gives_the_detectors_own_statistic(digits_features):
    f = digits_features
    sets = {"val_id": f["test"], "noise": f["uniform_noise"]}
    scorer = StatScorer(f["fit"], sets)
    base = {
        "_target_": "ood_bench.detectors.stat.StatDetector",
        "name": "x",
        "output_test": "energy",
    }
    for over in (
        {"statistic": "mahalanobis", "reduction": "both", "across": "cauchy"},
        {"statistic": "euclidean", "normalize": True, "layers": ["fc1"]},
        {"statistic": "channel", "reference": "class", "output_test": None},
    ):
        opts = stat_options(base, over)
        fast = scorer.scores(opts)
        det = StatDetector("x", **opts.as_dict()).fit_reference(f["fit"])
        for n, feats in sets.items():
            np.testing.assert_allclose(fast[n], det.statistic(feats), rtol=1e-12, atol=1e-12)


def test_rank_auroc_is_the_metrics_auroc():
    from ood_bench.metrics import ood_metrics

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=50).round(1), rng.normal(0.5, size=40).round(1)  # with ties
    assert auroc(a, b) == pytest.approx(ood_metrics(a, b)["auroc"], abs=1e-12)


def test_an_ood_validation_set_sharing_a_name_or_source_is_refused():
    test = [{"name": "fashionmnist", "dataset": "fashionmnist"}, {"name": "u", "noise": "uniform"}]
    check_validation_disjoint([{"name": "g", "noise": "gaussian"}], test, "b")
    with pytest.raises(ConfigError, match="source .* with test OOD set 'fashionmnist'"):
        check_validation_disjoint(  # another split of a test set's dataset: the same distribution
            [{"name": "f", "dataset": "fashionmnist", "split": "train"}], test, "b"
        )
    check_validation_disjoint([{"name": "k", "npz": "kmnist/{split}.npz"}], test, "b")
    with pytest.raises(ConfigError, match="name of test OOD set 'u'"):
        check_validation_disjoint([{"name": "u", "noise": "gaussian"}], test, "b")
    with pytest.raises(ConfigError, match="source .* with test OOD set 'fashionmnist'"):
        check_validation_disjoint([{"name": "fm2", "dataset": "fashionmnist"}], test, "b")


def test_the_choice_is_the_same_with_every_test_ood_set_deleted(
    digits_bench, digits_backbone, tmp_path
):
    """The selection reads no test OOD image: with every OOD set's files gone (reading fails)
    it makes the same choice, and a rerun reads it from the cache without searching."""
    space = load_space(SMALL)
    deleted = replace(
        digits_bench,
        ood=[replace(s, dataset=Refusing(len(s))) for s in digits_bench.ood],
    )
    choices = []
    for k, bench in enumerate((digits_bench, deleted)):
        cfg = compose(["detector=stat_maha_energy", f"cache_dir={tmp_path / str(k)}"])
        b = bench.val_from_test(space.val_size, space.val_max)
        ex = FeatureExtractor(digits_backbone, tmp_path / str(k))
        sel, cached = run_selection(cfg, space, b, digits_backbone.sha256, ex, ex(b.split("fit")))
        assert not cached and sel.n_candidates == 24
        choices.append(sel.overrides)
        again, cached = run_selection(cfg, space, b, digits_backbone.sha256, ex, ex(b.split("fit")))
        assert cached and again.overrides == sel.overrides and ex.forward_samples > 0
    assert choices[0] == choices[1]
    with pytest.raises(FileNotFoundError):  # the deleted sets really cannot be read
        deleted.ood[0].dataset[0]


def test_the_first_candidate_stays_unless_clearly_beaten(digits_features):
    """margin: a challenger must beat the space's first candidate (the current preset) by more
    than it; with margin 0 the best wins."""
    f = digits_features
    det = compose(["detector=stat_maha_energy"]).detector
    sets = {"noise": f["gaussian_noise"], "photos": f["sklearn_photos"]}
    best = search(det, load_space(SMALL), f["fit"], f["test"], sets)
    first = load_space(SMALL).candidates()[0].label()
    kept = search(det, load_space({**SMALL, "margin": 1.0}), f["fit"], f["test"], sets)
    assert kept.label == first
    top = best.table.iloc[0]
    assert best.label == top["candidate"] and best.value == pytest.approx(top["mean_auroc"])


def test_search_needs_an_outlier_set(digits_features):
    f = digits_features
    with pytest.raises(ConfigError, match="no validation outlier"):
        search(
            compose(["detector=stat_maha_energy"]).detector,
            load_space(SMALL),
            f["fit"],
            f["test"],
            {},
        )


@pytest.mark.slow
def test_a_job_records_the_choice_and_a_rerun_reads_it_from_the_cache(tmp_path):
    """selection=<space> on any stat preset: the rows carry ``selection`` and ``param_*``
    (group validation, out of the per-set tables), the selection YAML goes beside the results,
    and a second job does not search again (selection_s 0)."""
    from ood_bench.run import evaluate_job

    cfg = compose(["detector=stat_maha_energy", "selection=stat_quick", f"cache_dir={tmp_path}"])
    frames = []
    for _ in range(2):
        job = {"run_id": "r", "config_hash": "h", "benchmark": "digits", "detector": "d", "seed": 0}
        result = evaluate_job(cfg, job, None)
        rows = {r["metric"]: r for r in result.rows}
        frames.append(rows)
        assert rows["selection"]["ood_dataset"] == "id_only"
        assert rows["param_reduction"]["ood_group"] == "validation"
        assert rows["param_reduction"]["ood_dataset"] in ("max", "both")
        assert "selection.yaml" in result.texts and "selection.csv" in result.tables
        assert len(result.tables["selection.csv"]) == 8
    assert frames[0]["selection_s"]["value"] > 0 and frames[1]["selection_s"]["value"] == 0
    assert (
        frames[0]["param_reduction"]["ood_dataset"] == frames[1]["param_reduction"]["ood_dataset"]
    )
    assert len(list((tmp_path / "selection").glob("*.yaml"))) == 1

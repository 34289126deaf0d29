"""One detector step (issue 27): the job, the novelty job and the cross-checks build, bind, seed
and fit their detector through :func:`ood_bench.pipeline.fitted_detector`, seeding once per job."""

from __future__ import annotations

import numpy as np

from ood_bench import pipeline
from ood_bench.calibration import CalibratedDetector
from ood_bench.config import compose
from tests.conftest import FAST_TRAIN


def counting_seeds(monkeypatch) -> list[int]:
    """Record every global seeding of the job (pipeline.seed_everything)."""
    calls: list[int] = []
    real = pipeline.seed_everything

    def seed(value: int) -> None:
        calls.append(value)
        real(value)

    monkeypatch.setattr(pipeline, "seed_everything", seed)
    return calls


def test_a_job_seeds_the_global_generators_once(monkeypatch, cache_dir):
    from ood_bench.job import job_identity
    from ood_bench.run import evaluate_scored

    cfg = compose(["detector=pood_msp", "seed=3", f"cache_dir={cache_dir}", FAST_TRAIN])
    calls = counting_seeds(monkeypatch)
    evaluate_scored(cfg, {**job_identity(cfg, "test"), "run_id": "r"})
    assert calls == [3]


def test_the_cross_checks_and_the_job_share_the_step(monkeypatch, cache_dir):
    cfg = compose(["detector=pood_knn", f"cache_dir={cache_dir}", FAST_TRAIN])
    prep = pipeline.prepare(cfg)
    calls = counting_seeds(monkeypatch)
    plain = pipeline.fitted_detector(cfg, prep, calibrate=False)
    wrapped = pipeline.fitted_detector(cfg, prep, calibrate=True)
    assert calls == [0, 0]
    assert isinstance(wrapped, CalibratedDetector) and not isinstance(plain, CalibratedDetector)
    # detector_aurocs is that step plus AUROC: the same scores as the detector it builds
    aurocs = pipeline.detector_aurocs(cfg, prep)
    assert set(aurocs) == set(prep.ood) and calls == [0, 0, 0]
    np.testing.assert_array_equal(plain.score(prep.test, "t"), wrapped.score(prep.test, "t"))


def test_a_custom_fit_replaces_the_default(cache_dir):
    cfg = compose(["detector=pood_msp", f"cache_dir={cache_dir}", FAST_TRAIN])
    prep = pipeline.prepare(cfg)
    seen = []
    det = pipeline.fitted_detector(cfg, prep, calibrate=False, fit=lambda d, p: seen.append(d))
    assert seen == [det]

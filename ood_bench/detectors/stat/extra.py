"""Other detectors' evidence as more tests of the statistical detector (``extra_tests``).

Any feature detector of the config group (``conf/detector/<name>.yaml``: a pytorch-ood or
native option, e.g. ``pood_rmd``, ``pood_knn``, ``ob_maha_pp``) is fitted on the same ``fit``
split as the layer statistics; its score on the fit samples is the reference of an empirical
right-tail p-value, one more column beside the layer p-values in the combination. The fit
samples' own scores are in-sample (k-NN finds a sample in its own fit set), so these columns are
not exactly uniform for ID data — but validity never rested on them: the combined statistic is
calibrated on held-out ``calib`` data like every other (Bates et al. 2023), whatever its columns.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from omegaconf import OmegaConf

from ood_bench.config import CONF_DIR, build
from ood_bench.detectors.base import Detector
from ood_bench.detectors.stat.statistics import P_FLOOR
from ood_bench.errors import ConfigError
from ood_bench.features import Features
from ood_bench.names import check_name
from ood_bench.pvalues import EmpiricalReference


def option_file(name: str) -> str:
    """The YAML of detector option ``name``; a ConfigError naming the fix when it is none."""
    check_name(name, "extra test", "detector.extra_tests")
    path = CONF_DIR / "detector" / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(
            f"detector.extra_tests names {name!r}, which is no option of the detector group "
            f"(conf/detector/). Fix: e.g. detector.extra_tests=[pood_rmd,pood_knn]."
        )
    if name.startswith("stat_"):
        raise ConfigError(
            f"detector.extra_tests names {name!r}, a statistical preset: combine its layers "
            "with detector.layers / detector.output_test instead."
        )
    return str(path)


@dataclass
class ExtraTest:
    """One fitted extra detector and the reference of its scores on the fit samples."""

    name: str
    detector: Detector
    reference: EmpiricalReference

    @classmethod
    def fit(cls, name: str, fit: Features) -> ExtraTest:
        """Build option ``name`` from its YAML and fit it on ``fit`` alone."""
        # the option's interpolations (${batch_size}, ${seed}) resolve against the shared keys
        root = OmegaConf.load(CONF_DIR / "shared.yaml")
        root.detector = OmegaConf.load(option_file(name))
        det = build(root.detector, "detector")
        if "model" in det.needs or getattr(det, "reads_calib", False):
            what = "runs the network" if "model" in det.needs else "learns from calib"
            raise ConfigError(
                f"detector.extra_tests: {name} {what}, which an extra test of the statistical "
                "detector cannot (it reads cached features of the fit split only). Fix: name a "
                "feature detector, e.g. pood_rmd, pood_knn, pood_mahalanobis, ob_maha_pp."
            )
        det.fit(fit, None)
        return cls(name, det, EmpiricalReference(det.score(fit, "fit")))

    def pvalues(self, feats: Features) -> np.ndarray:
        """Right-tail empirical p-values of the detector's scores (clipped like a layer's)."""
        p = self.reference.pvalues(self.detector.score(feats), "right")
        return np.clip(p, P_FLOOR, 1.0)

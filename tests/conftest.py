"""Shared fixtures: a trained digits backbone and its features, built once per session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"
# on-disk datasets for the real-data tests: $OOD_BENCH_DATA, else ../shared/data beside the clone
# (as .ci/run sets it). Tests that need it skip, saying so, when it is not there.
DATA = Path(os.environ.get("OOD_BENCH_DATA") or ROOT.parent / "shared" / "data")
# the skip reason of the tests that need OpenOOD; how to install it is printed once, at the end
OPENOOD_SKIP = "OpenOOD is not installed: make openood (install lines: printed once per session)"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """OpenOOD's install lines once per session when a test skipped for want of it (not once
    per skipped test: -ra lists every skip location)."""
    skipped = terminalreporter.stats.get("skipped", [])
    if any(OPENOOD_SKIP in str(getattr(r, "longrepr", "")) for r in skipped):
        from ood_bench.detectors.openood import loader

        terminalreporter.write_sep("-", "OpenOOD (the skipped tests above need it)")
        terminalreporter.write_line(loader.INSTALL_HINT)


# fast training for tests: enough epochs for a backbone that clearly beats chance
FAST_TRAIN = "backbone.train.epochs=15"


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def digits_bench():
    from ood_bench.data.digits import build_digits

    return build_digits(seed=0)


@pytest.fixture(scope="session")
def digits_backbone(digits_bench, cache_dir):
    from ood_bench.backbones import get_backbone

    return get_backbone("digits_cnn", digits_bench, cache_dir, seed=0, train={"epochs": 15})


@pytest.fixture(scope="session")
def digits_features(digits_bench, digits_backbone, cache_dir):
    """Features of fit, calib, test and every OOD set."""
    from ood_bench.features import FeatureExtractor

    ex = FeatureExtractor(digits_backbone, cache_dir)
    feats = {s: ex(digits_bench.split(s)) for s in ("fit", "calib", "test")}
    feats.update({s.name: ex(s) for s in digits_bench.ood})
    return feats


def run_module(*args: str, cwd: Path, env: dict | None = None, check: bool = True):
    """Run ``python -m ood_bench.run ARGS`` (or a script) in a subprocess and return it."""
    # the checkout under test, not whatever an editable install points at (a worktree, a clone)
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    full_env = {**os.environ, "HYDRA_FULL_ERROR": "1", "PYTHONPATH": path, **(env or {})}
    proc = subprocess.run(
        [sys.executable, *args], cwd=cwd, env=full_env, capture_output=True, text=True
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc

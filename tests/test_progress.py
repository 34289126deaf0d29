"""Long work reports progress in the log, so runs whose output is not a terminal (no tqdm bar:
batch jobs, SLURM, ``> file``) show it too: a line per training epoch, and extraction of a large
set every 10 % or minute; small sets stay quiet."""

from __future__ import annotations

import io
import logging
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import ood_bench.features as features_mod
from ood_bench.backbones import Backbone, DigitsCNN, TrainConfig, train_classifier
from ood_bench.data.base import tensor_set
from ood_bench.features import FeatureExtractor
from ood_bench.progress import ProgressLog, duration

EPOCH_LINE = re.compile(
    r"train DigitsCNN epoch (\d+)/3: loss \d+\.\d{4}, train accuracy \d+\.\d{2}%, "
    r"elapsed \d+ s, ~\d+ s left"
)
EXTRACT_LINE = re.compile(r"extract big: (\d+)/100 images \((\d+)%\), elapsed \d+ s, ~\d+ s left")


def messages(caplog, logger: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger]


def test_training_logs_one_line_per_epoch(caplog):
    caplog.set_level(logging.INFO, logger="ood_bench")
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.rand(32, 1, 8, 8, generator=g), torch.arange(32) % 10)
    loader = DataLoader(data, batch_size=8)
    train_classifier(DigitsCNN(), loader, TrainConfig(epochs=3), seed=0)
    lines = [m for m in messages(caplog, "ood_bench.backbones") if "epoch" in m]
    assert len(lines) == 3, lines
    matches = [EPOCH_LINE.fullmatch(m) for m in lines]
    assert all(matches), lines
    assert [int(m.group(1)) for m in matches] == [1, 2, 3]
    assert lines[-1].endswith("~0 s left")


def _extractor(batch_size: int) -> FeatureExtractor:
    torch.manual_seed(0)
    model = DigitsCNN().eval()
    bb = Backbone("cnn", model, "0" * 64, Path("."), list(model.taps), model.penultimate)
    return FeatureExtractor(bb, Path("never-written"), batch_size=batch_size)  # extract() only


def _images(name: str, n: int):
    x = np.random.default_rng(0).random((n, 1, 8, 8), dtype=np.float32)
    return tensor_set(name, x, np.arange(n) % 10, {"test": name})


@pytest.fixture
def terminal(monkeypatch):
    """Make extraction see a terminal (tqdm's bar on: True) or not (False), whatever runs us."""

    real = features_mod.tqdm

    def set_to(is_tty: bool) -> None:
        monkeypatch.setattr(
            features_mod,
            "tqdm",
            lambda *a, **k: real(*a, **{**k, "disable": not is_tty, "file": io.StringIO()}),
        )

    return set_to


def test_extraction_of_a_large_set_logs_every_10_percent_off_a_terminal(caplog, terminal):
    terminal(False)
    caplog.set_level(logging.INFO, logger="ood_bench")
    f = _extractor(batch_size=5).extract(_images("big", 100))  # 20 batches
    assert len(f) == 100
    lines = messages(caplog, "ood_bench.features")
    matches = [EXTRACT_LINE.fullmatch(m) for m in lines]
    assert all(matches), lines
    assert [int(m.group(1)) for m in matches] == list(range(10, 101, 10))
    assert [int(m.group(2)) for m in matches] == list(range(10, 101, 10))


def test_extraction_of_a_small_set_or_on_a_terminal_does_not_log(caplog, terminal):
    caplog.set_level(logging.INFO, logger="ood_bench")
    terminal(False)
    _extractor(batch_size=5).extract(_images("small", 15))  # 3 batches: quick, no lines
    terminal(True)
    _extractor(batch_size=5).extract(_images("big", 100))  # the bar shows progress
    assert messages(caplog, "ood_bench.features") == []


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_progress_logs_every_interval_when_batches_are_few_but_slow(caplog):
    caplog.set_level(logging.INFO, logger="t")
    clock = Clock()
    p = ProgressLog(logging.getLogger("t"), "x", 300, updates=3, interval=60, clock=clock)
    for _ in range(3):
        clock.t += 90  # each of three batches takes a minute and a half
        p.update(100)
    assert messages(caplog, "t") == [
        "x: 100/300 images (33%), elapsed 1.5 min, ~3.0 min left",
        "x: 200/300 images (67%), elapsed 3.0 min, ~1.5 min left",
        "x: 300/300 images (100%), elapsed 4.5 min, ~0 s left",
    ]


def test_progress_line_within_a_minute_of_the_last_even_between_milestones(caplog):
    caplog.set_level(logging.INFO, logger="t")
    clock = Clock()
    p = ProgressLog(logging.getLogger("t"), "x", 1000, updates=1000, interval=60, clock=clock)
    clock.t = 61
    p.update(1)  # 0.1 %: no milestone, but a minute has passed
    clock.t = 62
    p.update(1)  # neither
    assert len(messages(caplog, "t")) == 1


class SlowImages(TensorDataset):
    """Images that take ``seconds`` each to load, on ``clock`` (a fake one: the test is fast)."""

    def __init__(self, clock: Clock, seconds: float, *tensors: torch.Tensor):
        super().__init__(*tensors)
        self.clock, self.seconds = clock, seconds

    def __getitem__(self, i):
        self.clock.t += self.seconds
        return super().__getitem__(i)


BATCH_LINE = re.compile(
    r"train DigitsCNN: (\d+)/16 batches \(\d+%\), elapsed [\d.]+ (s|min), ~[\d.]+ (s|min) left "
    r"\((\d+\.\d) images/s, epoch (\d)/2\)"
)


def test_slow_training_logs_its_batches_within_a_minute_and_then_every_minute(caplog):
    """A slow first epoch (8 batches of 20 s each, on a fake clock) is not silent until its end:
    a line with batches done, images per second and time left comes within a minute, then at
    least once a minute (to the batch: the log is checked after each one)."""
    caplog.set_level(logging.INFO, logger="ood_bench")
    clock = Clock()
    stamps: list[tuple[float, str]] = []

    class Stamp(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            stamps.append((clock.t, record.getMessage()))

    handler = Stamp()
    logger = logging.getLogger("ood_bench.backbones")
    logger.addHandler(handler)
    try:
        g = torch.Generator().manual_seed(0)
        x, y = torch.rand(64, 1, 8, 8, generator=g), torch.arange(64) % 10
        loader = DataLoader(SlowImages(clock, 2.5, x, y), batch_size=8)  # 8 batches of 20 s
        train_classifier(DigitsCNN(), loader, TrainConfig(epochs=2), seed=0, clock=clock)
    finally:
        logger.removeHandler(handler)
    epoch_1 = next(i for i, (_, m) in enumerate(stamps) if "epoch 1/2: loss" in m)
    before = [BATCH_LINE.fullmatch(m) for _, m in stamps[:epoch_1]]
    assert before and all(before), stamps
    assert int(before[0].group(1)) < 8 and before[0].group(5) == "1"
    assert float(before[0].group(4)) == pytest.approx(0.4, abs=0.05)  # 8 images per 20 s
    times = [0.0] + [t for t, _ in stamps]
    assert times[1] <= 30 + 20, stamps  # the first line after 30 s, to the batch
    assert max(b - a for a, b in zip(times[:-1], times[1:], strict=True)) <= 60 + 20, stamps


def test_duration():
    assert [duration(s) for s in (4.2, 59, 90, 5400)] == ["4 s", "59 s", "1.5 min", "1.5 h"]

"""Feature cache keys and extraction, atomic writes, and checkpoint loading (no training)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ood_bench.atomic import atomic_write, atomic_write_text
from ood_bench.backbones import Backbone, DigitsCNN, get_backbone
from ood_bench.data.base import Benchmark, ImageSet, tensor_set
from ood_bench.errors import CheckpointError, ConfigError
from ood_bench.features import EXTRACTOR_VERSION, FeatureExtractor, cache_key
from ood_bench.hashing import sha256_file

FAKE_SHA = "a" * 64
SPEC = {"source": "test", "transform": "x/16", "split": "test", "seed": 0}

# Builds the same backbone identity and data set as the helpers below, in a fresh process.
KEY_SCRIPT = """
import json, sys
import numpy as np
from ood_bench.backbones import Backbone, DigitsCNN
from ood_bench.data.base import tensor_set
from ood_bench.features import cache_key
from pathlib import Path
args = json.loads(sys.argv[1])
rng = np.random.default_rng(0)
x = (rng.integers(0, 17, size=(24, 1, 8, 8)) / 16).astype(np.float32)
y = np.arange(24) % 3
data = tensor_set("tiny", x, y, args["spec"])
bb = Backbone("cnn", DigitsCNN(num_classes=3, width=4), args["sha"], Path("x.pt"),
              list(DigitsCNN.taps), "fc1")
print(cache_key(bb, data, args["taps"]))
"""


def _data(spec: dict | None = None, n: int = 24) -> ImageSet:
    rng = np.random.default_rng(0)
    x = (rng.integers(0, 17, size=(n, 1, 8, 8)) / 16).astype(np.float32)
    y = np.arange(n) % 3
    return tensor_set("tiny", x, y, dict(SPEC if spec is None else spec))


def _backbone(sha: str = FAKE_SHA, width: int = 4) -> Backbone:
    torch.manual_seed(0)
    model = DigitsCNN(num_classes=3, width=width).eval()
    return Backbone("cnn", model, sha, Path("x.pt"), list(DigitsCNN.taps), "fc1")


# ------------------------------------------------------------------------------- cache keys


def test_cache_key_is_stable_within_a_process():
    taps = ["block1", "block3"]
    k1 = cache_key(_backbone(), _data(), taps)
    k2 = cache_key(_backbone(), _data(), list(reversed(taps)))  # tap order does not matter
    assert k1 == k2
    assert len(k1) == 64 and int(k1, 16) >= 0  # a sha256 hex digest


def test_cache_key_is_stable_across_processes():
    taps = ["block3", "block1"]
    expected = cache_key(_backbone(), _data(), taps)
    arg = json.dumps({"spec": SPEC, "sha": FAKE_SHA, "taps": taps})
    for hashseed in ("1", "2"):  # str hashing is salted per process: the key must not be
        env = {**os.environ, "PYTHONHASHSEED": hashseed}
        out = subprocess.run(
            [sys.executable, "-c", KEY_SCRIPT, arg],
            capture_output=True,
            text=True,
            check=True,
            env=env,
            timeout=120,
        )
        assert out.stdout.strip().splitlines()[-1] == expected


def test_cache_key_changes_with_checkpoint_sha256():
    data, taps = _data(), ["block1"]
    assert cache_key(_backbone("a" * 64), data, taps) != cache_key(_backbone("b" * 64), data, taps)


@pytest.mark.parametrize(
    "change",
    [
        {"transform": "x/255"},
        {"split": "calib"},
        {"seed": 1},
        {"source": "other"},
    ],
)
def test_cache_key_changes_with_dataset_spec(change):
    bb, taps = _backbone(), ["block1"]
    base = cache_key(bb, _data(), taps)
    assert cache_key(bb, _data({**SPEC, **change}), taps) != base


def test_cache_key_changes_with_dataset_content():
    # same spec, different data → different fingerprint → different key
    bb, taps = _backbone(), ["block1"]
    a, b = _data(n=24), _data(n=23)
    assert a.spec["fingerprint"] != b.spec["fingerprint"]
    assert cache_key(bb, a, taps) != cache_key(bb, b, taps)


def test_cache_key_changes_with_taps():
    bb, data = _backbone(), _data()
    keys = {
        cache_key(bb, data, t)
        for t in (["block1"], ["block2"], ["block1", "block2"], [], ["block1", "block2", "fc1"])
    }
    assert len(keys) == 5


def test_cache_key_changes_with_penultimate_and_extractor_version(monkeypatch):
    data, taps = _data(), ["block1"]
    bb = _backbone()
    base = cache_key(bb, data, taps)
    bb.penultimate = "block3"
    assert cache_key(bb, data, taps) != base
    bb.penultimate = "fc1"
    assert cache_key(bb, data, taps) == base
    monkeypatch.setattr("ood_bench.features.EXTRACTOR_VERSION", EXTRACTOR_VERSION + 1)
    assert cache_key(bb, data, taps) != base


# -------------------------------------------------------------------------- FeatureExtractor


@pytest.fixture
def extractor(tmp_path) -> FeatureExtractor:
    return FeatureExtractor(_backbone(), tmp_path, batch_size=10, taps=["block1", "block3"])


def test_first_call_extracts_second_reads_cache(extractor, tmp_path):
    data = _data()
    f1 = extractor(data)
    assert extractor.forward_samples == len(data) == 24
    assert (extractor.cache_misses, extractor.cache_hits) == (1, 0)
    files = list((tmp_path / "features").glob("*.pt"))
    assert [f.name for f in files] == [extractor.path(data).name]

    f2 = extractor(_data())  # an equal set, built again
    assert extractor.forward_samples == 24  # no forward pass
    assert (extractor.cache_misses, extractor.cache_hits) == (1, 1)
    for a, b in [(f1.logits, f2.logits), (f1.penultimate, f2.penultimate), (f1.labels, f2.labels)]:
        assert torch.equal(a, b)
    assert f1.taps.keys() == f2.taps.keys()
    for k in f1.taps:
        assert torch.equal(f1.taps[k], f2.taps[k]), k

    # a fresh extractor (another job) on the same cache dir also hits
    other = FeatureExtractor(_backbone(), tmp_path, batch_size=7, taps=["block3", "block1"])
    f3 = other(data)
    assert (other.forward_samples, other.cache_hits, other.cache_misses) == (0, 1, 0)
    assert torch.equal(f3.logits, f1.logits)


def test_extracted_features_match_the_model(extractor):
    data = _data()
    feats = extractor(data)
    x, y = data.dataset.tensors
    model = extractor.backbone.model
    with torch.no_grad():
        logits = model(x)
        b1 = model.block1(x)
        b3 = model.block3(model.block2(b1))
        pen = model.fc1(model.pool(b3))
    assert len(feats) == 24
    torch.testing.assert_close(feats.logits, logits)
    torch.testing.assert_close(feats.penultimate, pen)
    assert torch.equal(feats.labels, y) and feats.labels.dtype == torch.int64
    assert feats.penultimate.shape == (24, 128)
    assert np.array_equal(feats.predictions(), logits.argmax(1).numpy())
    # pooled taps: channel-wise max and mean over space, N×C
    assert sorted(feats.taps) == ["block1.max", "block1.mean", "block3.max", "block3.mean"]
    assert feats.taps["block1.max"].shape == (24, 4)  # width 4
    assert feats.taps["block3.mean"].shape == (24, 8)  # 2·width
    torch.testing.assert_close(feats.taps["block1.max"], b1.amax(dim=(2, 3)))
    torch.testing.assert_close(feats.taps["block3.mean"], b3.mean(dim=(2, 3)))
    for layer in ("block1", "block3"):
        mx, mean = feats.taps[f"{layer}.max"], feats.taps[f"{layer}.mean"]
        assert (mx >= mean - 1e-6).all(), layer
        assert (mx > mean + 1e-6).any(), f"{layer}: max and mean should differ somewhere"
    assert feats.meta["forward_ms_per_sample"] > 0 and feats.meta["device"] == "cpu"


def test_flat_tap_is_stored_as_is(tmp_path):
    ex = FeatureExtractor(_backbone(), tmp_path, taps=["fc1"])
    feats = ex(_data())
    assert list(feats.taps) == ["fc1"]
    assert torch.equal(feats.taps["fc1"], feats.penultimate)


def test_corrupt_cache_file_is_rebuilt_with_a_warning(extractor, caplog):
    data = _data()
    f1 = extractor(data)
    path = extractor.path(data)
    path.write_bytes(b"\x00garbage, not a torch file\xff" * 10)
    with caplog.at_level(logging.WARNING, logger="ood_bench.features"):
        f2 = extractor(data)
    assert any(r.levelno == logging.WARNING and "corrupt" in r.getMessage() for r in caplog.records)
    assert (extractor.cache_misses, extractor.cache_hits) == (2, 0)
    assert extractor.forward_samples == 48  # extracted again
    assert torch.equal(f1.logits, f2.logits)
    # the entry was rewritten: the next call reads it
    f3 = extractor(data)
    assert (extractor.cache_hits, extractor.forward_samples) == (1, 48)
    assert torch.equal(f3.logits, f1.logits)


def test_valid_but_altered_entry_fails_its_checksum(extractor, caplog):
    """A readable torch file with other numbers in it (silent corruption, a stray copy) is
    caught by the sha256 sidecar, not served."""
    data = _data()
    f1 = extractor(data)
    path = extractor.path(data)
    d = torch.load(path, weights_only=True)
    d["logits"] = d["logits"] + 1.0
    torch.save(d, path)
    with caplog.at_level(logging.WARNING, logger="ood_bench.features"):
        f2 = extractor(data)
    assert any("checksum mismatch" in r.getMessage() for r in caplog.records)
    assert torch.equal(f2.logits, f1.logits) and extractor.cache_misses == 2


def test_truncated_cache_file_is_rebuilt(extractor):
    data = _data()
    extractor(data)
    path = extractor.path(data)
    path.write_bytes(path.read_bytes()[:100])  # a half-written entry
    extractor(data)
    assert (extractor.cache_misses, extractor.cache_hits) == (2, 0)


def test_unknown_tap_raises_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not modules of cnn") as e:
        FeatureExtractor(_backbone(), tmp_path, taps=["block1", "layer4"])
    assert "layer4" in str(e.value) and "block2" in str(e.value)  # names the options
    bb = _backbone()
    bb.penultimate = "avgpool"
    with pytest.raises(ConfigError, match="avgpool"):
        FeatureExtractor(bb, tmp_path, taps=[])


def test_default_taps_come_from_the_backbone(tmp_path):
    ex = FeatureExtractor(_backbone(), tmp_path)
    assert ex.taps == list(DigitsCNN.taps)


# ----------------------------------------------------------------------------- atomic_write


def test_atomic_write_writes_the_target(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    atomic_write_text(target, "hello")
    assert target.read_text() == "hello"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.txt"]


def test_atomic_write_failure_leaves_no_temp_and_no_target(tmp_path):
    target = tmp_path / "out.bin"
    seen: list[Path] = []

    def writer(p: Path) -> None:
        seen.append(p)
        p.write_bytes(b"half")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError, match="killed mid-write"):
        atomic_write(target, writer)
    assert seen and seen[0].parent == tmp_path and seen[0] != target
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_failure_keeps_the_old_target(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")

    def writer(p: Path) -> None:
        p.write_text("new but broken")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, writer)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


# ------------------------------------------------------------------------------- backbones


@pytest.fixture(scope="module")
def tiny_bench() -> Benchmark:
    rng = np.random.default_rng(0)
    x = (rng.integers(0, 17, size=(30, 1, 8, 8)) / 16).astype(np.float32)
    y = np.arange(30) % 10
    test = tensor_set("tiny_test", x, y, {"source": "test"})
    return Benchmark(
        "tiny", "tiny", [str(c) for c in range(10)], 1, (8, 8), {"train": test, "test": test}, []
    )


def _save(model: torch.nn.Module, path: Path) -> str:
    torch.save(model.state_dict(), path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_get_backbone_loads_an_explicit_checkpoint(tiny_bench, tmp_path):
    torch.manual_seed(1)
    src = DigitsCNN(width=16)
    ckpt = tmp_path / "w16.pt"
    digest = _save(src, ckpt)
    bb = get_backbone(
        "digits_cnn",
        tiny_bench,
        tmp_path / "cache",
        checkpoint=str(ckpt),
        sha256=digest,
        arch_kwargs={"width": 16},
    )
    assert bb.sha256 == digest == sha256_file(ckpt)
    assert bb.checkpoint == ckpt and bb.taps == list(DigitsCNN.taps) and bb.penultimate == "fc1"
    for k, v in src.state_dict().items():
        assert torch.equal(bb.model.state_dict()[k], v), k
    assert not any(p.requires_grad for p in bb.model.parameters())
    assert not bb.model.training
    assert "id_acc" not in bb.info  # the runner measures it on cached features: no extra pass
    assert not (tmp_path / "cache" / "checkpoints").exists()  # nothing trained or saved


def test_checkpoint_of_another_architecture_raises(tiny_bench, tmp_path):
    ckpt = tmp_path / "w16.pt"
    _save(DigitsCNN(width=16), ckpt)
    with pytest.raises(CheckpointError) as e:
        get_backbone(
            "digits_cnn",
            tiny_bench,
            tmp_path / "cache",
            checkpoint=str(ckpt),
            arch_kwargs={"width": 32},
        )
    msg = str(e.value)
    assert "'digits_cnn'" in msg and "DigitsCNN" in msg  # names the architecture
    assert "Fix:" in msg and "width" in msg  # and the fix
    assert "block1.0.weight: file (16, 1, 3, 3) vs model (32, 1, 3, 3)" in msg  # and why


def test_checkpoint_with_other_keys_raises(tiny_bench, tmp_path):
    ckpt = tmp_path / "other.pt"
    torch.save({"conv.weight": torch.zeros(3, 3)}, ckpt)
    with pytest.raises(CheckpointError, match="does not match architecture 'digits_cnn'"):
        get_backbone("digits_cnn", tiny_bench, tmp_path, checkpoint=str(ckpt))


def test_wrong_sha256_raises(tiny_bench, tmp_path):
    ckpt = tmp_path / "w32.pt"
    digest = _save(DigitsCNN(), ckpt)
    wrong = "0" * 64
    with pytest.raises(CheckpointError, match="expected 0000") as e:
        get_backbone("digits_cnn", tiny_bench, tmp_path, checkpoint=str(ckpt), sha256=wrong)
    assert digest in str(e.value) and "Fix:" in str(e.value)


def test_sha256_is_case_insensitive_and_must_be_a_digest(tiny_bench, tmp_path):
    """An upper-case digest (as some tools print it) was reported as a mismatch; a value that
    is no digest at all is a config error before anything is loaded."""
    ckpt = tmp_path / "w32.pt"
    digest = _save(DigitsCNN(), ckpt)
    for given in (digest.upper(), f" {digest}\n"):
        bb = get_backbone("digits_cnn", tiny_bench, tmp_path, checkpoint=str(ckpt), sha256=given)
        assert bb.sha256 == digest
    for bad in (digest[:12], digest[:-1] + "g", "sha256:" + digest):
        with pytest.raises(ConfigError, match=r"is not a sha256 digest \(64 hexadecimal.*Fix"):
            get_backbone("digits_cnn", tiny_bench, tmp_path, checkpoint=str(ckpt), sha256=bad)


def test_missing_or_corrupt_checkpoint_raises(tiny_bench, tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        get_backbone("digits_cnn", tiny_bench, tmp_path, checkpoint=str(tmp_path / "none.pt"))
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        get_backbone("digits_cnn", tiny_bench, tmp_path, checkpoint=str(bad))


@pytest.mark.parametrize("content", [torch.zeros(3), [1, 2]])
def test_checkpoint_that_is_not_a_state_dict_raises_checkpoint_error(tiny_bench, tmp_path, content):
    ckpt = tmp_path / "notadict.pt"
    torch.save(content, ckpt)
    with pytest.raises(CheckpointError, match="digits_cnn"):
        get_backbone("digits_cnn", tiny_bench, tmp_path, checkpoint=str(ckpt))


def test_unknown_architecture_raises(tiny_bench, tmp_path):
    with pytest.raises(ConfigError, match="unknown architecture 'resnet'"):
        get_backbone("resnet", tiny_bench, tmp_path, checkpoint=str(tmp_path / "x.pt"))

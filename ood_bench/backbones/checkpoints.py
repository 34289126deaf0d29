"""Backbone checkpoints: training once into the cache or loading a file, sha256-checked, with
the card that records how it was made."""

from __future__ import annotations

import contextlib
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from ood_bench.atomic import lock_unless_read_only
from ood_bench.backbones.architectures import build_model, check_input_size
from ood_bench.backbones.cards import checkpoint_card, read_card, save_checkpoint
from ood_bench.backbones.taps import find_taps
from ood_bench.backbones.training import TrainConfig, model_accuracy, train_classifier
from ood_bench.data.base import Benchmark, ImageSet
from ood_bench.errors import CheckpointError, ConfigError
from ood_bench.hashing import hash_obj, sha256_file

log = logging.getLogger("ood_bench.backbones")  # one logger for the package, as before


@dataclass
class Backbone:
    """A frozen classifier with its identity (checkpoint sha256) and the layers to read."""

    name: str
    model: nn.Module
    sha256: str
    checkpoint: Path
    taps: list[str]
    penultimate: str
    info: dict[str, Any] = field(default_factory=dict)


def load_state(model: nn.Module, path: Path, arch: str) -> None:
    """Load a state dict safely (``weights_only=True``) and strictly; say why when it fails."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt file or a pickled object we refuse to run
        raise CheckpointError(
            f"cannot read checkpoint {path}: {e}. Fix: point "
            "backbone.checkpoint at a state_dict saved with torch.save, or "
            "delete it to retrain."
        ) from e
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(
            f"checkpoint {path} holds a {type(state).__name__}, not a state_dict, so it cannot "
            f"be loaded into architecture {arch!r}. Fix: save model.state_dict() with "
            "torch.save, or point backbone.checkpoint at such a file."
        )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(
            f"checkpoint {path} does not match architecture {arch!r} "
            f"({type(model).__name__}, {sum(p.numel() for p in model.parameters())} parameters): "
            f"{str(e).splitlines()[0]} {_state_diff(model, state)}. Fix: pick the backbone "
            "option that was trained into this file, or fix its arguments (num_classes, width)."
        ) from e


def _state_diff(model: nn.Module, state: dict) -> str:
    """Up to three missing keys, unexpected keys and shape mismatches of ``state``."""
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    have = {k: tuple(v.shape) for k, v in state.items() if hasattr(v, "shape")}
    missing = sorted(set(want) - set(have))[:3]
    extra = sorted(set(have) - set(want))[:3]
    shapes = [
        f"{k}: file {have[k]} vs model {want[k]}" for k in want if k in have and have[k] != want[k]
    ][:3]
    return f"(missing {missing}, unexpected {extra}, shape mismatches {shapes})"


def model_kwargs(benchmark: Benchmark, arch_kwargs: dict[str, Any] | None) -> dict[str, Any]:
    """The architecture's arguments: the benchmark's classes and channels, then the option's."""
    return {
        "num_classes": benchmark.num_classes,
        "in_channels": benchmark.in_channels,
        **(arch_kwargs or {}),
    }


def checkpoint_identity(
    arch: str,
    benchmark: Benchmark,
    seed: int,
    train: dict[str, Any] | None,
    arch_kwargs: dict[str, Any] | None,
) -> dict[str, Any]:
    """What made a checkpoint (the ``identity`` of its card): architecture, its arguments, the
    training data spec, training config, seed."""
    return {
        "arch": arch,
        "kwargs": model_kwargs(benchmark, arch_kwargs),
        "train_data": benchmark.split("train").spec,
        "train": TrainConfig(**(train or {})).identity(),
        "seed": seed,
    }


def trained_checkpoint_path(
    arch: str,
    benchmark: Benchmark,
    cache_dir: str | Path,
    seed: int,
    train: dict[str, Any] | None,
    arch_kwargs: dict[str, Any] | None,
) -> tuple[Path, dict[str, Any]]:
    """Where a self-trained checkpoint lives in ``cache_dir`` and the identity it is named by:
    (architecture, its arguments, the training data spec, training config, seed)."""
    identity = checkpoint_identity(arch, benchmark, seed, train, arch_kwargs)
    return Path(cache_dir) / "checkpoints" / f"{arch}-{hash_obj(identity)[:16]}.pt", identity


def known_sha256(
    arch: str,
    benchmark: Benchmark,
    cache_dir: str | Path,
    seed: int = 0,
    checkpoint: str | None = None,
    train: dict[str, Any] | None = None,
    arch_kwargs: dict[str, Any] | None = None,
    **_: Any,
) -> str | None:
    """The sha256 of the weights a job with these backbone arguments will use, when it can be
    known without training: the file's own for ``checkpoint``, else the cached checkpoint's
    (checked against its card). None when the file is missing or not trained yet."""
    if checkpoint:
        path = Path(checkpoint).expanduser()
        return sha256_file(path) if path.is_file() else None
    path, _identity = trained_checkpoint_path(arch, benchmark, cache_dir, seed, train, arch_kwargs)
    card = read_card(path.with_suffix(".json"))
    if not path.is_file() or card is None:
        return None
    digest = sha256_file(path)
    return digest if digest == card.get("sha256") else None


def expected_sha256(value: object) -> str | None:
    """``backbone.sha256`` as 64 lower-case hex digits, or None when unset: a hex digest does
    not depend on letter case (``sha256sum`` prints lower case, some tools upper case), so
    ``ABC…`` and ``abc…`` are the same digest. Anything that is not 64 hex digits is a
    ConfigError naming the fix, rather than a mismatch reported after loading."""
    if value is None or value == "":
        return None
    text = str(value).strip().lower()
    if re.fullmatch(r"[0-9a-f]{64}", text) is None:
        raise ConfigError(
            f"backbone.sha256={value!r} is not a sha256 digest (64 hexadecimal digits). Fix: "
            "give the checkpoint file's digest (sha256sum FILE, or the sha256 in its .json "
            "card), or drop backbone.sha256."
        )
    return text


def get_backbone(
    arch: str,
    benchmark: Benchmark,
    cache_dir: str | Path,
    seed: int = 0,
    checkpoint: str | None = None,
    sha256: str | None = None,
    train: dict[str, Any] | None = None,
    arch_kwargs: dict[str, Any] | None = None,
    name: str | None = None,
    taps: list[str] | None = None,
    penultimate: str | None = None,
    device: str = "cpu",
) -> Backbone:
    """Load the backbone's checkpoint, training and saving it first when it is missing.

    With ``checkpoint`` given, that file is loaded and never trained. Otherwise the checkpoint
    lives in ``cache_dir/checkpoints`` under a hash of (architecture, its arguments, the
    training data spec, training config, seed), next to a JSON file with its sha256, the config
    that made it and its ID test accuracy. ``sha256``, when given, is checked against the
    weights either way. ``taps``/``penultimate`` override the architecture's own (or discovered)
    ones; a penultimate of ``input:<module>`` reads the input of that module (e.g.
    ``input:heads``). The ID accuracy is measured once, after training, never on every load.

    ``info["train_data"]`` is the spec of the split the weights were trained on, when the harness
    knows it: always for a self-trained checkpoint, and for a ``checkpoint`` file only when a
    harness card (``<file>.json`` of the cache or of ``ood-bench train``) with the
    file's sha256 lies beside it (:func:`trained_on`).
    """
    sha256 = expected_sha256(sha256)
    kwargs = model_kwargs(benchmark, arch_kwargs)
    torch.manual_seed(seed)  # the initial weights depend on the seed alone, not on prior RNG use
    model = build_model(arch, **kwargs)
    check_input_size(model, arch, benchmark)
    tcfg = TrainConfig(**(train or {}))
    if checkpoint:
        path, digest, info = _load_file(model, arch, checkpoint, sha256)
    else:
        path, identity = trained_checkpoint_path(
            arch, benchmark, cache_dir, seed, train, arch_kwargs
        )
        info = _load_or_train(model, benchmark, tcfg, seed, path, identity, device)
        info = {**info, "train_data": identity["train_data"]}  # what calib_source=auto reads
        digest = info["sha256"]
        if sha256 and digest != sha256:
            raise CheckpointError(
                f"the self-trained checkpoint {path} has sha256 {digest}, expected {sha256} "
                "(backbone.sha256). Training is seeded, but the weights also depend on the "
                "number of threads (the threads option, docs/sweeps.md#threads) and the "
                "torch build. Fix: share one cache_dir between the jobs, set threads= to the "
                "count that trained it, or train once with ood-bench train and pass "
                "the backbone.checkpoint=... backbone.sha256=... it prints; or drop "
                "backbone.sha256."
            )
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    if "id_test_acc" in info:
        info["id_acc"] = info["id_test_acc"]
        log.info(
            "backbone %s: ID test accuracy %.2f%% on %s (recorded at training)",
            arch,
            100 * info["id_acc"],
            benchmark.id_name,
        )
    found_taps, found_pen = find_taps(
        model, torch.zeros(2, benchmark.in_channels, *benchmark.image_size)
    )
    return Backbone(
        name or arch, model, digest, path, list(taps or found_taps), penultimate or found_pen, info
    )


def _load_file(
    model: nn.Module, arch: str, checkpoint: str, sha256: str | None
) -> tuple[Path, str, dict[str, Any]]:
    """Load a given ``checkpoint`` file into ``model`` (sha256-checked when ``sha256`` is given):
    its path, its digest and what its harness card says (:func:`checkpoint_card`)."""
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {path} not found. Fix: give an existing file in "
            "backbone.checkpoint, or set it to null to train one."
        )
    digest = sha256_file(path)
    if sha256 and digest != sha256:
        raise CheckpointError(
            f"checkpoint {path} has sha256 {digest}, expected {sha256}: "
            "the file changed or is another model. Fix: use the right "
            "file or update backbone.sha256."
        )
    load_state(model, path, arch)
    return path, digest, checkpoint_card(path, digest)


def trained_on(backbone: Backbone, data: ImageSet) -> bool:
    """Whether the backbone's recorded training data (``info["train_data"]``) are exactly the set
    ``data``: same benchmark, split, seed, fractions and content fingerprint."""
    train_data = backbone.info.get("train_data")
    if not isinstance(train_data, dict):
        return False
    try:
        return hash_obj(train_data) == hash_obj(data.spec)
    except TypeError:  # a card holding something a spec never does
        return False


def _load_or_train(
    model: nn.Module,
    benchmark: Benchmark,
    tcfg: TrainConfig,
    seed: int,
    path: Path,
    identity: dict[str, Any],
    device: str,
) -> dict[str, Any]:
    """Load the cached checkpoint at ``path`` (sha256-checked) or train and save it.

    A file lock makes concurrent jobs wait: one trains, the others then load its file.
    """
    meta_path = path.with_suffix(".json")
    with contextlib.suppress(OSError):  # a read-only cache may still hold the checkpoint
        path.parent.mkdir(parents=True, exist_ok=True)
    with lock_unless_read_only(path) as writable:
        meta = read_card(meta_path)
        if path.is_file() and meta is not None:
            digest = sha256_file(path)
            if meta is not None and digest == meta.get("sha256"):
                load_state(model, path, identity["arch"])
                log.info(
                    "loaded backbone %s from %s (sha256 %s…)", identity["arch"], path, digest[:12]
                )
                return meta
            log.warning("checkpoint %s does not match its recorded sha256; retraining", path)
        if not writable:
            raise CheckpointError(
                f"the cache {path.parent} is read-only and holds no valid checkpoint {path.name}"
                " to load. Fix: give a writable cache_dir, or train once where it is writable"
                " (or pass backbone=checkpoint with your file)."
            )
        return _train_and_save(model, benchmark, tcfg, seed, path, identity, device)


IN_MEMORY_BYTES = 2 * 2**30


def in_memory(ds: Dataset) -> Dataset:
    """``ds`` preprocessed once into a TensorDataset when it fits in :data:`IN_MEMORY_BYTES`, so
    epochs do not redo the per-image transforms; else ``ds`` itself. Same items, same order."""
    x0, _ = ds[0]
    if not isinstance(x0, torch.Tensor) or len(ds) * x0.numel() * 4 > IN_MEMORY_BYTES:
        return ds
    xs, ys = [], []
    for x, y in DataLoader(ds, batch_size=1024):
        xs.append(x)
        ys.append(y)
    return TensorDataset(torch.cat(xs), torch.cat(ys))


def _train_and_save(
    model: nn.Module,
    benchmark: Benchmark,
    tcfg: TrainConfig,
    seed: int,
    path: Path,
    identity: dict[str, Any],
    device: str = "cpu",
) -> dict[str, Any]:
    """Train ``model`` on the ID train split, save it atomically at ``path`` with a JSON
    sidecar (sha256, identity, training time, ID test accuracy) and return that metadata."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    gen = torch.Generator().manual_seed(seed)
    loader = DataLoader(
        in_memory(benchmark.split("train").dataset),
        batch_size=tcfg.batch_size,
        shuffle=True,
        generator=gen,
    )
    log.info(
        "no checkpoint at %s: training %s on %s (%d images, %d epochs)",
        path,
        identity["arch"],
        benchmark.id_name,
        len(benchmark.split("train")),
        tcfg.epochs,
    )
    t0 = time.perf_counter()
    train_classifier(model, loader, tcfg, seed, device)
    train_s = time.perf_counter() - t0
    model.cpu()
    acc = model_accuracy(model, DataLoader(benchmark.split("test").dataset, batch_size=512))
    meta = save_checkpoint(model, path, identity, train_s=train_s, id_test_acc=acc)
    log.info(
        "trained %s in %.1f s (ID test accuracy %.2f%%); saved %s",
        identity["arch"],
        train_s,
        100 * acc,
        path,
    )
    return meta

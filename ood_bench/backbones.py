"""Backbones: architectures, checkpoint training / loading (sha256-checked), and named taps."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from ood_bench.atomic import atomic_torch_save, atomic_write_text, lock_unless_read_only
from ood_bench.data.base import Benchmark
from ood_bench.errors import CheckpointError, ConfigError
from ood_bench.hashing import hash_obj, sha256_file
from ood_bench.progress import duration, eta

log = logging.getLogger(__name__)


class DigitsCNN(nn.Module):
    """Small CNN for 8×8 grey images: three conv blocks, a 128-d penultimate layer, logits.

    Taps (module names): ``block1`` (32×8×8), ``block2`` (64×4×4), ``block3`` (64×4×4),
    ``fc1`` (128, the penultimate features).
    """

    taps = ("block1", "block2", "block3", "fc1")
    penultimate = "fc1"

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 32):
        """``width``: channels of ``block1`` (``block2`` and ``block3`` have twice as many)."""
        super().__init__()
        w = width
        self.in_channels = in_channels
        self.block1 = nn.Sequential(nn.Conv2d(in_channels, w, 3, padding=1), nn.ReLU())
        self.block2 = nn.Sequential(nn.Conv2d(w, 2 * w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.block3 = nn.Sequential(nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Sequential(nn.Flatten(), nn.Linear(2 * w, 128), nn.ReLU())
        self.head = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of N×C×H×W images (C must be ``in_channels``)."""
        _check_channels(x, self.in_channels, "DigitsCNN")
        x = self.block3(self.block2(self.block1(x)))
        return self.head(self.fc1(self.pool(x)))


class LeNet(nn.Module):
    """LeNet-5 style CNN for the MNIST family (28×28; other sizes are pooled to 5×5).

    Taps: ``block1`` (6 maps), ``block2`` (16 maps), ``fc1`` (120), ``fc2`` (84, penultimate).
    """

    taps = ("block1", "block2", "fc1", "fc2")
    penultimate = "fc2"

    def __init__(self, num_classes: int = 10, in_channels: int = 1):
        super().__init__()
        self.in_channels = in_channels
        self.block1 = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2)
        )
        self.block2 = nn.Sequential(nn.Conv2d(6, 16, 5), nn.ReLU(), nn.AdaptiveMaxPool2d(5))
        self.fc1 = nn.Sequential(nn.Flatten(), nn.Linear(16 * 25, 120), nn.ReLU())
        self.fc2 = nn.Sequential(nn.Linear(120, 84), nn.ReLU())
        self.head = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of N×C×H×W images (C must be ``in_channels``)."""
        _check_channels(x, self.in_channels, "LeNet")
        return self.head(self.fc2(self.fc1(self.block2(self.block1(x)))))


class VGGSmall32(nn.Module):
    """Small VGG-style CNN for 32×32 inputs (CIFAR family): three double-conv blocks with batch
    norm, global average pooling, one linear head. Taps: ``block1``–``block3``, ``pool``
    (256, penultimate)."""

    taps = ("block1", "block2", "block3", "pool")
    penultimate = "pool"

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: int = 64):
        """``width``: channels of ``block1`` (``block2``: 2×, ``block3``: 4×)."""
        super().__init__()
        self.in_channels = in_channels

        def block(cin: int, cout: int) -> nn.Sequential:
            """Two 3×3 conv + batch-norm + ReLU layers, then 2×2 max-pooling."""
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(),
                nn.Conv2d(cout, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(),
                nn.MaxPool2d(2),
            )

        self.block1 = block(in_channels, width)
        self.block2 = block(width, 2 * width)
        self.block3 = block(2 * width, 4 * width)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of N×C×H×W images (C must be ``in_channels``)."""
        _check_channels(x, self.in_channels, "VGGSmall32")
        return self.head(self.pool(self.block3(self.block2(self.block1(x)))))


def resnet18_32x32(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """ResNet-18 for 32×32 inputs (CIFAR stem: 3×3 conv, no max-pool), as in OpenOOD's
    ``resnet18_32x32``; taps are discovered (``relu``, ``layer1``–``layer4``, ``avgpool``)."""
    import torchvision

    m = torchvision.models.resnet18(num_classes=num_classes)
    m.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
    m.maxpool = nn.Identity()
    return m


def torchvision_model(name: str, num_classes: int = 1000, in_channels: int = 3) -> nn.Module:
    """Any ``torchvision.models`` architecture without weights (load yours from a local file:
    pretrained downloads need internet)."""
    import torchvision

    if in_channels != 3:
        raise ConfigError(
            f"torchvision's {name} takes 3-channel input; set the benchmark's preprocess.channels=3"
        )
    try:
        return torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    except ValueError as e:
        raise ConfigError(f"unknown torchvision model {name!r}: {e}") from e


def _check_channels(x: torch.Tensor, channels: int, arch: str) -> None:
    """Raise a ConfigError unless ``x`` is a 4-d batch with ``channels`` channels."""
    if x.ndim != 4 or x.shape[1] != channels:
        raise ConfigError(
            f"{arch} expects N×{channels}×H×W input, got {tuple(x.shape)}: set the benchmark's "
            "preprocess.channels to match the backbone (grayscale ↔ RGB transform)"
        )


ARCHITECTURES: dict[str, Any] = {
    "digits_cnn": DigitsCNN,
    "lenet": LeNet,
    "vgg_small_32x32": VGGSmall32,
    "resnet18_32x32": resnet18_32x32,
}


@torch.inference_mode()
def discover_taps(model: nn.Module, example: torch.Tensor) -> tuple[list[str], str]:
    """Taps and penultimate layer of any classifier, found by one forward pass on ``example``.

    Taps: the top-level children with a tensor output, except the final classifier; a single
    layer (no submodules) is skipped when the next child keeps its output shape, so a stem
    ``conv1 → bn1 → relu → maxpool`` yields ``relu`` while every block (``layer1``…) is kept.
    Penultimate: the tap whose flattened output feeds the last ``nn.Linear`` (its
    ``in_features``), else the last tap. Works for torchvision ResNets and small CNNs; for VGG the
    penultimate layer sits inside ``classifier``, so name it in the config.
    """
    shapes: dict[str, tuple[int, ...]] = {}
    children = [(n, m) for n, m in model.named_children()]
    hooks = [
        m.register_forward_hook(
            lambda _m, _i, out, n=n: (
                shapes.__setitem__(n, tuple(out.shape[1:]))
                if isinstance(out, torch.Tensor)
                else None
            )
        )
        for n, m in children
    ]
    was_training = model.training
    try:
        model.eval()
        model(example)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    head = linears[-1][0].split(".")[0] if linears else None
    seen = [n for n, _ in children if n in shapes and n != head]
    leaf = {n: not any(True for _ in m.children()) for n, m in children}
    taps = [
        n
        for i, n in enumerate(seen)
        if not leaf[n] or i + 1 == len(seen) or shapes[seen[i + 1]] != shapes[n]
    ]
    if not taps:
        raise ConfigError(f"found no taps in {type(model).__name__}: name them in the config")
    width = linears[-1][1].in_features if linears else None
    flat = [n for n in taps if int(np.prod(shapes[n])) == width]
    return taps, (flat[-1] if flat else taps[-1])


def _input_error(model: nn.Module, shape: tuple[int, ...]) -> str | None:
    """Why ``model`` fails on a zero batch of ``shape`` (C×H×W), or None when it runs;
    channel errors (ConfigError) propagate."""
    was_training = model.training
    try:
        model.eval()
        with torch.inference_mode():
            model(torch.zeros(1, *shape))
        return None
    except ConfigError:
        raise
    except (RuntimeError, ValueError, AssertionError) as e:  # too small / wrong size for layers
        return str(e).splitlines()[0] if str(e) else type(e).__name__
    finally:
        model.train(was_training)


def check_input_size(model: nn.Module, arch: str, benchmark: Benchmark) -> None:
    """A ConfigError before any training when ``model`` cannot take the benchmark's images,
    saying which input size it needs and which architectures fit the benchmark."""
    c, (h, w) = benchmark.in_channels, benchmark.image_size
    error = _input_error(model, (c, h, w))
    if error is None:
        return
    sizes = sorted({*range(max(h, w) + 1, max(h, w) + 33), 32, 64, 96, 128, 224, 256})
    need = next(
        (n for n in sizes if n > max(h, w) and _input_error(model, (c, n, n)) is None), None
    )
    fits = []
    for name in ARCHITECTURES:
        if name != arch:
            try:
                other = build_model(name, num_classes=benchmark.num_classes, in_channels=c)
                if _input_error(other, (c, h, w)) is None:
                    fits.append(f"backbone={name}")
            except ConfigError:
                pass
    raise ConfigError(
        f"backbone {arch} cannot take the {c}×{h}×{w} images of benchmark {benchmark.name} "
        f"({error}): "
        + (
            f"it needs at least {need}×{need} inputs. "
            if need
            else "no input size up to 256 fits. "
        )
        + f"Fix: pick a backbone made for {h}×{w} images ({', '.join(fits) or 'none found'}), "
        "or a benchmark with larger images (or its preprocess.size)."
    )


@dataclass
class TrainConfig:
    """How a missing checkpoint is trained (part of the checkpoint's identity)."""

    epochs: int = 30
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4


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


def build_model(arch: str, **kwargs: Any) -> nn.Module:
    """An architecture by name: ours (:data:`ARCHITECTURES`) or ``torchvision.<model name>``."""
    if arch.startswith("torchvision."):
        return torchvision_model(arch.split(".", 1)[1], **kwargs)
    if arch not in ARCHITECTURES:
        raise ConfigError(
            f"unknown architecture {arch!r}; known: {sorted(ARCHITECTURES)} or "
            "torchvision.<name> (e.g. torchvision.resnet50)"
        )
    return ARCHITECTURES[arch](**kwargs)


def train_classifier(
    model: nn.Module, loader: DataLoader, cfg: TrainConfig, seed: int, device: str = "cpu"
) -> None:
    """Seeded AdamW + cosine schedule (per epoch), cross-entropy; leaves the model in eval mode.

    Logs one line per epoch (mean loss, train accuracy, elapsed, time left), so runs whose output
    is not a terminal (no tqdm bar there) show progress too."""
    torch.manual_seed(seed)
    model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(cfg.epochs, 1))
    model.train()
    bar = tqdm(total=cfg.epochs * len(loader), desc="train backbone", disable=None, leave=False)
    t0 = time.perf_counter()
    for epoch in range(cfg.epochs):
        total, n, correct = 0.0, 0, 0
        for x, y in loader:
            opt.zero_grad()
            y = y.to(device)
            out = model(x.to(device))
            loss = nn.functional.cross_entropy(out, y)
            loss.backward()
            opt.step()
            total, n = total + loss.item() * len(y), n + len(y)
            correct += (out.detach().argmax(1) == y).sum().item()
            bar.update()
        sched.step()
        bar.set_postfix(epoch=epoch + 1, loss=f"{total / max(n, 1):.4f}")
        elapsed = time.perf_counter() - t0
        log.info(
            "train %s epoch %d/%d: loss %.4f, train accuracy %.2f%%, elapsed %s, ~%s left",
            type(model).__name__,
            epoch + 1,
            cfg.epochs,
            total / max(n, 1),
            100 * correct / max(n, 1),
            duration(elapsed),
            eta(elapsed, epoch + 1, cfg.epochs),
        )
    bar.close()
    model.eval()


@torch.inference_mode()
def model_accuracy(model: nn.Module, loader: DataLoader, device: str = "cpu") -> float:
    """Top-1 accuracy of ``model`` (in eval mode) over ``loader``; 0 when it is empty."""
    model.eval()
    correct = n = 0
    for x, y in loader:
        correct += (model(x.to(device)).argmax(1).cpu() == y).sum().item()
        n += len(y)
    return correct / max(n, 1)


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


def find_taps(model: nn.Module, example: torch.Tensor) -> tuple[list[str], str]:
    """The model's taps and penultimate layer: its declared ``taps``/``penultimate``, else
    :func:`discover_taps` (one forward pass on ``example``)."""
    if getattr(model, "taps", None):
        return list(model.taps), str(getattr(model, "penultimate", model.taps[-1]))
    return discover_taps(model, example)


def _model_kwargs(benchmark: Benchmark, arch_kwargs: dict[str, Any] | None) -> dict[str, Any]:
    """The architecture's arguments: the benchmark's classes and channels, then the option's."""
    return {
        "num_classes": benchmark.num_classes,
        "in_channels": benchmark.in_channels,
        **(arch_kwargs or {}),
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
    identity = {
        "arch": arch,
        "kwargs": _model_kwargs(benchmark, arch_kwargs),
        "train_data": benchmark.split("train").spec,
        "train": vars(TrainConfig(**(train or {}))),
        "seed": seed,
    }
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
    card = _read_card(path.with_suffix(".json"))
    if not path.is_file() or card is None:
        return None
    digest = sha256_file(path)
    return digest if digest == card.get("sha256") else None


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
    """
    kwargs = _model_kwargs(benchmark, arch_kwargs)
    torch.manual_seed(seed)  # the initial weights depend on the seed alone, not on prior RNG use
    model = build_model(arch, **kwargs)
    check_input_size(model, arch, benchmark)
    tcfg = TrainConfig(**(train or {}))
    info: dict[str, Any] = {}
    if checkpoint:
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
    else:
        path, identity = trained_checkpoint_path(
            arch, benchmark, cache_dir, seed, train, arch_kwargs
        )
        info = _load_or_train(model, benchmark, tcfg, seed, path, identity, device)
        digest = info["sha256"]
        if sha256 and digest != sha256:
            raise CheckpointError(
                f"the self-trained checkpoint {path} has sha256 {digest}, expected {sha256} "
                "(backbone.sha256). Training is seeded, but the weights also depend on the "
                "number of threads (OMP_NUM_THREADS, hydra/launcher=local_parallel) and the "
                "torch build. Fix: share one cache_dir between the jobs, or train once with "
                "scripts/train_backbone.py and pass backbone=checkpoint backbone.checkpoint=... "
                "backbone.sha256=...; or drop backbone.sha256."
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
        meta = _read_card(meta_path)
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


def _read_card(meta_path: Path) -> dict[str, Any] | None:
    """The checkpoint's JSON card, or None (with a warning naming the file) when it cannot be
    read or parsed: the checkpoint is then retrained and the card rewritten. None, silently,
    when there is no card yet."""
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        meta, why = None, f"{type(e).__name__}: {e}"
    else:
        why = f"it holds a {type(meta).__name__}, not an object with a sha256"
    if isinstance(meta, dict) and "sha256" in meta:
        return meta
    log.warning(
        "checkpoint card %s is corrupt (%s): its checkpoint cannot be verified, so it is "
        "retrained and the card rewritten",
        meta_path,
        why,
    )
    return None


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
        benchmark.split("train").dataset, batch_size=tcfg.batch_size, shuffle=True, generator=gen
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
    atomic_torch_save(model.state_dict(), path)
    digest = sha256_file(path)
    acc = model_accuracy(model, DataLoader(benchmark.split("test").dataset, batch_size=512))
    meta = {
        "sha256": digest,
        "identity": identity,
        "train_s": round(train_s, 3),
        "id_test_acc": acc,
        "torch": torch.__version__,
    }
    atomic_write_text(path.with_suffix(".json"), json.dumps(meta, indent=2, default=str))
    log.info(
        "trained %s in %.1f s (ID test accuracy %.2f%%); saved %s",
        identity["arch"],
        train_s,
        100 * acc,
        path,
    )
    return meta

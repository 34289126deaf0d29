"""The architectures a backbone option names, built by name (ours or ``torchvision.<name>``),
and the check that one fits a benchmark's images."""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from ood_bench.data.base import Benchmark
from ood_bench.errors import ConfigError

log = logging.getLogger("ood_bench.backbones")  # one logger for the package, as before


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
    norm, global average pooling, one linear head. Taps: ``block1``–``block3``; the penultimate
    features are ``pool`` (256), read but not tapped: ``pool`` is ``block3.mean`` (a second tap
    would count that layer twice in every across-layer combination)."""

    taps = ("block1", "block2", "block3")
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


class CifarCNN(nn.Module):
    """Fast CNN for 32×32 inputs (CIFAR family) that trains on a 2-core CPU in minutes.

    The layout of K. Jordan's *airbench* CIFAR-10 speed-run network, narrower: a 3×3 stem, then
    three groups of (3×3 conv, 2×2 max-pool, batch norm, GELU, 3×3 conv, batch norm, GELU),
    global max-pooling and a bias-free linear head. Pooling before the normalisation halves the
    cost of each group's first layer. Taps: ``stem``, ``block1``–``block3``; the penultimate
    features are ``pool`` (``widths[2]``-d), read but not tapped: global max-pooling makes
    ``pool`` equal to ``block3.max`` (a second tap would count that layer twice in every
    across-layer combination).
    """

    taps = ("stem", "block1", "block2", "block3")
    penultimate = "pool"

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        widths: tuple[int, int, int] | list[int] = (48, 96, 192),
        stem: int = 24,
    ):
        """``widths``: channels of the three groups; ``stem``: channels of the first conv."""
        super().__init__()
        self.in_channels = in_channels
        w1, w2, w3 = (int(w) for w in widths)

        def group(cin: int, cout: int) -> nn.Sequential:
            """conv → max-pool → BN → GELU → conv → BN → GELU (spatial size halved)."""
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                nn.MaxPool2d(2),
                nn.BatchNorm2d(cout),
                nn.GELU(),
                nn.Conv2d(cout, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.GELU(),
            )

        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, stem, 3, padding=1, bias=False), nn.BatchNorm2d(stem), nn.GELU()
        )
        self.block1, self.block2, self.block3 = group(stem, w1), group(w1, w2), group(w2, w3)
        self.pool = nn.Sequential(nn.AdaptiveMaxPool2d(1), nn.Flatten())
        self.head = nn.Linear(w3, num_classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of N×C×H×W images (C must be ``in_channels``)."""
        _check_channels(x, self.in_channels, "CifarCNN")
        x = self.block3(self.block2(self.block1(self.stem(x))))
        return self.head(self.pool(x))


def resnet18_32x32(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """ResNet-18 for 32×32 inputs (CIFAR stem: 3×3 conv, no max-pool), as in OpenOOD's
    ``resnet18_32x32``. Taps ``relu``, ``layer1``–``layer4``; the penultimate features are
    ``avgpool``, read but not tapped (it is ``layer4.mean``; discovery would tap it too)."""
    import torchvision

    m = torchvision.models.resnet18(num_classes=num_classes)
    m.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
    m.maxpool = nn.Identity()
    m.taps = ("relu", "layer1", "layer2", "layer3", "layer4")  # declared: find_taps reads them
    m.penultimate = "avgpool"
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
    "cifar_cnn": CifarCNN,
    "resnet18_32x32": resnet18_32x32,
}


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

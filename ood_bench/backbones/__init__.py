"""Backbones: architectures, checkpoint training / loading (sha256-checked), and named taps.

``architectures`` builds a model by name, ``taps`` finds the layers detectors read,
``training`` trains one on a benchmark, ``checkpoints`` gives the frozen :class:`Backbone` of a
job (``get_backbone``, the target of every ``conf/backbone/*.yaml``).
"""

from ood_bench.backbones.architectures import (
    ARCHITECTURES,
    CifarCNN,
    DigitsCNN,
    LeNet,
    VGGSmall32,
    build_model,
    check_input_size,
    resnet18_32x32,
    torchvision_model,
)
from ood_bench.backbones.checkpoints import (
    Backbone,
    checkpoint_card,
    get_backbone,
    known_sha256,
    load_state,
    trained_checkpoint_path,
    trained_on,
)
from ood_bench.backbones.taps import discover_taps, find_taps
from ood_bench.backbones.training import TrainConfig, model_accuracy, train_classifier

__all__ = [
    "ARCHITECTURES",
    "CifarCNN",
    "Backbone",
    "DigitsCNN",
    "LeNet",
    "TrainConfig",
    "VGGSmall32",
    "build_model",
    "check_input_size",
    "checkpoint_card",
    "discover_taps",
    "find_taps",
    "get_backbone",
    "known_sha256",
    "load_state",
    "model_accuracy",
    "resnet18_32x32",
    "torchvision_model",
    "train_classifier",
    "trained_checkpoint_path",
    "trained_on",
]

"""No two taps of a shipped backbone give the same vector: a duplicated tap counts one layer
twice in every across-layer combination (cifar_cnn's ``pool`` was ``block3.max``)."""

from __future__ import annotations

import pytest
import torch

from ood_bench.backbones.architectures import build_model
from ood_bench.backbones.taps import find_taps
from ood_bench.features import pool

# the backbones that build without a download, with the input each takes
SHIPPED = {
    "digits_cnn": (1, 8),
    "lenet": (1, 28),
    "cifar_cnn": (3, 32),
    "resnet18_32x32": (3, 32),
    "vgg_small_32x32": (3, 32),
}


def tap_vectors(arch: str) -> dict[str, torch.Tensor]:
    """Every feature key of ``arch``'s taps on a random batch (as the extractor pools them)."""
    channels, size = SHIPPED[arch]
    torch.manual_seed(0)
    model = build_model(arch, num_classes=10, in_channels=channels).eval()
    x = torch.randn(6, channels, size, size)
    taps, _ = find_taps(model, x)
    modules, store = dict(model.named_modules()), {}
    hooks = [
        modules[n].register_forward_hook(lambda _m, _i, out, n=n: store.__setitem__(n, out))
        for n in taps
    ]
    with torch.inference_mode():
        model(x)
    for h in hooks:
        h.remove()
    return {k: v for n in taps for k, v in pool(store[n], n).items()}


@pytest.mark.parametrize("arch", sorted(SHIPPED))
def test_no_two_taps_identical(arch):
    vectors = tap_vectors(arch)
    keys = sorted(vectors)
    same = [
        (a, b)
        for i, a in enumerate(keys)
        for b in keys[i + 1 :]
        if vectors[a].shape == vectors[b].shape and torch.allclose(vectors[a], vectors[b])
    ]
    assert not same, f"{arch}: taps giving identical vectors: {same}"


@pytest.mark.parametrize("arch", ["cifar_cnn", "resnet18_32x32", "vgg_small_32x32"])
def test_openood_feature_lists_still_end_with_the_penultimate_layer(arch):
    """OpenOOD's postprocessors read the last entry of a feature list as the penultimate
    features (its ResNets end with avgpool): the untapped penultimate layer is appended."""
    from ood_bench.detectors.openood.adapter import OpenOODDetector

    det = OpenOODDetector.__new__(OpenOODDetector)  # only _taps' inputs
    det.taps, det.penultimate, det.device = None, None, "cpu"
    channels, size = SHIPPED[arch]
    det.model = build_model(arch, num_classes=10, in_channels=channels)
    taps, pen = det._taps(torch.zeros(channels, size, size))
    assert taps[-1] == pen == det.model.penultimate and taps[:-1] == list(det.model.taps)

"""What ood-bench knows about each pytorch-ood detector class, in one place.

Per class: the model parts its constructor takes (:data:`PARTS`), what it cannot run without
(:data:`REQUIREMENTS`, :data:`STATUS`), its special cases (spatial-only, input gradients,
gradient fits, per-sample gradients, hyperparameters that are not plain YAML values), and how
the adapter feeds it (:func:`feed_kind`, :func:`describe_feed`). The adapter and the scripts read
these tables and functions; nothing else decides per class.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ood_bench.detectors.base import vim_principal_dim
from ood_bench.errors import ConfigError, NotApplicable  # NotApplicable: re-exported here

#: names in ``pytorch_ood.detector.__all__`` that are not detector classes, and what they are
NOT_DETECTORS = {"odin_preprocessing": "a function (ODIN's input perturbation), not a detector"}
#: option names kept from before every class had one (``pood_<lowercase class name>`` otherwise)
LEGACY_OPTIONS = {"MaxSoftmax": "pood_msp", "EnergyBased": "pood_energy"}

#: what a constructor needs besides its hyperparameters, by argument name → part (built by
#: :mod:`.bound`, or by the feed: ``maps``/``tail``, ``chain_*``, ``layer_placeholders``).
#: Classes not listed take ``None`` as their first argument (model / encoder).
PARTS: dict[str, dict[str, str]] = {
    "DICE": {"encoder": "none", "w": "head_weight", "b": "head_bias"},
    "ViM": {"encoder": "none", "w": "head_weight", "b": "head_bias"},
    "fDBD": {"encoder": "none", "head": "head"},
    "NCI": {"encoder": "none", "head": "head"},
    "LTS": {"encoder": "none", "head": "head"},
    "SHE": {"encoder": "none", "head": "head"},
    "PNML": {"encoder": "none", "head": "head"},
    "NNGuide": {"encoder": "none", "head": "head"},
    "ASH": {"backbone": "maps", "head": "tail"},
    "ReAct": {"backbone": "maps", "head": "tail"},
    "SCALE": {"backbone": "maps", "head": "tail"},
    "VRA": {"backbone": "maps", "head": "tail"},
    "RankFeat": {"backbone": "maps", "head": "tail"},
    "Gram": {"head": "chain_head", "feature_layers": "chain_layers", "num_classes": "num_classes"},
    "MultiMahalanobis": {"model": "layer_placeholders"},
    "ODIN": {"model": "net"},
    "GradNorm": {"model": "net"},
    "GradUncertainty": {"model": "net"},
    "MahalanobisODIN": {"encoder": "penultimate_encoder"},
    "NACUE": {"model": "net", "layers": "tap_modules"},
    "MCD": {"model": "net"},
}
#: parts cut from the bound model (a class needing one declares ``needs`` ⊇ {"model"})
MODEL_PARTS = {
    "head",
    "head_weight",
    "head_bias",
    "maps",
    "tail",
    "chain_head",
    "chain_layers",
    "net",
    "penultimate_encoder",
    "tap_modules",
}
HEAD_PARTS = {"head", "head_weight", "head_bias"}
#: gradient detectors that compute per-sample gradients with torch.func (vmap over one
#: functional_call per micro-batch: a forward hook cannot count their images)
FUNCTIONAL = {"GradNorm", "GradUncertainty"}
#: fitting optimises something with autograd (not under no_grad)
GRAD_FIT = {"TemperatureScaling"}
#: gradients with respect to activations: the inputs must require grad (the copy is frozen)
INPUT_GRAD = {"NACUE"}
#: spatial methods for which 1×1 maps are meaningless
SPATIAL_ONLY = {
    "RankFeat": "it removes the rank-1 component of each C×HW map; on 1×1 maps that is the "
    "whole map (all-zero features, one score for every input)",
}
#: applicability requirements checked before fitting: class → what it needs
REQUIREMENTS: dict[str, str] = {
    "MCM": "text embeddings of the class names from a vision-language model (CLIP): give "
    "detector.params.text_embeddings=/path/to/C×D.pt (a tensor saved with torch.save) together "
    "with a CLIP image encoder as backbone",
    "WeightedEBO": "per-class energy weights learnt while training the network with VOS "
    "(pytorch_ood.loss.VOSRegLoss); a post-hoc backbone has none: give "
    "detector.params.weights=[w_1,...,w_C] (all ones reduces it to pood_energy)",
    "MCD": "dropout layers in the network (Monte-Carlo dropout samples them); without dropout "
    "every sample is the same and every score is 0",
}
#: status of the classes that cannot run on a plain post-hoc classifier (README table)
STATUS: dict[str, str] = {
    "MCM": "needs text embeddings (a vision-language backbone)",
    "WeightedEBO": "needs VOS-trained class weights",
    "MCD": "not applicable to digits_cnn (no dropout)",
}
#: what each base reads when ``features`` is not given
DEFAULT_READS = {
    "LogitsDetector": "logits",
    "StructuredDetector": "layers",
    "GradientDetector": "images",
    "Detector": "images",
}


def pood_classes() -> dict[str, type]:
    """Every class ``pytorch_ood.detector`` exports, by name."""
    import pytorch_ood.detector as det

    return {n: getattr(det, n) for n in det.__all__ if isinstance(getattr(det, n), type)}


def option_name(cls_name: str) -> str:
    """The ``detector=`` option of a pytorch-ood class."""
    return LEGACY_OPTIONS.get(cls_name, f"pood_{cls_name.lower()}")


def base_of(klass: type) -> str:
    """The pytorch-ood API base that decides how a class is fed."""
    from pytorch_ood.api import (
        FeatureMapsDetector,
        FeaturesDetector,
        GradientDetector,
        LogitsDetector,
        StructuredDetector,
    )

    for base in (
        LogitsDetector,
        FeaturesDetector,
        FeatureMapsDetector,
        StructuredDetector,
        GradientDetector,
    ):
        if issubclass(klass, base):
            return base.__name__
    return "Detector"


def own(klass: type, method: str) -> bool:
    """Whether ``klass`` implements ``method`` itself (not a base's stub)."""
    from pytorch_ood import api

    impl = getattr(klass, method, None)
    stubs = [getattr(b, method, None) for b in vars(api).values() if isinstance(b, type)]
    return impl is not None and impl not in stubs


def feed_kind(klass: type) -> str:
    """How the adapter feeds a class: ``logits``, ``features``, ``maps`` (cached or from the
    model, decided by ``features``), ``layers_cached``, ``layers_model`` or ``images``."""
    base = base_of(klass)
    if base == "StructuredDetector":
        return "layers_cached" if own(klass, "fit_structured") else "layers_model"
    return {
        "LogitsDetector": "logits",
        "FeaturesDetector": "features",
        "FeatureMapsDetector": "maps",
    }.get(base, "images")


def needs_head(cls_name: str) -> bool:
    """Whether the class's constructor takes the classifier's last linear layer."""
    return bool(set(PARTS.get(cls_name, {}).values()) & HEAD_PARTS)


def describe_feed(cls_name: str, features: str | None = None, fit_on: str = "fit") -> str:
    """What the adapter feeds a class, in words (``features``, ``fit_on``: its option's)."""
    parts = set(PARTS.get(cls_name, {}).values())
    features = features or "penultimate"
    maps = (
        "cached penultimate as N×D×1×1 maps + last linear layer"
        if features == "penultimate"
        else f"maps of tap {features} (hooked forward) + rest of the network"
    )
    out = {
        "logits": "cached logits",
        "features": f"cached {features}" + (" + last linear layer" if needs_head(cls_name) else ""),
        "maps": maps,
        "layers_cached": "cached mean-pooled taps (all)",
        "layers_model": "images: logits + maps of every tap (one hooked forward)",
        "images": "model + images",
    }[feed_kind(pood_classes()[cls_name])]
    if "penultimate_encoder" in parts:
        out = "fit: cached penultimate; score: model + images"
    elif "tap_modules" in parts:
        out = "model + images (last two taps)"
    return out + ("; fitted on calib" if fit_on == "calib" else "")


def hyperparameters(cls_name: str, params: dict[str, Any]) -> dict[str, Any]:
    """YAML values → constructor values (a regex → a callable, lists and paths → tensors)."""
    p = dict(params)
    if isinstance(p.get("param_filter"), str):  # GradNorm / GradUncertainty: a regex
        pattern = re.compile(p["param_filter"])
        p["param_filter"] = lambda n: bool(pattern.fullmatch(n))
    if cls_name == "WeightedEBO" and p.get("weights") is not None:
        p["weights"] = torch.as_tensor(p["weights"], dtype=torch.float32)
    if cls_name == "MCM" and isinstance(p.get("text_embeddings"), (str, Path)):
        p["text_embeddings"] = torch.load(
            Path(p["text_embeddings"]).expanduser(), map_location="cpu", weights_only=True
        )
    elif cls_name == "MCM" and p.get("text_embeddings") is not None:
        p["text_embeddings"] = torch.as_tensor(p["text_embeddings"], dtype=torch.float32)
    return p


def check_requirements(name: str, cls_name: str, params: dict[str, Any], n_classes: int) -> None:
    """NotApplicable when MCM or WeightedEBO lack what they need (text embeddings, class
    weights); a ConfigError for a wrong number of weights. (MCD's dropout: :func:`check_net`.)"""
    if cls_name == "MCM" and params.get("text_embeddings") is None:
        raise NotApplicable(
            f"{name}: pytorch-ood's MCM needs {REQUIREMENTS['MCM']}; "
            "params.text_embeddings is null (a classifier like digits_cnn has no text encoder)"
        )
    if cls_name == "WeightedEBO":
        if params.get("weights") is None:
            raise NotApplicable(
                f"{name}: pytorch-ood's WeightedEBO needs {REQUIREMENTS['WeightedEBO']}"
            )
        n = torch.as_tensor(params["weights"]).numel()
        if n != n_classes:
            raise ConfigError(f"{name}: {n} weights for {n_classes} classes")


def check_net(name: str, cls_name: str, net: Callable[[], torch.nn.Module], backbone: str) -> None:
    """NotApplicable when MCD is given a network (``net()``, asked for MCD only) without
    dropout layers."""
    if cls_name == "MCD" and not any("Dropout" in type(m).__name__ for m in net().modules()):
        raise NotApplicable(
            f"{name}: pytorch-ood's MCD needs {REQUIREMENTS['MCD']}; {backbone} has no dropout "
            "layer"
        )


def complete_params(cls_name: str, params: dict[str, Any], dim: int) -> None:
    """Fill a hyperparameter without a library default from the ``dim``-d penultimate features
    (ViM's ``d``: the ViM paper's rule)."""
    if cls_name == "ViM" and params.get("d") is None:
        params["d"] = vim_principal_dim(dim)


def check_inputs(
    name: str, cls_name: str, params: dict[str, Any], inputs: Callable[[], torch.Tensor]
) -> None:
    """NotApplicable when MCM's text embeddings do not match the image features (``inputs()``,
    asked for MCM only)."""
    if cls_name == "MCM":
        t = hyperparameters(cls_name, params)["text_embeddings"]
        dim = inputs().shape[1]
        if t.ndim != 2 or t.shape[1] != dim:
            raise NotApplicable(
                f"{name}: text embeddings of shape {tuple(t.shape)} do not match the "
                f"{dim}-d image features"
            )

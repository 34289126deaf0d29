"""One class per way a pytorch-ood detector is fed; each owns what it reads, how the library's
detector is fitted and scored on it, and what it serves to the grid search.

| feed | reads | forward passes |
|---|---|---|
| :class:`LogitsFeed` | cached logits | none |
| :class:`FeaturesFeed` | cached penultimate features or a cached tap | none |
| :class:`CachedMapsFeed` | cached penultimate as N×D×1×1 maps, head = last linear | none |
| :class:`ModelMapsFeed` | a tap's maps (hooked forward), head = the network after it | 2/image |
| :class:`CachedLayersFeed` | cached mean-pooled taps (a class that fits on tensors) | none |
| :class:`ModelLayersFeed` | logits + every tap's maps of one hooked forward (Gram) | 1/image |
| :class:`ImagesFeed` | the images (gradient detectors, MCD) | the method's |

:func:`select_feed` picks one per detector, once, when it is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn
from torch.utils.data import ConcatDataset, DataLoader, Dataset, TensorDataset

from ood_bench.detectors.nets import HeadOnMaps, TapChain, TapSplit, as_maps, poisoned
from ood_bench.detectors.pytorch_ood.bound import example, float32
from ood_bench.detectors.pytorch_ood.catalogue import (
    FUNCTIONAL,
    INPUT_GRAD,
    SPATIAL_ONLY,
    NotApplicable,
    feed_kind,
    own,
)
from ood_bench.errors import ConfigError
from ood_bench.features import Features

if TYPE_CHECKING:
    from ood_bench.detectors.pytorch_ood.context import AdapterContext

Loaders = tuple[DataLoader, DataLoader, dict[str, Any]]


class _Relabel(Dataset):
    """Images of an OOD set with label -1 (pytorch-ood's mark for OOD)."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``i``-th image with label -1."""
        return self.dataset[i][0], torch.tensor(-1)


def _grad_collate(batch: list) -> tuple[torch.Tensor, torch.Tensor]:
    """Default collation, the image batch requiring grad (input-gradient methods)."""
    x, y = torch.utils.data.default_collate(batch)
    return x.requires_grad_(True), y


class Feed:
    """How one detector is fed: ``parts`` it adds to the constructor, ``fit``, ``score`` and
    ``search_loaders`` (the grid search's fit and validation loaders, and the library
    detector's attributes to restore after it)."""

    kind: ClassVar[str] = ""
    #: scores come from cached representations (no forward pass)
    cached: ClassVar[bool] = False

    def __init__(self, det: AdapterContext):
        self.det = det

    # -- reading ---------------------------------------------------------------------------------
    def tensor(self, feats: Features, key: str) -> torch.Tensor:
        """Cached logits, penultimate features or tap ``key`` as float32."""
        if key == "logits":
            return float32(feats.logits)
        if key == "penultimate":
            return float32(feats.penultimate)
        if key not in feats.taps:
            raise ConfigError(
                f"{self.det.name}: no tap {key!r}; available: "
                f"{['penultimate', *sorted(feats.taps)]}"
            )
        return float32(feats.taps[key])

    def inputs(self, feats: Features) -> torch.Tensor:
        """The cached representation the detector reads (its ``features``)."""
        return self.tensor(feats, self.det.features_key)

    def loader(self, feats: Features, grad: bool = False) -> DataLoader:
        """An ordered loader of the features' source images; ``grad``: batches require grad."""
        if feats.source is None:
            raise ConfigError(
                f"{self.det.name}: pytorch-ood's {self.det.cls_name} reads images, but these "
                "features carry none (Features.source is None)"
            )
        return DataLoader(
            feats.source.dataset,
            batch_size=self.det.batch_size,
            shuffle=False,
            collate_fn=_grad_collate if grad else None,
        )

    # -- what each feed does -----------------------------------------------------------------------
    def parts(self, fit: Features) -> dict[str, Any]:
        """Constructor parts this feed supplies (besides the bound model's)."""
        return {}

    def fit(self, fit: Features) -> None:
        """Call the library's fit method on what this feed reads."""
        raise NotImplementedError

    def score(self, feats: Features) -> torch.Tensor:
        """The library's scores of ``feats``."""
        raise NotImplementedError

    def search_loaders(self, fit: Features, val_id: Features, val_ood: Features) -> Loaders:
        """GridSearch's fit and validation loaders; none for this feed by default."""
        raise ConfigError(
            f"{self.det.name}: search is not wired for {self.det.cls_name} ({self.kind})"
        )


class CachedFeed(Feed):
    """A cached tensor per sample, fed to ``fit_<x>``/``predict_<x>``; the grid search serves
    it through the library detector's producer ``slot`` (replaced by an identity if needed)."""

    cached = True
    method: ClassVar[str]  # logits, features or feature_maps
    slot: ClassVar[str]
    identity: ClassVar[bool] = True

    def fit(self, fit: Features) -> None:
        """``fit_<method>(inputs, labels)``."""
        getattr(self.det.impl, f"fit_{self.method}")(self.inputs(fit), fit.labels.long())

    def score(self, feats: Features) -> torch.Tensor:
        """``predict_<method>(inputs)`` without autograd."""
        with torch.no_grad():
            return getattr(self.det.impl, f"predict_{self.method}")(self.inputs(feats))

    def search_loaders(self, fit: Features, val_id: Features, val_ood: Features) -> Loaders:
        """Tensor loaders of the cached inputs (ID labels, -1 for OOD); no forward pass."""
        impl = self.det.impl
        restore = {self.slot: getattr(impl, self.slot)}
        if self.identity:
            setattr(impl, self.slot, nn.Identity())
        x_fit, x_id, x_ood = (self.inputs(f) for f in (fit, val_id, val_ood))
        fit_set = TensorDataset(x_fit, fit.labels.long())
        val_set = TensorDataset(
            torch.cat([x_id, x_ood]),
            torch.cat([val_id.labels.long(), -torch.ones(len(val_ood), dtype=torch.long)]),
        )
        size = max(self.det.batch_size, 1024)
        return DataLoader(fit_set, batch_size=size), DataLoader(val_set, batch_size=size), restore


class LogitsFeed(CachedFeed):
    """``LogitsDetector``: the cached logits."""

    kind, method, slot = "logits", "logits", "model"


class FeaturesFeed(CachedFeed):
    """``FeaturesDetector``: cached penultimate features or a cached tap (± the head, a part)."""

    kind, method, slot = "features", "features", "encoder"


class CachedMapsFeed(CachedFeed):
    """``FeatureMapsDetector`` on the penultimate layer: its cached features as N×D×1×1 maps,
    head = the last linear layer (where ASH, ReAct, SCALE and VRA act in their papers)."""

    kind, method, slot, identity = "maps_cached", "feature_maps", "backbone", False

    def inputs(self, feats: Features) -> torch.Tensor:
        """The cached penultimate features as 1×1 maps."""
        return as_maps(self.tensor(feats, "penultimate"))

    def parts(self, fit: Features) -> dict[str, Any]:
        """``maps`` = reshape to 1×1, ``tail`` = the head on flattened maps."""
        return {"maps": as_maps, "tail": HeadOnMaps(self.det.bound.head(fit))}


class CachedLayersFeed(Feed):
    """``StructuredDetector`` that fits on tensors (MultiMahalanobis): cached mean-pooled taps."""

    kind, cached = "layers_cached", True

    def layers(self, feats: Features) -> list[str]:
        """Cached feature keys: ``layers``, else every tap but ``.max``."""
        det = self.det
        if det.layers is not None:
            keys = det.layers
        else:  # every tap, mean-pooled as the library's own fit does (4-D → mean over space)
            keys = [k for k in feats.taps if not k.endswith(".max")]
        have = ["penultimate", *feats.taps]
        unknown = [k for k in keys if k not in have]
        if unknown:
            raise ConfigError(f"{det.name}: no cached tap(s) {unknown}; available: {have}")
        return keys

    def parts(self, fit: Features) -> dict[str, Any]:
        """A placeholder module per layer (the library counts them; the taps come cached)."""
        return {"layer_placeholders": [nn.Identity() for _ in self.layers(fit)]}

    def fit(self, fit: Features) -> None:
        """``fit_structured([tap, …], labels)``."""
        zs = [self.tensor(fit, k) for k in self.layers(fit)]
        self.det.impl.fit_structured(zs, fit.labels.long())

    def score(self, feats: Features) -> torch.Tensor:
        """``predict_structured([tap, …])`` without autograd."""
        with torch.no_grad():
            zs = [self.tensor(feats, k) for k in self.layers(feats)]
            return self.det.impl.predict_structured(zs)


class ImageFeed(Feed):
    """Fed the images batch by batch; the grid search gets image loaders."""

    def fit(self, fit: Features) -> None:
        """The library's ``fit`` on a loader of the images."""
        self.det.impl.fit(self.loader(fit, grad=self.det.cls_name in INPUT_GRAD))

    def score(self, feats: Features) -> torch.Tensor:
        """Scores batch by batch."""
        return torch.cat([self.predict_batch(x.to(self.det.device)) for x, _ in self.loader(feats)])

    def predict_batch(self, x: torch.Tensor) -> torch.Tensor:
        """Scores of one image batch."""
        raise NotImplementedError

    def search_loaders(self, fit: Features, val_id: Features, val_ood: Features) -> Loaders:
        """The fit images; ID ∪ OOD validation images, OOD labelled -1."""
        fit_loader = self.loader(fit, grad=self.det.cls_name in INPUT_GRAD)
        val_set = ConcatDataset([val_id.source.dataset, _Relabel(val_ood.source.dataset)])
        return fit_loader, DataLoader(val_set, batch_size=self.det.batch_size), {}


class ModelMapsFeed(ImageFeed):
    """``FeatureMapsDetector`` on a module with 4-D output: its maps from a hooked forward
    pass, head = the rest of the network (the tap's output replaced in a second pass)."""

    kind = "maps_model"

    def __init__(self, det: AdapterContext, tap: str):
        super().__init__(det)
        self.split = TapSplit(det.bound.net(), tap)

    def parts(self, fit: Features) -> dict[str, Any]:
        """``maps`` = the tap's output, ``tail`` = the network after it."""
        return {"maps": self.split.maps, "tail": self.split.tail}

    def fit(self, fit: Features) -> None:
        """``fit_feature_maps`` on the tap's maps of every fit image."""
        device = self.det.device
        maps = [self.split.maps(x.to(device)) for x, _ in self.loader(fit)]
        self.det.impl.fit_feature_maps(torch.cat(maps), fit.labels.long().to(device))

    def predict_batch(self, x: torch.Tensor) -> torch.Tensor:
        """``predict_feature_maps`` of the batch's maps, without autograd."""
        with torch.no_grad():
            return self.det.impl.predict_feature_maps(self.split.maps(x)).detach().cpu()


# WORKAROUND: Gram fits only from a loader and chains feature_layers itself; the taps of one
# hooked pass are served in that order instead of running the network once per layer.
class ModelLayersFeed(ImageFeed):
    """``StructuredDetector`` that fits from a loader only (Gram): one hooked forward pass gives
    the logits and every tap's maps, served to its chain of ``feature_layers``."""

    kind = "layers_model"
    chain: TapChain

    def parts(self, fit: Features) -> dict[str, Any]:
        """``chain_head``/``chain_layers`` of the taps, and the class count."""
        bound = self.det.bound
        self.chain = TapChain(bound.net(), bound.tap_names(example(fit)))
        return {
            "chain_head": self.chain.head,
            "chain_layers": self.chain.layers(),
            "num_classes": fit.logits.shape[1],
        }

    def predict_batch(self, x: torch.Tensor) -> torch.Tensor:
        """``predict_structured(logits, maps)`` of one hooked pass, without autograd."""
        with torch.no_grad():
            logits, maps = self.chain.run(x)
            return self.det.impl.predict_structured(logits, maps).detach().cpu()

    search_loaders = Feed.search_loaders


class ImagesFeed(ImageFeed):
    """``GradientDetector`` and plain ``Detector`` (MCD): the model and the images."""

    kind = "images"

    def fit(self, fit: Features) -> None:
        """MahalanobisODIN: its statistics on cached features; others from the images."""
        if own(self.det.klass, "fit_features"):
            self.det.impl.fit_features(self.inputs(fit), fit.labels.long())
        else:
            super().fit(fit)

    def predict_batch(self, x: torch.Tensor) -> torch.Tensor:
        """Scores of one batch, with gradients only for gradient detectors."""
        det = self.det
        if det.base != "GradientDetector":  # MCD: sampling, no gradients
            with torch.no_grad():
                return det.impl.predict(x).detach().cpu()
        if det.cls_name in INPUT_GRAD:
            x = x.detach().requires_grad_(True)
        with torch.inference_mode(False), torch.enable_grad():
            if det.cls_name in FUNCTIONAL:
                return self._predict_functional(x)
            return det.impl.predict(x).detach().cpu()

    def _predict_functional(self, x: torch.Tensor) -> torch.Tensor:
        """GradNorm / GradUncertainty: per-sample gradients with torch.func (counted here)."""
        det, counter = self.det, self.det.bound.counter
        counter.paused = True
        try:
            s = det.impl.predict(x).detach().cpu()
        finally:
            counter.paused = False
        counter.n += len(x)
        bad = poisoned(det.impl.model)
        if bad:
            raise RuntimeError(
                f"{det.name}: {det.cls_name} left {bad} as non-Parameter tensors in its copy of "
                "the model (functional_call on a module registered under two names that "
                "untie_modules missed); scores would be unreliable"
            )
        return s


FEEDS: dict[str, type[Feed]] = {
    f.kind: f for f in (LogitsFeed, FeaturesFeed, CachedLayersFeed, ModelLayersFeed, ImagesFeed)
}


def _maps_feed(det: AdapterContext, fit: Features) -> Feed:
    """Cached penultimate features as 1×1 maps, or a module's 4-D output from the model."""
    key, cls = det.features_key, det.cls_name
    penultimate = key == "penultimate"
    if not penultimate and det.model is not None:
        penultimate = key == det.bound.penultimate_name(example(fit))
    if penultimate:
        if cls in SPATIAL_ONLY:
            raise NotApplicable(
                f"{det.name}: pytorch-ood's {cls} needs spatial feature maps (N×C×H×W with "
                f"H·W > 1): {SPATIAL_ONLY[cls]}. Give a convolutional tap, e.g. "
                "detector.features=block3"
            )
        return CachedMapsFeed(det)
    _check_tap_maps(det, fit)
    return ModelMapsFeed(det, key)


def _check_tap_maps(det: AdapterContext, fit: Features) -> None:
    """A ConfigError unless ``features`` is a module of the model; NotApplicable unless it
    outputs N×C×H×W maps (with H·W > 1 for spatial-only methods)."""
    key, cls = det.features_key, det.cls_name
    modules = det.bound.modules()
    if key not in modules:
        raise ConfigError(
            f"{det.name}: features={key!r} is neither 'penultimate' nor a module of "
            f"{type(det.model).__name__}; modules: {[n for n in modules if n][:30]}"
        )
    shape = tuple(det.bound.probe(key, example(fit)).shape)
    if len(shape) != 4:
        raise NotApplicable(
            f"{det.name}: pytorch-ood's {cls} needs feature maps N×C×H×W, but tap {key!r} "
            f"outputs {shape}; give a convolutional tap or 'penultimate'"
        )
    if cls in SPATIAL_ONLY and shape[2] * shape[3] == 1:
        raise NotApplicable(f"{det.name}: tap {key!r} has 1×1 maps; {cls}: {SPATIAL_ONLY[cls]}")


def select_feed(det: AdapterContext, fit: Features) -> Feed:
    """The feed of ``det``'s class (:func:`~.catalogue.feed_kind`); feature maps are cached
    or from the model depending on ``features``."""
    kind = feed_kind(det.klass)
    return _maps_feed(det, fit) if kind == "maps" else FEEDS[kind](det)

"""Hook-based feature extraction with a content-hashed, atomic, lock-protected disk cache.

One forward pass per (backbone checkpoint, dataset, split, transform, taps) — every detector of
every later job reuses the cached :class:`Features`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from ood_bench.atomic import atomic_torch_save, atomic_write_text, lock_unless_read_only
from ood_bench.backbones import Backbone
from ood_bench.data.base import ImageSet
from ood_bench.errors import CacheError, ConfigError
from ood_bench.hashing import hash_obj, sha256_file
from ood_bench.progress import ProgressLog

log = logging.getLogger(__name__)

EXTRACTOR_VERSION = 1  # bump when what is stored changes: it invalidates every cache entry


@dataclass
class Features:
    """What a forward pass yields for one set of images.

    ``taps`` maps ``"<layer>.max"`` / ``"<layer>.mean"`` (channel-wise max / mean over space of a
    4-D output) or ``"<layer>"`` (a flat output) to an N×C float32 tensor.
    """

    logits: torch.Tensor
    penultimate: torch.Tensor
    labels: torch.Tensor
    taps: dict[str, torch.Tensor] = field(default_factory=dict)
    meta: dict[str, float | str] = field(default_factory=dict)  # e.g. forward time of extraction
    # the images these features came from (not cached): model-level detectors read them
    source: ImageSet | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        """Number of images (rows)."""
        return len(self.labels)

    def to_dict(self) -> dict[str, object]:
        """The cached fields as a plain dict for ``torch.save`` (``source`` left out)."""
        return {
            "logits": self.logits,
            "penultimate": self.penultimate,
            "labels": self.labels,
            "taps": dict(self.taps),
            "meta": dict(self.meta),
        }

    @classmethod
    def from_dict(cls, d: dict) -> Features:
        """Rebuild from :meth:`to_dict` output (``source`` unset)."""
        return cls(
            d["logits"], d["penultimate"], d["labels"], dict(d["taps"]), dict(d.get("meta", {}))
        )

    def predictions(self) -> np.ndarray:
        """Predicted class per image: the argmax of the logits."""
        return self.logits.argmax(1).numpy()


def pool(output: torch.Tensor, name: str) -> dict[str, torch.Tensor]:
    """Reduce one layer output: channel-wise max and mean over space for N×C×H×W, as is for N×D."""
    if output.ndim == 4:
        return {f"{name}.max": output.amax(dim=(2, 3)), f"{name}.mean": output.mean(dim=(2, 3))}
    if output.ndim == 3:  # tokens (N×L×D): reduce over the sequence
        return {f"{name}.max": output.amax(dim=1), f"{name}.mean": output.mean(dim=1)}
    return {name: output.flatten(1)}


def cache_key(backbone: Backbone, data: ImageSet, taps: list[str]) -> str:
    """Content hash of everything that determines the features."""
    return hash_obj(
        {
            "checkpoint_sha256": backbone.sha256,
            "dataset": data.spec,
            "taps": sorted(taps),
            "penultimate": backbone.penultimate,
            "extractor_version": EXTRACTOR_VERSION,
        }
    )


class FeatureExtractor:
    """Extracts (or loads from cache) :class:`Features` and counts the work it did."""

    def __init__(
        self,
        backbone: Backbone,
        cache_dir: str | Path,
        device: str = "cpu",
        batch_size: int = 256,
        taps: list[str] | None = None,
    ):
        """Check that every tap and the penultimate layer are modules of the backbone."""
        self.backbone = backbone
        self.cache_dir = Path(cache_dir) / "features"
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.taps = list(backbone.taps if taps is None else taps)
        modules = dict(backbone.model.named_modules())
        pen = backbone.penultimate.removeprefix("input:")
        unknown = [t for t in self.taps + [pen] if t not in modules]
        if unknown:
            raise ConfigError(
                f"tap(s) {unknown} are not modules of {backbone.name}; "
                f"named modules: {[n for n in modules if n][:30]}"
            )
        self.forward_samples = 0  # images pushed through the network by this extractor
        self.cache_hits = 0
        self.cache_misses = 0
        self.extract_s = 0.0

    def path(self, data: ImageSet) -> Path:
        """Cache file of ``data``'s features, named by :func:`cache_key`."""
        return self.cache_dir / f"{cache_key(self.backbone, data, self.taps)}.pt"

    def __call__(self, data: ImageSet) -> Features:
        """Features of ``data``: from the cache when a verified entry exists, else extracted.

        Concurrent jobs asking for the same entry wait on one file lock: one extracts, the
        others read. Each entry has a sha256 sidecar and stores its own key; an entry that does
        not match its sidecar or its key (or cannot be read) is rebuilt with a warning. A
        read-only cache serves the entries it holds without locking.
        """
        path = self.path(data)
        key = path.stem
        digest_path = path.with_name(path.name + ".sha256")
        with contextlib.suppress(OSError):  # a read-only cache may still hold every entry
            self.cache_dir.mkdir(parents=True, exist_ok=True)
        with lock_unless_read_only(path) as writable:
            if path.is_file():
                problem = self._verify(path, digest_path)
                if problem is None:
                    try:
                        stored = torch.load(path, weights_only=True)
                        if stored.get("key") != key:
                            problem = (
                                f"another entry's content (its key is {stored.get('key')!r}, "
                                f"expected {key!r})"
                            )
                        else:
                            feats = Features.from_dict(stored)
                            feats.source = data
                            self.cache_hits += 1
                            log.debug("features of %s from cache %s", data.name, path.name)
                            return feats
                    except Exception as e:  # readable bytes, wrong content
                        problem = f"unreadable ({e})"
                log.warning("cache entry %s for %s is %s; re-extracting", path, data.name, problem)
            if not writable:
                raise CacheError(
                    f"the feature cache {self.cache_dir} is read-only and lacks a valid entry "
                    f"for {data.name} ({path.name}). Fix: give a writable cache_dir (or "
                    "OOD_BENCH_CACHE), or fill this cache once from a job that can write it."
                )
            t0 = time.perf_counter()
            feats = self.extract(data)
            self.extract_s += time.perf_counter() - t0
            atomic_torch_save({**feats.to_dict(), "key": key}, path)
            atomic_write_text(digest_path, sha256_file(path))
            feats.source = data
            self.cache_misses += 1
            log.info("extracted %s (%d images) → %s", data.name, len(feats), path)
            return feats

    def row_nbytes(self, data: ImageSet) -> int:
        """Bytes of one image's features (logits, penultimate, taps, label) as extraction stores
        them: a job's memory estimate before extracting. One forward pass on ``data``'s first
        image, not counted in :attr:`forward_samples`."""
        if len(data) == 0:
            return 0
        counted = self.forward_samples
        one = ImageSet(data.name, Subset(data.dataset, [0]), data.spec, data.group)
        try:
            f = self.extract(one)
        finally:
            self.forward_samples = counted
        tensors = [f.logits, f.penultimate, f.labels, *f.taps.values()]
        return int(sum(t.element_size() * t[0].numel() for t in tensors))

    @staticmethod
    def _verify(path: Path, digest_path: Path) -> str | None:
        """None when the entry matches its recorded sha256, else what is wrong."""
        if not digest_path.is_file():
            return "missing its checksum"
        if sha256_file(path) != digest_path.read_text().strip():
            return "corrupt (checksum mismatch)"
        return None

    @torch.inference_mode()
    def extract(self, data: ImageSet) -> Features:
        """One forward pass over ``data`` with hooks on every tap and the penultimate layer."""
        model = self.backbone.model.to(self.device).eval()
        modules = dict(model.named_modules())
        store: dict[str, torch.Tensor] = {}

        def hook(name: str):
            """A forward hook storing module ``name``'s output in ``store``."""

            def fn(_m: nn.Module, _inp: object, out: torch.Tensor) -> None:
                """Store the module's output, detached."""
                store[name] = out.detach()

            return fn

        pen = self.backbone.penultimate
        names = list(dict.fromkeys(self.taps + ([] if pen.startswith("input:") else [pen])))
        handles = [modules[n].register_forward_hook(hook(n)) for n in names]
        if pen.startswith("input:"):  # the input of a module, e.g. a ViT's classification head

            def pre_hook(_m: nn.Module, args: tuple) -> None:
                """Store the penultimate module's input under ``pen``."""
                store[pen] = args[0].detach()

            handles.append(modules[pen.removeprefix("input:")].register_forward_pre_hook(pre_hook))
        chunks: dict[str, list[torch.Tensor]] = {}
        forward_s = 0.0
        try:
            loader = DataLoader(data.dataset, batch_size=self.batch_size, shuffle=False)
            bar = tqdm(loader, desc=f"extract {data.name}", disable=None, leave=False)
            # off a terminal (no bar) a large set logs its progress: every 10 % or minute
            progress = ProgressLog(
                log,
                f"extract {data.name}",
                len(data.dataset),
                updates=len(loader),
                enabled=bar.disable,
            )
            for x, y in bar:
                t0 = time.perf_counter()
                logits = model(x.to(self.device))
                forward_s += time.perf_counter() - t0
                self.forward_samples += len(x)
                progress.update(len(x))
                batch = {
                    "logits": logits,
                    "labels": y,
                    "penultimate": store[self.backbone.penultimate].flatten(1),
                }
                for n in self.taps:
                    batch.update({f"taps/{k}": v for k, v in pool(store[n], n).items()})
                for k, v in batch.items():
                    chunks.setdefault(k, []).append(v.float().cpu() if k != "labels" else v.cpu())
                store.clear()
        finally:
            for h in handles:
                h.remove()
        cat = {k: torch.cat(v) for k, v in chunks.items()}
        n = len(cat["labels"])
        meta = {
            "forward_ms_per_sample": 1000 * forward_s / max(n, 1),
            "device": str(self.device),
            "torch_threads": torch.get_num_threads(),
        }
        return Features(
            cat["logits"],
            cat["penultimate"],
            cat["labels"].long(),
            {k[5:]: v for k, v in cat.items() if k.startswith("taps/")},
            meta,
        )

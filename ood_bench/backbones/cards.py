"""Checkpoint cards: the JSON beside a checkpoint that records how it was made, in one format
written by :func:`save_checkpoint` (the cache's training and ``ood-bench train`` alike) and read
by :func:`read_card`, :func:`checkpoint_card` and :func:`normalized_card`.

The format: ``sha256`` of the weights, ``identity`` (architecture, its ``kwargs``, the
``train_data`` spec, the ``train`` config, ``seed``: what names a cached checkpoint),
``train_data`` (again, top level, for readers of a ``checkpoint`` file), ``train_s``,
``id_test_acc``, ``torch``, ``threads``, and what the writer adds (``ood-bench train``:
``wall_s``, ``versions``). Cards of the former ``ood-bench train`` format (the identity's fields
at top level, ``arch_kwargs`` for ``kwargs``; the committed ``results/backbones/*.json``) are
read as this one (:func:`normalized_card`)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ood_bench.atomic import atomic_torch_save, atomic_write_text
from ood_bench.hashing import sha256_file

log = logging.getLogger("ood_bench.backbones")  # one logger for the package, as before

IDENTITY_KEYS = ("arch", "kwargs", "train_data", "train", "seed")


def save_checkpoint(
    model: nn.Module,
    path: Path,
    identity: dict[str, Any],
    *,
    train_s: float,
    id_test_acc: float,
    **extra: Any,
) -> dict[str, Any]:
    """The package's one checkpoint writer: ``model``'s state dict saved atomically at ``path``
    and its card (the format above, ``extra`` added) beside it as ``<path>.json``; returns the
    card."""
    atomic_torch_save(model.state_dict(), path)
    card = {
        "sha256": sha256_file(path),
        "identity": identity,
        "train_data": identity.get("train_data"),
        "train_s": round(train_s, 3),
        "id_test_acc": id_test_acc,
        "torch": torch.__version__,
        # not in the identity (one cache, one set of weights, whatever the job's threads), but
        # the weights depend on it: recorded so a retrained checkpoint's other sha is explained
        "threads": torch.get_num_threads(),
        **extra,
    }
    atomic_write_text(path.with_suffix(".json"), json.dumps(card, indent=2, default=str))
    return card


def normalized_card(card: dict[str, Any]) -> dict[str, Any]:
    """``card`` in the one format: a card of the former ``ood-bench train`` format (no
    ``identity``; ``arch``, ``arch_kwargs``, ``train_data``, ``train``, ``seed`` at top level)
    gets its ``identity`` built from those fields; a card in the format is returned as is."""
    if "identity" in card:
        return card
    identity = {
        "arch": card.get("arch"),
        "kwargs": card.get("arch_kwargs"),
        "train_data": card.get("train_data"),
        "train": card.get("train") or {"epochs": card.get("epochs")},
        "seed": card.get("seed"),
    }
    return {**card, "identity": identity}


def checkpoint_card(path: Path, digest: str) -> dict[str, Any]:
    """What the harness card beside a ``checkpoint`` file says about its training data:
    ``{"train_data": spec, "card": path}`` when ``<file>.json`` was written by the harness (the
    cache's card or ``ood-bench train``'s) for these very weights, else ``{}``."""
    card_path = path.with_suffix(".json")
    if not card_path.is_file():
        return {}
    try:
        card = json.loads(card_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        card = None
    if not isinstance(card, dict) or card.get("sha256") != digest:
        log.info(
            "%s does not describe checkpoint %s (unreadable, or another sha256): its training "
            "data are unknown",
            card_path,
            path.name,
        )
        return {}
    identity = card.get("identity")
    train_data = card.get("train_data") or (identity or {}).get("train_data")
    return {"train_data": train_data, "card": str(card_path)} if train_data else {}


def read_card(meta_path: Path) -> dict[str, Any] | None:
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

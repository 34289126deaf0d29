"""Detectors: the protocol (:mod:`.base`) and the library adapters."""

from ood_bench.detectors.base import Detector

__all__ = ["Detector"]

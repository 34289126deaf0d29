"""Benchmarks: ID splits and OOD sets. See :mod:`ood_bench.data.digits` for the embedded ones."""

from ood_bench.data.base import ID_SPLITS, Benchmark, ImageSet, stratified_split, tensor_set

__all__ = ["ID_SPLITS", "Benchmark", "ImageSet", "stratified_split", "tensor_set"]

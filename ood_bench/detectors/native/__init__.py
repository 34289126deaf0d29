"""ood-bench's own implementations of post-hoc detectors that neither pytorch-ood nor OpenOOD
has (``library = "ood_bench"``), one module per method family; see docs/detectors-native-b.md."""

"""Native detectors (``library = "ood_bench"``) of methods neither pytorch-ood nor OpenOOD has,
one module per method family, each scored on cached features (docs/detectors-native.md,
docs/detectors-native-b.md)."""

"""ood-bench: a Hydra-configured harness for post-hoc OOD detection on image classifiers."""

__version__ = "0.1.0"

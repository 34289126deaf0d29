"""Measured comparison of pytorch-ood, OpenOOD and ood-bench (``scripts/compare_libraries.py``).

Every figure is a :class:`Measure`: a value (a number, a short text, or ``None`` for "n/a")
with the method that produced it and, for ``None``, why there is no value.

- :mod:`.libraries`: what is compared (distribution, packages, adapters, minimal examples);
- :mod:`.install`: index, resolver, dependencies, size, import failures, import time;
- :mod:`.code`: lines, ruff findings, docstrings (interrogate), type hints, complexity (radon),
  hard-coded ``.cuda(``, tests shipped and whether they run;
- :mod:`.api`: detector count, model interface, feature reuse, the minimal examples run;
- :mod:`.summary`: performance, runtime and robustness from the collected results, the joined
  table and the generated findings.
"""

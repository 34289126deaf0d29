"""Measured comparison of pytorch-ood, OpenOOD and ood-bench (``scripts/compare_libraries.py``).

A study of the libraries, not part of the harness: it lives beside its script (imported as
``libcompare``, ``scripts/`` being the script's folder on the import path) and uses ood-bench's
public API only. Every figure is a :class:`Measure`: a value (a number, a short text, or
``None`` for "n/a") with the method that produced it and, for ``None``, why there is no value.

- :mod:`.libraries`: what is compared (distribution, packages, adapters, minimal examples);
- :mod:`.install`: index, resolver, dependencies, size, import failures, import time;
- :mod:`.code`: lines, ruff findings, docstrings (interrogate), type hints, complexity (radon),
  hard-coded ``.cuda(``, tests shipped and whether they run;
- :mod:`.api`: detector count, model interface, feature reuse, the minimal examples run;
- :mod:`.integration`: our adapters' lines and workarounds;
- :mod:`.performance`: performance, runtime and robustness from the collected results;
- :mod:`.render`: the joined table, the generated findings, Markdown and LaTeX;
- :mod:`.examples`: the minimal example of each library, and the runner that times them.
"""

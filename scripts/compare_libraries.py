#!/usr/bin/env python
"""Measure pytorch-ood, OpenOOD (when installed) and ood-bench side by side, in one table.

    python scripts/compare_libraries.py results/raw --out results/libraries [--run-tests]

Installation (package index, pip's resolver, declared dependencies, package size, import
failures and median import time in fresh interpreters), API (detectors, what the network must
expose, feature reuse, a minimal Mahalanobis example per library, run here), code quality
(SLOC, ruff findings per 1k SLOC with one rule set, interrogate, type hints, radon complexity,
hard-coded .cuda(, tests shipped and, with --run-tests, whether they pass), integration cost
(our adapter's SLOC and WORKAROUND comments), joined with performance, runtime and robustness
from the collected results. Writes OUT/comparison.md (table, findings, methods, details),
OUT/comparison.tex and OUT/measurements.csv (one tidy row per figure), and prints the table.
The measurements are the study libcompare/ beside this script (found in this script's folder,
first on the import path; not part of the ood_bench package).
"""

from __future__ import annotations

import argparse
import io
import logging
import platform
import time
from pathlib import Path

import pandas as pd

from libcompare import api, code, install, integration, performance
from libcompare.libraries import LIBRARIES, REPO
from libcompare.measure import Measure
from libcompare.render import comparison_table, latex, markdown
from ood_bench.atomic import atomic_write_text
from ood_bench.environment import require_clean_tree
from ood_bench.results import read_results

log = logging.getLogger("compare_libraries")


def main(argv: list[str] | None = None) -> int:
    """Measure, join and write the comparison; 0 on success."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "results",
        nargs="*",
        type=Path,
        default=[REPO / "results" / "raw"],
        help="collected CSVs or folders of them (default: results/raw)",
    )
    p.add_argument("--out", type=Path, required=True, help="folder for the comparison")
    p.add_argument(
        "--libraries",
        default=",".join(LIBRARIES),
        help=f"which to compare (default: {','.join(LIBRARIES)}; a missing one "
        "gets n/a figures saying so)",
    )
    p.add_argument("--runs", type=int, default=5, help="fresh interpreters per import time")
    p.add_argument(
        "--offline",
        action="store_true",
        help="do not ask the package index (index and resolver figures become n/a)",
    )
    p.add_argument(
        "--run-tests",
        action="store_true",
        help="run each library's tests here (minutes; ood-bench's own suite too)",
    )
    p.add_argument("--test-timeout", type=float, default=1200, help="seconds per test run")
    p.add_argument(
        "--cache-dir",
        type=Path,
        default=REPO / ".cache" / "ood_bench",
        help="backbone checkpoints (the examples' model) and downloaded test sources",
    )
    p.add_argument(
        "--repeats", type=int, default=5, help="timed calls of each minimal example (median)"
    )
    p.add_argument("--quiet", action="store_true", help="do not print the table")
    args = p.parse_args(argv)
    require_clean_tree(args.out, "compare_libraries.py")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    unknown = [k for k in args.libraries.split(",") if k not in LIBRARIES]
    if unknown:
        p.error(f"unknown libraries {unknown}; known: {', '.join(LIBRARIES)}")
    libs = [LIBRARIES[k] for k in args.libraries.split(",")]
    paths = [r for r in args.results if r.exists()]
    df = read_results(*paths) if paths else None
    if df is None:
        log.info(
            "no collected results found in %s: performance figures will be n/a",
            [str(r) for r in args.results],
        )

    t0 = time.perf_counter()
    closure = None if args.offline else install.torch_closure()
    seeds = performance.common_seeds(df, libs) if df is not None else []
    measures: list[Measure] = []
    stubs: dict[str, tuple[str, ...]] = {}
    for lib in libs:
        log.info("measuring %s (%s)", lib.label, lib.version() or "not installed")
        measures += install.measure(lib, closure, not args.offline)
        failures, stubs[lib.key] = install.import_failures(lib)
        measures.append(failures)
        measures += api.detector_measures(lib, df)
        measures += api.example_measures(lib, args.cache_dir, args.repeats)
        measures += code.measure_package(lib)
        measures += code.measure_tests(
            lib,
            args.cache_dir / "libcompare",
            args.run_tests,
            args.test_timeout,
            download=not args.offline,
        )
        measures += integration.measure(lib)
        measures += performance.measure(df, lib, seeds)
    log.info("import times: %d fresh interpreters per library and torch, round-robin", args.runs)
    times, torch_s = install.import_times(libs, stubs, args.runs)
    measures += times

    versions = ", ".join(f"{lib.label} {lib.version() or 'not installed'}" for lib in libs)
    header = (
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, Python "
        f"{platform.python_version()}: {versions}. `import torch` alone takes "
        f"{torch_s:.2f} s here (median of {args.runs} fresh interpreters). Performance: "
        f"digits / digits_cnn, seed(s) {','.join(map(str, seeds)) or 'none'}. "
        f"Regenerate: `python scripts/compare_libraries.py --out {args.out}"
        f"{' --run-tests' if args.run_tests else ''}`."
        if torch_s is not None
        else f"Measured on Python {platform.python_version()}: {versions}."
    )
    out = args.out
    text = markdown(measures, libs, header)
    atomic_write_text(out / "comparison.md", text)
    atomic_write_text(out / "comparison.tex", latex(measures, libs))
    buf = io.StringIO()
    pd.DataFrame([m.row() for m in measures]).to_csv(buf, index=False)
    atomic_write_text(out / "measurements.csv", buf.getvalue())
    if not args.quiet:
        print(comparison_table(measures, libs).to_markdown())
    n_na = sum(m.value is None for m in measures)
    log.info(
        "%d figures (%d n/a, each with its reason) in %.0f s → %s",
        len(measures),
        n_na,
        time.perf_counter() - t0,
        out / "comparison.md",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

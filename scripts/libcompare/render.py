"""The comparison as tables (Markdown, LaTeX through :mod:`ood_bench.report`) and findings."""

from __future__ import annotations

import pandas as pd

from libcompare.libraries import Library
from libcompare.measure import ASPECTS, Measure
from ood_bench.report import to_latex


def _label(m: Measure) -> str:
    """The row label: name and unit."""
    return f"{m.name} ({m.unit})" if m.unit else m.name


def comparison_table(measures: list[Measure], libs: list[Library]) -> pd.DataFrame:
    """One row per measure (aspect order, then measuring order), one column per library."""
    rows: dict[tuple[str, str], dict[str, str]] = {}
    for m in sorted(measures, key=lambda m: ASPECTS.index(m.aspect)):
        rows.setdefault((m.aspect, _label(m)), {})[m.library] = m.cell()
    table = pd.DataFrame(
        [
            {
                "aspect": a,
                "measure": n,
                **{lib.label: cells.get(lib.key, "n/a (not measured)") for lib in libs},
            }
            for (a, n), cells in rows.items()
        ]
    )
    return table.set_index("measure")


def methods_table(measures: list[Measure]) -> pd.DataFrame:
    """How each figure was measured (one line per measure; per library where they differ)."""
    rows: dict[str, dict[str, str]] = {}
    for m in measures:
        if m.method:
            rows.setdefault(_label(m), {})[m.library] = m.method
    out = []
    for name, by_lib in rows.items():
        distinct = list(dict.fromkeys(by_lib.values()))
        text = (
            distinct[0]
            if len(distinct) == 1
            else "; ".join(f"{lib}: {method}" for lib, method in by_lib.items())
        )
        out.append({"measure": name, "method": text})
    return pd.DataFrame(out).set_index("measure")


class _Figures:
    """Look-ups of measures by (library, name) for the findings' sentences."""

    def __init__(self, measures: list[Measure], libs: list[Library]):
        """Index ``measures`` by (library, name)."""
        self.by = {(m.library, m.name): m for m in measures}
        self.libs = libs

    def get(self, lib: Library, name: str) -> Measure | None:
        """The measure, None when it was not taken."""
        return self.by.get((lib.key, name))

    def cell(self, lib: Library, name: str) -> str:
        """The measure's table cell."""
        m = self.get(lib, name)
        return m.cell() if m is not None else "n/a (not measured)"

    def value(self, lib: Library, name: str) -> float | None:
        """The measure's number, None when it is not one."""
        m = self.get(lib, name)
        return float(m.value) if m is not None and m.numeric else None  # type: ignore[arg-type]

    def each(self, name: str, unit: str = "") -> str:
        """``pytorch-ood 35, OpenOOD 52, ood-bench 92`` (with unit)."""
        u = f" {unit}" if unit else ""
        return ", ".join(
            f"{lib.label} {self.cell(lib, name)}{u if self.value(lib, name) is not None else ''}"
            for lib in self.libs
        )


def findings(measures: list[Measure], libs: list[Library]) -> list[str]:
    """Short sentences, each stating one finding with its figures (generated from the measures)."""
    f = _Figures(measures, libs)
    out = []
    on_index = [lib.label for lib in libs if (m := f.get(lib, "on the package index")) and m.value]
    off_index = [
        lib.label for lib in libs if (m := f.get(lib, "on the package index")) and m.value is False
    ]
    if on_index or off_index:
        text = f"On the package index: {', '.join(on_index) or 'none'}"
        if off_index:
            text += f"; not: {', '.join(off_index)} (installed from a git checkout)"
        out.append(text + ".")
    out.append(
        f"Packages pip pulls into an empty environment: {f.each('packages pulled in')}; beyond "
        f"torch + torchvision: {f.each('packages beyond torch')}. Declared dependencies unmet "
        f"here: {f.each('declared dependencies unmet here')}; of those, failing to install or "
        f"import: {f.each('unmet dependencies failing here')}."
    )
    for lib in libs:
        m = f.get(lib, "unmet dependencies failing here")
        if m is not None and m.numeric and m.value:
            failed = [p for p in m.detail.split("; ") if not p.endswith(": ok")]
            out.append(f"{lib.label}: {'; '.join(failed).rstrip('.')}.")
    out.append(
        "Imports of packages no declared requirement provides (unguarded, so a code path fails "
        f"with ImportError): {f.each('imports of undeclared packages')}"
        + "".join(
            f"; {lib.label}: {m.detail}"
            for lib in libs
            if (m := f.get(lib, "imports of undeclared packages")) is not None and m.detail
        )
        + "."
    )
    fails = []
    for lib in libs:
        m = f.get(lib, "import failures")
        if m is not None and m.numeric and m.value:
            fails.append(
                f"{lib.label}'s `{lib.api_module}` fails on {m.value} module(s) ({m.detail})"
            )
    out.append(
        (" ".join(s + "." for s in fails) if fails else "Every library imports without failure.")
        + f" Import time (median, fresh interpreter, torch included): {f.each('import time', 's')}."
    )
    out.append(
        f"Detectors: {f.each('detectors')}; scoring precomputed features without running the "
        f"network: {f.each('detectors scoring cached features')}."
    )
    out.append(
        f"Scoring Mahalanobis from a model and data loaders takes {f.each('example: lines')} "
        f"lines ({f.each('example: calls')} calls); run here the three examples give a mean "
        f"AUROC of {f.each('example: mean AUROC', '%')} on digits, in "
        f"{f.each('example: time', 's')}."
    )
    for lib in libs:
        m = f.get(lib, "model interface")
        if m is not None and m.value is not None:
            out.append(f"{lib.label} asks of the network: {m.value}.")
    out.append(f"Hard-coded `.cuda(` calls: {f.each('hard-coded .cuda( calls')}.")
    out.append(
        f"Code: {f.each('lines of code')} SLOC; ruff findings per 1k SLOC "
        f"{f.each('ruff findings')}; docstring coverage {f.each('docstring coverage', '%')}; "
        f"type-hint coverage {f.each('type-hint coverage', '%')}; mean cyclomatic complexity "
        f"{f.each('mean cyclomatic complexity')}."
    )
    out.append(
        f"Tests: {f.each('test functions in the source')} test functions in the source; "
        f"passing here: {f.each('tests passing here', '%')}."
    )
    for lib in libs:
        m = f.get(lib, "workarounds")
        if m is not None and m.numeric:
            out.append(
                f"ood-bench's {lib.label} adapter: {f.cell(lib, 'adapter code')} SLOC with "
                f"{m.value} workarounds (each listed under Details)."
            )
    out.append(
        f"On digits (the same seeds for all, see above), mean AUROC of each library's own "
        f"detectors: {f.each('mean AUROC', '%')} (means over different detector collections: "
        f"on one method the libraries agree, as the examples show); best: "
        + ", ".join(
            f"{lib.label} {f.cell(lib, 'best detector')} ({f.cell(lib, 'best AUROC')} %)"
            for lib in libs
        )
        + f"; best near-OOD AUROC (unseen digits): {f.each('best near-OOD AUROC', '%')}."
    )
    timed = [(f.value(lib, "example: time"), lib.label) for lib in libs]
    timed = [(v, n) for v, n in timed if v is not None and v > 0]
    text = (
        f"Speed, measured in one run (the examples: fit + score of 5 sets, median of repeats): "
        f"{f.each('example: time', 's')}"
    )
    if len(timed) > 1:
        lo, hi = min(timed), max(timed)
        text += f"; {hi[1]} / {lo[1]} = {hi[0] / lo[0]:.1f}×"
    text += (
        f". Median score time in the sweeps (different runs and loads): "
        f"{f.each('median score time', 'ms/sample')}"
    )
    out.append(text + ".")
    out.append(
        f"Robustness, mean AUROC drop when the ID test images are corrupted: "
        f"{f.each('AUROC drop under corruption', 'points')} (a detector that flags covariate "
        "shift as OOD drops more; see results/tables for each detector)."
    )
    return out


def markdown(measures: list[Measure], libs: list[Library], header: str = "") -> str:
    """The whole comparison: table, findings, methods, and what lies behind the figures."""
    table = comparison_table(measures, libs)
    parts = ["# Library comparison: pytorch-ood, OpenOOD, ood-bench", ""]
    if header:
        parts += [header, ""]
    parts += [table.to_markdown(), "", "## Findings", ""]
    parts += [f"- {s}" for s in findings(measures, libs)]
    parts += ["", "## How each figure was measured", "", methods_table(measures).to_markdown()]
    details = [(m.library, _label(m), m.detail) for m in measures if m.detail]
    if details:
        parts += ["", "## Details behind the figures", ""]
        parts += [f"- **{lib}**, {name}: {d}" for lib, name, d in details]
    return "\n".join(parts) + "\n"


def latex(measures: list[Measure], libs: list[Library]) -> str:
    """The comparison table as booktabs LaTeX (n/a reasons left to the Markdown)."""
    table = comparison_table(measures, libs).drop(columns="aspect")
    caption = (
        "Library comparison, measured by scripts/compare_libraries.py "
        "(n/a: not measurable here, reason in the Markdown report)"
    )
    # the reasons of n/a cells are in the Markdown report; the paper table keeps them short
    table = table.map(lambda c: "n/a" if str(c).startswith("n/a") else c)
    return to_latex(table, caption, "tab:libraries")

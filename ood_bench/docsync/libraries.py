"""Generated blocks comparing the libraries: OpenOOD's status table, the pytorch-ood vs OpenOOD
cross-check, the defaults that differ, and the library comparison; with the table functions
``scripts/openood_table.py`` and ``scripts/library_defaults.py`` print."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ood_bench.docsync.common import _md
from ood_bench.results import read_results


def status_of(name: str, error: str) -> str:
    """``ok``, ``ok*`` (runs, with a note in docs/openood.md), ``unsupported`` or ``error: …``."""
    from ood_bench.detectors.openood import NOTES, UNSUPPORTED

    post = name.removeprefix("openood_")
    if error:
        if post in UNSUPPORTED:
            return "unsupported"
        if "ResNet-only" in error:
            return "ResNet-only"
        return "error: " + error.split(": ", 1)[-1][:160]
    return "ok*" if post in NOTES else "ok"


def table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (openood_* detector, benchmark): status, mean AUROC and FPR95 readings
    over the OOD sets, setup time and time per image."""
    df = df[df.detector.str.startswith("openood_")]
    rows = []
    for (det, bench), g in df.groupby(["detector", "benchmark"], sort=True):
        failed = g[g.status == "failed"]
        row = {"detector": det, "benchmark": bench}
        if len(failed):
            row["status"] = status_of(det, str(failed.error.iloc[-1]))
            rows.append(row)
            continue
        per_set = g[g.ood_dataset.notna() & (g.ood_dataset != "") & (g.ood_group != "validation")]
        mean = per_set.groupby("metric").value.mean()
        job = g[g.ood_dataset.isna() | (g.ood_dataset == "")].groupby("metric").value.mean()
        row.update(
            status=status_of(det, ""),
            auroc=mean.get("auroc"),
            fpr95_id=mean.get("fpr95_id"),
            fpr95_ood=mean.get("fpr95_ood"),
            setup_s=job.get("fit_s"),
            ms_per_image=job.get("score_ms_per_sample"),
        )
        rows.append(row)
    return pd.DataFrame(rows)


def markdown(t: pd.DataFrame) -> str:
    """The status table of :func:`table` in Markdown, one row per detector, the benchmarks'
    columns side by side (refused rows blank)."""
    wide = t.pivot_table(
        index="detector",
        columns="benchmark",
        values=["auroc", "fpr95_id", "fpr95_ood", "setup_s", "ms_per_image"],
    )
    wide.columns = [f"{b} {m}" for m, b in wide.columns]
    order = [
        f"{b} {m}"
        for b in sorted(t.benchmark.unique())
        for m in ("auroc", "fpr95_id", "fpr95_ood", "setup_s", "ms_per_image")
    ]
    wide = wide.reindex(columns=[c for c in order if c in wide.columns])
    status = t.drop_duplicates("detector").set_index("detector").status
    out = pd.concat([status, wide], axis=1).reset_index().rename(columns={"index": "detector"})
    out = out.astype(object).where(out.notna(), None)  # blank cells for refused rows
    return out.to_markdown(index=False, floatfmt=".3f", missingval="")


def defaults_table(df: pd.DataFrame) -> pd.DataFrame:
    """Mean AUROC over the OOD sets per (method, variant) and seed, and mean ± std over seeds."""
    per_seed = (
        df.groupby(["method", "variant", "setting", "seed"], sort=False)["auroc"]
        .mean()
        .unstack("seed")
    )
    per_seed.columns = [f"seed {s}" for s in per_seed.columns]
    out = per_seed.map(lambda v: f"{v:.4f}")
    mean, std = per_seed.mean(axis=1), per_seed.std(axis=1, ddof=1)
    out["mean ± std"] = [
        f"{m:.4f} ± {s:.4f}" if np.isfinite(s) else f"{m:.4f}"
        for m, s in zip(mean, std, strict=True)
    ]
    return out.reset_index()


def openood_status(results: Path) -> str:
    """OpenOOD's postprocessors on digits_cnn (scripts/openood_table.py on openood_all.csv)."""
    df = read_results(results / "raw" / "openood_all.csv")
    text = markdown(table(df))
    t = table(df)
    msp = t[(t["detector"] == "openood_msp") & (t["benchmark"] == "digits")]
    note = ""
    if len(msp):
        r = msp.iloc[0]
        note = (
            f"\n\nThe two FPR95 conventions disagree a lot (e.g. MSP on `digits`: "
            f"`fpr95_id` {r['fpr95_id']:.3f} vs `fpr95_ood` {r['fpr95_ood']:.3f}): name the "
            "one you report."
        )
    seeds = sorted(df["seed"].unique())
    return (
        f"Measured on `digits_cnn`, seed(s) {', '.join(map(str, seeds))} "
        "(`results/raw/openood_all.csv`; mean over each benchmark's OOD sets; setup = `fit_s`, "
        "inference = `score_ms_per_sample`, on shared CPU cores, so times are indicative):\n\n"
        + text
        + note
    )


def crosscheck(results: Path) -> str:
    """pytorch-ood vs OpenOOD on the same method (results/crosscheck/*.csv)."""
    tol = 0.005  # scripts/openood_crosscheck.py TOLERANCE
    frames = []
    for f in sorted((results / "crosscheck").glob("openood_crosscheck_*.csv")):
        d = pd.read_csv(f)
        d["benchmark"] = f.stem.removeprefix("openood_crosscheck_")
        frames.append(d)
    d = pd.concat(frames, ignore_index=True)
    benches = list(dict.fromkeys(d["benchmark"]))
    order = list(dict.fromkeys(zip(d["method"], d["variant"], strict=True)))
    g = d.groupby(["method", "variant", "benchmark"])
    s = pd.DataFrame(
        {
            "pood": g["auroc_pood"].mean(),
            "openood": g["auroc_openood"].mean(),
            "diff": g["abs_diff"].max(),
        }
    )
    rows, agree_default, agree_aligned, differ = [], [], [], []
    for method, variant in order:
        row = {"method": method, "run": variant}
        worst = 0.0
        for b in benches:
            if (method, variant, b) not in s.index:
                row.update({f"{b}: pytorch-ood": "–", f"{b}: OpenOOD": "–", f"{b}: max |Δ|": "–"})
                continue
            r = s.loc[(method, variant, b)]
            worst = max(worst, r["diff"])
            row[f"{b}: pytorch-ood"] = f"{r['pood']:.4f}"
            row[f"{b}: OpenOOD"] = f"{r['openood']:.4f}"
            row[f"{b}: max \\|Δ\\|"] = f"{r['diff']:.4f}"
        row["verdict"] = "agree" if worst <= tol else "differ (see below)"
        rows.append(row)
    verdict = {(r["method"], r["run"]): r["verdict"] == "agree" for r in rows}
    for method in dict.fromkeys(m for m, _ in order):
        if verdict.get((method, "defaults")):
            agree_default.append(method)
        elif verdict.get((method, "aligned")):
            agree_aligned.append(method)
        else:
            differ.append(method)
    summary = (
        f"\n\nWithin {tol} on every OOD set: on the libraries' own defaults "
        f"{', '.join(agree_default) or 'none'}; once the differing hyperparameters are aligned "
        f"{', '.join(agree_aligned) or 'none'}. Still different: {', '.join(differ) or 'none'}."
    )
    return (
        "Mean AUROC over the OOD sets and the largest per-set |ΔAUROC| "
        f"(`results/crosscheck/`; `aligned`: the differing hyperparameters set equal; "
        f"tolerance {tol}):\n\n" + _md(pd.DataFrame(rows)) + summary
    )


def library_defaults(results: Path) -> str:
    """The defaults that differ between pytorch-ood and OpenOOD, measured
    (results/libraries/defaults.csv, written by scripts/library_defaults.py)."""
    d = pd.read_csv(results / "libraries" / "defaults.csv")
    table = defaults_table(d)
    seeds = ", ".join(str(s) for s in sorted(d["seed"].unique()))
    bench = ", ".join(sorted(d["benchmark"].unique()))
    backbone = ", ".join(sorted(d["backbone"].unique()))
    sha = ", ".join(sorted(d["git_sha"].astype(str).unique()))
    return (
        f"Mean AUROC over the OOD sets of `{bench}` (`{backbone}`, seeds {seeds}; "
        f"`results/libraries/defaults.csv`, written by `scripts/library_defaults.py` at "
        f"{sha}):\n\n" + _md(table)
    )


LIB_ROWS = [
    ("on PyPI", "on the package index", "bool"),
    ("packages beyond torch + torchvision", "packages beyond torch", "int"),
    (
        "import failures / undeclared imports",
        ("import failures", "imports of undeclared packages"),
        "pair",
    ),
    (
        "detectors (scoring cached features)",
        ("detectors", "detectors scoring cached features"),
        "paren",
    ),
    ("minimal Mahalanobis example: SLOC / calls", ("example: lines", "example: calls"), "pair"),
    ("the examples' mean AUROC on digits (%)", "example: mean AUROC", "1f"),
    ("the examples' time, fit + score (s)", "example: time", "2f"),
    ("hard-coded `.cuda(`", "hard-coded .cuda( calls", "int"),
    ("ruff findings per 1k SLOC", "ruff findings", "1f"),
    ("docstrings / type hints (%)", ("docstring coverage", "type-hint coverage"), "pair1f"),
    ("functions with complexity > 10 (%)", "functions with complexity > 10", "1f"),
    (
        "tests in the source (passing here)",
        ("test functions in the source", "tests passing here"),
        "tests",
    ),
    ("our adapter: SLOC / workarounds", ("adapter code", "workarounds"), "pair"),
    ("mean AUROC drop under corruption (points)", "AUROC drop under corruption", "1f"),
]


@dataclass
class _Measures:
    table: pd.DataFrame  # measurements.csv

    def get(self, lib: str, name: str) -> str:
        r = self.table[(self.table["library"] == lib) & (self.table["name"] == name)]
        return "" if r.empty else str(r["value"].iloc[0])

    def num(self, lib: str, name: str) -> float:
        try:
            return float(self.get(lib, name))
        except ValueError:
            return float("nan")

    def detail(self, lib: str, name: str) -> str:
        r = self.table[(self.table["library"] == lib) & (self.table["name"] == name)]
        return "" if r.empty else str(r["detail"].iloc[0])


def _lib_cell(m: _Measures, lib: str, name: str | tuple[str, str], kind: str) -> str:
    def one(n: str, fmt: str = "int") -> str:
        raw = m.get(lib, n)
        if raw in ("", "nan"):
            return "–"
        x = m.num(lib, n)
        return f"{x:.1f}" if fmt == "1f" else f"{x:.2f}" if fmt == "2f" else f"{x:.0f}"

    if kind == "bool":
        return {"True": "yes", "False": "no"}.get(m.get(lib, name), "–")  # type: ignore[arg-type]
    if kind in ("int", "1f", "2f"):
        return one(name, kind)  # type: ignore[arg-type]
    a, b = name
    if kind == "pair":
        return "–" if one(a) == "–" else f"{one(a)} / {one(b)}"
    if kind == "pair1f":
        return f"{one(a, '1f')} / {one(b, '1f')}"
    if kind == "paren":
        return f"{one(a)} ({one(b)})"
    return f"{one(a)} ({one(b, '1f')} %)"  # tests


def libraries(results: Path) -> str:
    """The library comparison's headline rows (results/libraries/measurements.csv) and the
    figures its caveats quote."""
    folder = results / "libraries"
    m = _Measures(pd.read_csv(folder / "measurements.csv", dtype=str, keep_default_na=False))
    header = (folder / "comparison.md").read_text().splitlines()
    measured = next((line for line in header if line.startswith("Measured ")), "")
    date = re.search(r"Measured (\S+)", measured)
    versions = dict(re.findall(r"(pytorch-ood|OpenOOD|ood-bench) (\d[\w.]*\w)", measured))
    libs = [("pytorch-ood", "pytorch-ood"), ("openood", "OpenOOD"), ("ood_bench", "ood-bench")]
    cols = {label: f"{label} {versions.get(label, '')}".strip() for _, label in libs}
    rows = [
        {"": row, **{cols[label]: _lib_cell(m, key, name, kind) for key, label in libs}}
        for row, name, kind in LIB_ROWS
    ]
    # the three examples compute one method: their largest per-set difference
    per_set = [json.loads(m.detail(k, "example: mean AUROC") or "{}") for k, _ in libs]
    sets = set.intersection(*(set(p) for p in per_set)) if all(per_set) else set()
    gap = max(
        (max(p[s] for p in per_set) - min(p[s] for p in per_set) for s in sets), default=np.nan
    )
    t_p, t_o = m.num("pytorch-ood", "example: time"), m.num("openood", "example: time")
    cx = m.num("ood_bench", "functions with complexity > 10")
    return (
        f"Measured {date.group(1) if date else '(date not recorded)'} "
        "(`results/libraries/measurements.csv`; every row and how it was measured: "
        "`results/libraries/comparison.md`):\n\n"
        + _md(pd.DataFrame(rows))
        + f"\n\nThe three examples compute the same method and agree within "
        f"{100 * gap:.2f} AUROC points on every OOD set; timed in one run, OpenOOD's example takes "
        f"{t_o / t_p:.1f}× pytorch-ood's (forward passes included); ood-bench's weakest figure "
        f"is complexity: {cx:.1f} % of its functions exceed 10."
    )

"""Figures quoted in the documentation, computed from the committed results.

README.md and docs/*.md quote results only inside generated blocks::

    <!-- generated:NAME -->
    ...text written by GENERATORS[NAME] from the files under results/...
    <!-- /generated:NAME -->

``scripts/sync_docs.py`` rewrites every block; ``--check`` (run by a test) fails and names
each block whose text differs from what the committed results give, so a figure edited by
hand or left behind after the results were regenerated cannot go unnoticed.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd

from ood_bench import report
from ood_bench.results import one_result_per_job, read_results

ROOT = Path(__file__).resolve().parent.parent
# a marker is a line of its own (a marker quoted inside a sentence is not one)
BLOCK = re.compile(
    r"^(?P<open><!-- generated:(?P<name>[\w-]+) -->\n)(?P<body>.*?)"
    r"^(?P<close><!-- /generated:(?P=name) -->)$",
    re.S | re.M,
)
OPEN = re.compile(r"^<!-- generated:([\w-]+) -->$", re.M)


def doc_files(root: Path = ROOT) -> list[Path]:
    """The documentation that may hold generated blocks: README.md and docs/*.md."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


# helpers ------------------------------------------------------------------------------------


def pct(v: float, digits: int = 1) -> str:
    """A fraction as a percentage without the sign: ``0.9822`` → ``98.2``; ``–`` for NaN."""
    return "–" if v is None or np.isnan(v) else f"{100 * v:.{digits}f}"


def _raw(results: Path, name: str) -> pd.DataFrame:
    return read_results(results / "raw" / f"{name}.csv")


def _script(name: str, root: Path = ROOT) -> ModuleType:
    """A module of scripts/ (its table functions are reused, not copied)."""
    spec = importlib.util.spec_from_file_location(
        f"_docsync_{name}", root / "scripts" / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[spec.name] = module  # type: ignore[union-attr]  # dataclasses look it up
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def _means(df: pd.DataFrame) -> pd.DataFrame:
    """Per (benchmark, detector): mean AUROC over all / near OOD sets, its per-seed range,
    seeds, library, and the realised FPR at α = 0.05 (p-value detectors)."""
    agg = report.aggregate(df, "auroc")
    agg = agg[agg["ood_dataset"].isin(["mean all", "mean near", "mean far"])]
    wide = agg.pivot_table(
        index=["benchmark", "detector"], columns="ood_dataset", values=["mean", "n_seeds"]
    )
    out = pd.DataFrame(index=wide.index)
    for col in ("mean all", "mean near", "mean far"):
        out[col.split()[1]] = wide["mean"].get(col, np.nan)
    out["seeds"] = wide["n_seeds"].max(axis=1).astype(int)
    # per-seed range of the near mean (how much a seed moves it)
    d = report.ok_rows(df)
    near = d[(d["metric"] == "auroc") & (d["ood_group"] == "near")]
    per_seed = near.groupby(["benchmark", "detector", "seed"])["value"].mean()
    rng = per_seed.groupby(level=[0, 1]).agg(["min", "max"])
    out["near_min"], out["near_max"] = rng["min"], rng["max"]
    fpr = d[(d["metric"] == "fpr_at_0.05") & (d["ood_dataset"] == "")]
    out["fpr05"] = fpr.groupby(["benchmark", "detector"])["value"].mean()
    out["fpr05_min"] = fpr.groupby(["benchmark", "detector"])["value"].min()
    out["fpr05_max"] = fpr.groupby(["benchmark", "detector"])["value"].max()
    out["library"] = d.groupby(["benchmark", "detector"])["library"].first()
    return out.reset_index()


def _best(m: pd.DataFrame, library: str, col: str) -> pd.Series:
    sub = m[m["library"] == library].dropna(subset=[col])
    return sub.loc[sub[col].idxmax()]


def _md(table: pd.DataFrame) -> str:
    return table.to_markdown(index=False, disable_numparse=True)


# generators ---------------------------------------------------------------------------------


def headline(results: Path) -> str:
    """Per benchmark: MSP, the best pytorch-ood detector, MaSF, the best statistical detector,
    and the statistical detectors' realised type-I error at α = 5 %."""
    rows = []
    for name in ("digits_all", "mnist_fashion"):
        m = _means(_raw(results, name))
        for bench, g in m.groupby("benchmark", sort=True):
            cols = [("all", "all OOD sets")]
            if g["near"].notna().any():
                cols.append(("near", "near OOD only"))
            for col, label in cols:
                msp = g[g["detector"] == "pood_msp"][col]
                masf = g[g["detector"] == "stat_masf"][col]
                bp, bs = _best(g, "pytorch-ood", col), _best(g, "ood_bench", col)
                stat = g[g["library"] == "ood_bench"]
                rows.append(
                    {
                        "benchmark (OOD sets)": f"`{bench}` ({label})",
                        "seeds": str(int(g["seeds"].max())),
                        "MSP": pct(msp.iloc[0]) if len(msp) else "–",
                        "best pytorch-ood": f"{pct(bp[col])} (`{bp['detector']}`)",
                        "MaSF": pct(masf.iloc[0]) if len(masf) else "–",
                        "best statistical": f"{pct(bs[col])} (`{bs['detector']}`)",
                        "realised FPR at α = 5 %": (
                            f"{pct(stat['fpr05_min'].min())}–{pct(stat['fpr05_max'].max())}"
                        ),
                    }
                )
    return (
        "Mean AUROC (%) over each benchmark's OOD sets, mean over seeds "
        "(`results/raw/digits_all.csv`, `results/raw/mnist_fashion.csv`); the last column is the "
        "range, over the statistical detectors and seeds, of the fraction of ID test images "
        "rejected at α = 5 %:\n\n" + _md(pd.DataFrame(rows))
    )


def stat_detectors(results: Path) -> str:
    """Every statistical detector per benchmark beside the best pytorch-ood detector: AUROC
    (all, near with its per-seed range) and the realised FPR at α = 5 %."""
    rows = []
    for name in ("digits_all", "mnist_fashion"):
        m = _means(_raw(results, name))
        for bench, g in m.groupby("benchmark", sort=True):
            best = _best(g, "pytorch-ood", "all")
            show = pd.concat([g[g["library"] == "ood_bench"], best.to_frame().T])
            for _, r in show.sort_values("all", ascending=False).iterrows():
                near = "–"
                if not np.isnan(r["near"]):
                    near = f"{pct(r['near'])} ({pct(r['near_min'])}–{pct(r['near_max'])})"
                rows.append(
                    {
                        "benchmark": f"`{bench}`",
                        "detector": f"`{r['detector']}`",
                        "seeds": str(int(r["seeds"])),
                        "AUROC all": pct(r["all"]),
                        "AUROC near (seed range)": near,
                        "FPR at α = 5 %": pct(r["fpr05"]),
                    }
                )
    return (
        "Mean AUROC (%) over seeds, the best pytorch-ood detector of each benchmark for "
        "reference; FPR at α = 5 %: realised fraction of ID test rejected, mean over seeds "
        "(`results/raw/digits_all.csv`, `results/raw/mnist_fashion.csv`):\n\n"
        + _md(pd.DataFrame(rows))
    )


def backbones(results: Path) -> str:
    """ID test accuracy of each trained backbone, over the seeds of the committed sweeps."""
    df = pd.concat([_raw(results, "digits_all"), _raw(results, "mnist_fashion")])
    t = report.id_accuracy_table(df)
    t.index = ["`" + label.replace(" / ", "` / `") + "`" for label in t.index]
    t = t.rename_axis("benchmark / backbone").reset_index()
    t["seeds"] = t["seeds"].astype(str)
    return (
        "ID test accuracy of the self-trained backbones (mean ± std over seeds, "
        "`results/raw/digits_all.csv`, `results/raw/mnist_fashion.csv`):\n\n" + _md(t)
    )


def openood_status(results: Path) -> str:
    """OpenOOD's postprocessors on digits_cnn (scripts/openood_table.py on openood_all.csv)."""
    table = _script("openood_table")
    df = read_results(results / "raw" / "openood_all.csv")
    text = table.markdown(table.table(df))
    t = table.table(df)
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
    table = _script("library_defaults").table(d)
    seeds = ", ".join(str(s) for s in sorted(d["seed"].unique()))
    bench = ", ".join(sorted(d["benchmark"].unique()))
    backbone = ", ".join(sorted(d["backbone"].unique()))
    sha = ", ".join(sorted(d["git_sha"].astype(str).unique()))
    return (
        f"Mean AUROC over the OOD sets of `{bench}` (`{backbone}`, seeds {seeds}; "
        f"`results/libraries/defaults.csv`, written by `scripts/library_defaults.py` at "
        f"{sha}):\n\n" + _md(table)
    )


# the scenarios each novelty option is quoted for: the default everywhere, another domain
# counted as new (any_domain) on the cross-domain batches and the controls, the former
# per-cluster certification on the new-class scenarios
NOVELTY_QUOTED = {
    "hdbscan": None,
    "hdbscan_any_domain": ("cross_domain", "control_noise", "control_photos"),
    "hdbscan_per_cluster": ("digits_open", "mnist_split", "cifar10_split"),
    "near_ood": None,
}
NOVELTY_COLUMNS = [
    "decision acc (%)",
    "false alarms",
    "new classes: est / true",
    "ACC (%)",
    "NMI (%)",
    "ARI (%)",
]


def novelty(results: Path) -> str:
    """The committed novelty runs (results/novelty/*.csv): one row per benchmark, method and
    scenario, means ± std over seeds (the table of novelty.md)."""
    from ood_bench.novelty.report import novelty_table

    df = read_results(*sorted((results / "novelty").glob("*.csv")))
    table = novelty_table(df).reset_index()
    if table.empty:
        return "(no novelty results committed)"
    who = table["benchmark / backbone / detector"].str.split(" / ", expand=True)
    table["benchmark / backbone"] = who[0] + " / " + who[1]
    table["method"] = who[2].str.partition("+")[2]
    keep = table.apply(
        lambda r: (
            r["method"] in NOVELTY_QUOTED
            and (
                NOVELTY_QUOTED[r["method"]] is None or r["scenario"] in NOVELTY_QUOTED[r["method"]]
            )
        ),
        axis=1,
    )
    t = table[keep].copy()
    t["method"] = pd.Categorical(t["method"], list(NOVELTY_QUOTED))
    t = t.sort_values(["benchmark / backbone", "method"], kind="stable")
    cols = ["benchmark / backbone", "method", "scenario", "seeds", "trials"]
    cols += [c for c in NOVELTY_COLUMNS if c in t]
    dets = sorted({d.partition("+")[0] for d in who[2]})
    return (
        f"Detector {', '.join(f'`{d}`' for d in dets)}; mean ± std over seeds of the rates over "
        "each seed's trials (`make novelty`; rows in `results/novelty/<benchmark>.csv`, every "
        "scenario and metric in `results/novelty/novelty.md`). `false alarms`: declarations "
        "in batches without a new class, out of all trials, with the exact 95 % upper bound "
        "(Clopper-Pearson); `cross_domain` is a control under `hdbscan` (domain: same) and a "
        "new-class scenario under `hdbscan_any_domain`. ACC / NMI / ARI: the recovered "
        "clusters on the rejected new-class samples.\n\n" + _md(t[cols].fillna("–"))
    )


def cifar_split_near(results: Path) -> str:
    """AUROC on the unseen CIFAR-10 classes per detector (results/raw/cifar10_split.csv): the
    figure that picks the near_ood option's detector."""
    d = report.ok_rows(_raw(results, "cifar10_split"))
    d = d[(d["metric"] == "auroc") & (d["ood_dataset"] == "cifar_6_9")]
    g = d.groupby("detector")["value"].agg(["mean", "std", "count"]).sort_values("mean")[::-1]
    cells = [f"`{k}` {pct(r['mean'])} ± {pct(r['std'])}" for k, r in g.iterrows()]
    return (
        f"AUROC (%) on the unseen classes `cifar_6_9`, mean ± std over {int(g['count'].max())} "
        f"seeds (`results/raw/cifar10_split.csv`): {', '.join(cells)}."
    )


def novelty_certification(results: Path) -> str:
    """The certification's null simulation and its power on a fragmented class
    (results/novelty/certification/certification.csv)."""
    c = pd.read_csv(results / "novelty" / "certification" / "certification.csv")
    rows = []
    for _, r in c.iterrows():
        rows.append(
            {
                "certify": f"`{r['certify']}`" + (" (default)" if r["certify"] == "union" else ""),
                "n_calib / m": f"{r['n_calib']} / {r['m']}",
                "realised level (%)": f"{pct(r['realised_level'], 2)} "
                f"[{pct(r['level_ci_low'], 2)}, {pct(r['level_ci_high'], 2)}]",
                "declared: fragmented class (%)": pct(r["power_fragmented"], 1),
            }
        )
    r0 = c.iloc[0]
    return (
        f"`scripts/novelty_certification.py` ({int(r0['reps'])} simulated batches per row, "
        f"alpha = {r0['alpha']:g}, level = {r0['level']:g}; "
        "`results/novelty/certification/certification.csv`): the realised level is the "
        "share of ID-only batches declared when every rejection is put in some candidate "
        "cluster, split at random (exact 95 % interval); the last column, the share of batches "
        "declared when a new class of n_new rejected samples is split into fragments one "
        "smaller than j*.\n\n" + _md(pd.DataFrame(rows))
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


def sweep_planning(results: Path) -> str:
    """What a job costs, from the runtime rows of the committed sweeps."""
    rows = []
    for name in ("digits_all", "mnist_fashion"):
        raw = report.ok_rows(_raw(results, name))
        for bench, d in raw.groupby("benchmark", sort=True):
            job = d[d["ood_dataset"] == ""].pivot_table(
                index=["run_id", "detector"], columns="metric", values="value", aggfunc="first"
            )
            job = job.reset_index()
            extracted = job[job["forward_samples"] > 0]
            own = job.get("detector_forward_samples")
            slow = job.loc[job["fit_s"].idxmax()]
            rows.append(
                {
                    "benchmark / backbone": f"`{bench}` / `{d['backbone'].iloc[0]}`",
                    "jobs": str(len(job)),
                    "extraction: jobs / images / s (sum)": (
                        f"{len(extracted)} / {extracted['forward_samples'].sum():,.0f} / "
                        f"{extracted['extract_s'].sum():.1f}"
                    ),
                    "forward (ms/image)": f"{job['forward_ms_per_sample'].median():.3f}",
                    "fit (s): median / max": (
                        f"{job['fit_s'].median():.2f} / {slow['fit_s']:.1f} (`{slow['detector']}`)"
                    ),
                    "score (ms/sample, median)": f"{job['score_ms_per_sample'].median():.3f}",
                    "a model-level detector's own forward passes (max)": (
                        f"{own.max():,.0f}" if own is not None and own.max() > 0 else "–"
                    ),
                    "peak RSS (MiB): median / max": (
                        f"{job['peak_rss_mb'].median():.0f} / {job['peak_rss_mb'].max():.0f}"
                    ),
                }
            )
    r = report.ok_rows(_raw(results, "robustness_digits"), clean=False)
    j = r[r["ood_dataset"] == ""].pivot_table(
        index="run_id", columns="metric", values="value", aggfunc="first"
    )
    ts = pd.to_datetime(r.drop_duplicates("run_id")["timestamp"])
    span = (ts.max() - ts.min()).total_seconds() / 60
    hits = j["cache_hits"].sum()
    return (
        "From the runtime rows of the committed sweeps (2 shared CPU cores; "
        "`peak_rss_mb` is the peak of the process so far, and jobs of a local multirun share one "
        "process):\n\n"
        + _md(pd.DataFrame(rows))
        + f"\n\nThe robustness sweep (`results/raw/robustness_digits.csv`): {len(j)} jobs, "
        f"{int((j['forward_samples'] > 0).sum())} of which extracted features; the others read "
        f"them ({hits:,.0f} feature sets read from the cache in all); {span:.1f} min from the "
        "first job's timestamp to the last."
    )


RECOMMENDED = "stat_maha_energy"
# the committed sweeps the recommended preset is compared on (those present are read)
COMPARED = (
    "digits_all",
    "recommended",
    "openood_all",
    "mnist_fashion",
    "mnist_split",
    "cifar10_offline",
)


def _per_detector(df: pd.DataFrame) -> pd.DataFrame:
    """Per (benchmark, detector): library, seeds, mean AUROC and FPR95 (ID positive) over the OOD
    sets then the seeds, and the score cost as a fraction of the forward pass."""
    d = report.ok_rows(df)
    d = d[d["corruption"].fillna("none").isin(["none", ""])] if "corruption" in d else d
    sets = d[d["ood_group"].isin(["near", "far"]) & d["metric"].isin(["auroc", "fpr95_id"])]
    per_seed = sets.groupby(["benchmark", "detector", "seed", "metric"])["value"].mean()
    out = per_seed.groupby(level=[0, 1, 3]).mean().unstack()
    out["seeds"] = per_seed.groupby(level=[0, 1]).apply(
        lambda s: s.index.get_level_values(2).nunique()
    )
    out["library"] = d.groupby(["benchmark", "detector"])["library"].first()
    run = d[d["ood_dataset"].fillna("") == ""].pivot_table(
        index=["benchmark", "detector", "seed"], columns="metric", values="value"
    )
    if {"score_ms_per_sample", "forward_ms_per_sample"} <= set(run.columns):
        ratio = run["score_ms_per_sample"] / run["forward_ms_per_sample"]
        out["cost"] = ratio.groupby(level=[0, 1]).mean()
    else:
        out["cost"] = np.nan
    return out.reset_index()


def recommended(results: Path) -> str:
    """The recommended preset per committed benchmark beside the best other native preset and
    the best library detector (mean AUROC, FPR95 ID-positive, score cost)."""
    names = [n for n in COMPARED if (results / "raw" / f"{n}.csv").is_file()]
    df = one_result_per_job(pd.concat([_raw(results, n) for n in names], ignore_index=True))
    m = _per_detector(df)
    rows = []
    for bench, g in m.groupby("benchmark", sort=False):
        rec = g[g["detector"] == RECOMMENDED]
        if rec.empty:
            continue
        r = rec.iloc[0]
        others = g[g["detector"] != RECOMMENDED]
        native = others[others["library"] == "ood_bench"]
        libs = others[others["library"] != "ood_bench"]
        bn = native.loc[native["auroc"].idxmax()] if len(native) else None
        bl = libs.loc[libs["auroc"].idxmax()] if len(libs) else None

        def cell(x: pd.Series | None) -> str:
            if x is None:
                return "–"
            seeds = int(x["seeds"])
            return (
                f"{pct(x['auroc'], 2)} / {pct(x['fpr95_id'], 2)} (`{x['detector']}`, "
                f"{seeds} seed{'s' if seeds > 1 else ''})"
            )

        rivals = [x for x in (bn, bl) if x is not None]
        lead = all(
            r["auroc"] >= x["auroc"] - 1e-12 and r["fpr95_id"] <= x["fpr95_id"] + 1e-12
            for x in rivals
        )
        rows.append(
            {
                "benchmark": f"`{bench}`",
                "seeds": str(int(r["seeds"])),
                f"`{RECOMMENDED}` AUROC / FPR95": f"{pct(r['auroc'], 2)} / {pct(r['fpr95_id'], 2)}",
                "best other native": cell(bn),
                "best library": cell(bl),
                "leads both": "yes" if lead else "no",
                "score cost (× forward)": "–" if np.isnan(r["cost"]) else f"{r['cost']:.3f}",
            }
        )
    files = ", ".join(f"`results/raw/{n}.csv`" for n in names)
    if not rows:
        return f"No committed run of `{RECOMMENDED}` yet ({files})."
    return (
        "Mean AUROC (%) / FPR95 (%, ID positive: OOD accepted when 95 % of ID is) over each "
        "benchmark's OOD sets, then over seeds; best = highest AUROC; *leads both*: at least "
        "as high an AUROC and as low an FPR95 as both rivals; score cost: scoring time per "
        f"sample over the backbone's forward time per sample, mean over its jobs ({files}):"
        "\n\n" + _md(pd.DataFrame(rows))
    )


def training_cards(results: Path) -> str:
    """The committed training cards of the backbones trained with scripts/train_backbone.py."""
    rows = []
    for path in sorted((results / "backbones").glob("*.json")):
        card = json.loads(path.read_text())
        v = card.get("versions", {})
        rows.append(
            {
                "card": f"`results/backbones/{path.name}`",
                "backbone / benchmark": f"`{path.stem.rsplit('_s', 1)[0]}`",
                "ID test accuracy (%)": pct(card["id_test_acc"], 2),
                "epochs": str(card["epochs"]),
                "training (min)": f"{card['train_s'] / 60:.1f}",
                "whole command (min)": f"{card['wall_s'] / 60:.1f}",
                "machine": (
                    f"{v['cpu_count']} CPU cores" if "cpu_count" in v else v.get("hostname", "?")
                )
                + f", torch {v.get('torch', '?')}",
                "sha256": f"`{card['sha256'][:12]}…`",
                "commit": f"`{v.get('git_sha', '?')}`",
            }
        )
    if not rows:
        return "No committed training card yet (`results/backbones/*.json`)."
    return (
        "Backbones trained once with `scripts/train_backbone.py` (card: the script's JSON, "
        "copied under `results/backbones/`):\n\n" + _md(pd.DataFrame(rows))
    )


def calib_leak(results: Path) -> str:
    """Realised FPR at α = 0.05 with leaked (``calib_source=train``, results/calib_leak/) and
    held-out (``auto`` → ``test``) calibration of the same CIFAR-10 jobs, each beside the 95 %
    range of a conformal FPR (beta-binomial in the calib and test sizes)."""
    from scipy import stats as sps

    leak = results / "calib_leak" / "cifar10_leak.csv"
    if not (leak.is_file() and (results / "raw" / "cifar10_offline.csv").is_file()):
        return "No committed CIFAR-10 leak runs yet (`results/calib_leak/cifar10_leak.csv`)."

    def runs(df: pd.DataFrame) -> pd.DataFrame:
        d = report.ok_rows(df)
        d = d[d["ood_dataset"].fillna("") == ""]
        wide = d.pivot_table(index=["detector", "seed"], columns="metric", values="value")
        fpr = d[d["metric"] == "fpr_at_0.05"].set_index(["detector", "seed"])["n_id"]
        return wide.assign(n_id=fpr).reset_index()

    leaked = runs(read_results(leak))
    held = runs(_raw(results, "cifar10_offline"))
    held = held[held["seed"].isin(leaked["seed"]) & held["detector"].isin(leaked["detector"])]

    def band(d: pd.DataFrame) -> str:
        n, n_cal = int(d["n_id"].iloc[0]), int(round(1 / d["p_min"].min() - 1))
        k = int(np.floor(0.05 * (n_cal + 1)))
        lo, hi = sps.betabinom.interval(0.95, n, k, n_cal + 1 - k)
        return f"n = {n:,}, n_calib = {n_cal:,}: {pct(lo / n, 2)}–{pct(hi / n, 2)}"

    def cell(g: pd.DataFrame) -> str:
        return " / ".join(pct(v, 2) for v in g.sort_values("seed")["fpr_at_0.05"])

    rows = [
        {
            "detector": f"`{det}`",
            "calib from train (leaked), % per seed": cell(leaked[leaked["detector"] == det]),
            "calib held out (auto → test), % per seed": cell(held[held["detector"] == det]),
        }
        for det in sorted(leaked["detector"].unique())
    ]
    seeds = ", ".join(str(int(x)) for x in sorted(leaked["seed"].unique()))
    return (
        f"Seeds {seeds}. 95 % range of the realised FPR of a valid marginal conformal p-value "
        f"(beta-binomial): leaked {band(leaked)}; held out {band(held)} "
        "(`results/calib_leak/cifar10_leak.csv`, `results/raw/cifar10_offline.csv`):\n\n"
        + _md(pd.DataFrame(rows))
    )


def ablation(results: Path) -> str:
    """The recommended preset's ablation table (results/analysis/<preset>/ablation.md)."""
    path = results / "analysis" / RECOMMENDED / "ablation.md"
    if not path.is_file():
        return f"No committed ablation of `{RECOMMENDED}` yet (`scripts/ablate_detector.py`)."
    body = path.read_text().split("\n", 2)[2].strip()  # without its title line
    return f"From `results/analysis/{RECOMMENDED}/ablation.md`. {body}"


def scoring_cost(results: Path) -> str:
    """Score time over forward time measured in one run (results/runtime/scoring_cost.csv)."""
    path = results / "runtime" / "scoring_cost.csv"
    if not path.is_file():
        return "No committed scoring-cost run yet (`scripts/bench_scoring.py --csv`)."
    d = pd.read_csv(path)
    rows = [
        {
            "backbone": r["backbone"],
            "detector": f"`{r['detector']}`",
            "forward (ms / image)": f"{r['forward_ms']:.4f}",
            "score (ms / image)": f"{r['score_ms']:.4f}",
            "score / forward": f"{r['score/forward']:.3f}",
        }
        for _, r in d.iterrows()
    ]
    return (
        "`scripts/bench_scoring.py` at commit "
        f"{d['git_sha'].iloc[0]}: the forward pass alone (batches of 128, best of 3) and the "
        "scoring of the ID test features, in one run (`results/runtime/scoring_cost.csv`):\n\n"
        + _md(pd.DataFrame(rows))
    )


GENERATORS: dict[str, Callable[[Path], str]] = {
    "headline": headline,
    "stat-detectors": stat_detectors,
    "backbones": backbones,
    "openood-status": openood_status,
    "crosscheck": crosscheck,
    "library-defaults": library_defaults,
    "novelty": novelty,
    "novelty-certification": novelty_certification,
    "cifar-split-near": cifar_split_near,
    "libraries": libraries,
    "sweep-planning": sweep_planning,
    "recommended": recommended,
    "training-cards": training_cards,
    "calib-leak": calib_leak,
    "ablation": ablation,
    "scoring-cost": scoring_cost,
}


# rewriting ----------------------------------------------------------------------------------


def render(text: str, results: Path, cache: dict[str, str] | None = None) -> tuple[str, list[str]]:
    """``text`` with every generated block rewritten; also the names of the blocks that
    changed. An unknown or unclosed block is an error."""
    cache = {} if cache is None else cache
    opened = OPEN.findall(text)
    closed = [m.group("name") for m in BLOCK.finditer(text)]
    if sorted(opened) != sorted(closed):
        unclosed = sorted(set(opened) - set(closed)) or opened
        raise ValueError(f"generated block(s) {unclosed} lack their <!-- /generated:NAME --> line")
    changed: list[str] = []

    def sub(m: re.Match) -> str:
        name = m.group("name")
        if name not in GENERATORS:
            raise ValueError(f"unknown generated block {name!r}; known: {sorted(GENERATORS)}")
        if name not in cache:
            cache[name] = GENERATORS[name](results).strip() + "\n"
        if cache[name] != m.group("body"):
            changed.append(name)
        return m.group("open") + cache[name] + m.group("close")

    return BLOCK.sub(sub, text), changed


def sync(files: Iterable[Path], results: Path, check: bool = False) -> list[tuple[Path, str]]:
    """Rewrite the generated blocks of ``files`` (or, with ``check``, only compare); returns
    the (file, block) pairs that were out of date."""
    stale: list[tuple[Path, str]] = []
    cache: dict[str, str] = {}
    for f in files:
        text = f.read_text()
        new, changed = render(text, results, cache)
        stale += [(f, name) for name in changed]
        if changed and not check:
            f.write_text(new)
    return stale

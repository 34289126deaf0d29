"""Assemble the pages of the results site and write them: the same results give the same bytes
(no clock, no random ids, sorted rows); the site is swapped in whole, replacing only the files of
an earlier build (:mod:`ood_bench.site.output`)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import pandas as pd
from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup, escape

from ood_bench import report, summary
from ood_bench.site import data, figures, output, tables
from ood_bench.site.figures import Figure
from ood_bench.site.sources import Source, stamp
from ood_bench.site.tables import Table

STATIC = ("site.css", "site.js")
FPR95_NOTE = (
    "Both FPR95 readings, always named: `fpr95_id` = OOD accepted when 95 % of ID is accepted "
    "(the papers' reading); `fpr95_ood` = ID rejected at 95 % OOD recall (pytorch-ood's and "
    "OpenOOD's reading). Percentages: mean ± std over seeds."
)


@dataclass
class Section:
    """A part of a page: heading, notes (plain text, `code` in backticks), figures, tables."""

    title: str
    notes: list[str] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    links: list[tuple[str, str]] = field(default_factory=list)

    @property
    def anchor(self) -> str:
        """The section's id in the page."""
        return re.sub(r"[^a-z0-9]+", "-", self.title.lower()).strip("-")


@dataclass
class Page:
    """One HTML file of the site."""

    file: str
    title: str
    sections: list[Section]
    intro: list[str] = field(default_factory=list)


def ticks(text: str) -> Markup:
    """Plain text, escaped, with `code` in backticks as <code>."""
    parts = str(escape(text)).split("`")  # every part is escaped here
    return Markup("".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts)))


def overview(res: data.Results, lb: pd.DataFrame, bm: pd.DataFrame, href: str) -> Page:
    """index.html: benchmarks, backbones, one leaderboard per benchmark."""
    sections = [
        Section(
            "Benchmarks and backbones",
            ["Each benchmark has its own page: every detector on every OOD set, and figures."],
            tables=[tables.benchmarks_table(bm)],
        )
    ]
    for (bench, bb), g in lb.groupby(level=["benchmark", "backbone"]):
        sections.append(
            Section(
                f"Leaderboard: {bench}",
                [
                    f"Backbone `{bb}`. Rows: every detector option with results; sorted by "
                    "mean AUROC over all OOD sets (`report.aggregate`: per seed the mean over "
                    "the sets, then mean ± std over seeds)."
                ],
                tables=[tables.leaderboard_table(g, bench, bb, href)],
                links=[(f"{bench}.html", f"{bench}: every detector on every OOD set")],
            )
        )
    intro = [
        "Post-hoc OOD detectors on image classifiers, from the committed tidy CSVs under "
        "`results/`. Click a column header to sort; the menus above a table filter its rows.",
        FPR95_NOTE,
        "Score ÷ forward: scoring time per sample over the backbone's forward time per sample "
        "(median over the sweep's jobs; the one-run column is `scripts/bench_scoring.py`). "
        f"p-values: `no` for a detector that gives scores only; for one that gives calibrated "
        f"(conformal) p-values, the realised FPR at α = {data.ALPHA:g}: the ID test rejected at "
        "that level, mean ± std over seeds (the Validity page has every level and the check).",
    ]
    return Page("index.html", "Overview", sections, intro)


def benchmark_page(res: data.Results, bench: str, ps: pd.DataFrame, cal: list[Figure]) -> Page:
    """<bench>.html: the per-OOD-set table, ROC / histogram figures when committed."""
    sub = ps[ps["benchmark"] == bench]
    srcs = sorted(res.df.loc[res.df["benchmark"] == bench, "source"].unique())
    committed = [
        (f"figures/{bench}_roc.png", "ROC curves (OOD positive), seed 0"),
        (f"figures/{bench}_score_hist.png", "ID vs OOD score histograms, seed 0"),
    ]
    figs = [figures.copied(res.root, rel, cap) for rel, cap in committed if res.file_exists(rel)]
    roc_note = (
        "ROC curves and score histograms need the detectors' scores, which the tidy CSVs do "
        "not hold: they are the committed figures of `scripts/make_figures.py --roc`."
        if figs
        else "No ROC curve or score histogram is committed for this benchmark: they need the "
        "detectors' scores, which the tidy CSVs do not hold (`scripts/make_figures.py "
        f"--roc {bench}:DETECTORS` makes them from the feature cache)."
    )
    own = [f for f in cal if f.path == f"img/{bench}_pvalue_calibration.svg"]
    return Page(
        f"{bench}.html",
        bench,
        [
            Section("ROC curves and score histograms", [roc_note], figures=figs),
            Section("Per OOD set", [FPR95_NOTE], tables=[tables.per_set_table(sub, bench, srcs)]),
            Section(
                "Calibration of the p-values",
                [] if own else ["No p-value detector was run on this benchmark."],
                figures=own,
            ),
        ],
    )


def robustness_page(res: data.Results) -> Page:
    """robustness.html: AUROC and FPR vs severity per corruption, seed rank stability."""
    srcs = sorted(res.df["source"].unique())
    rb = data.robustness(res.df)
    used = res.df.merge(rb[data.KEYS].drop_duplicates(), on=data.KEYS)  # corrupted detectors
    rob = sorted(used["source"].unique())
    st = report.ranking_stability(res.df)
    return Page(
        "robustness.html",
        "Robustness",
        [
            Section(
                "Under corruption",
                [
                    "ImageNet-C corruptions of the ID test images at severities 1–5 (0 = "
                    "clean); the FPR plots show the corrupted ID rejected at α = 0.05 by the "
                    "p-value detectors (false alarms under covariate shift)."
                ],
                figures=figures.robustness(used),
                tables=[tables.robustness_table(rb, rob)],
            ),
            Section(
                "Seed rank stability",
                [
                    "How much a ranking depends on the seed: Kendall's τ between the detector "
                    "rankings by mean AUROC of every pair of seeds (1 = the same order), per "
                    "benchmark and corruption (`report.ranking_stability`)."
                ],
                tables=[tables.stability_table(st, srcs)],
            ),
        ],
    )


def validity_page(res: data.Results, cal: list[Figure]) -> Page:
    """validity.html: calibration curves and the realised FPR at each α."""
    leak_files = sorted((res.root / "calib_leak").glob("*.csv"))
    df = res.df
    if leak_files:
        df = pd.concat([df, data.read_tidy(res.root, leak_files)], ignore_index=True)
    levels = data.pvalue_levels(df)
    checks: dict[tuple, str] = {}
    for calib, g in report.ok_rows(df).groupby("calib_source"):
        for k, row in summary.validity(g, data.ALPHA).iterrows():
            checks[(*k, calib)] = summary.check_text(row, data.ALPHA)
    srcs = sorted(df.loc[df["metric"].str.startswith("fpr_at_"), "source"].unique())
    curves = [figures.calibration_curve(r, d) for r, d in data.calibration_curves(res.root).items()]
    return Page(
        "validity.html",
        "Validity",
        [
            Section(
                "Calibration curves",
                [
                    "Realised fraction of ID test rejected at level α; a valid conformal "
                    "p-value stays on or below the diagonal up to sampling noise. The analysis "
                    "curves carry the 95 % range of a valid p-value's realised FPR."
                ],
                figures=cal + curves,
            ),
            Section(
                "Realised FPR at each level",
                [
                    "`calibrated on`: where the calibration samples came from (`calib_source`: "
                    "`train` = the benchmark's split cut from the ID training data, `test` = "
                    "held-out ID test images; `results/calib_leak/` holds the CIFAR-10 jobs "
                    "calibrated on images the backbone trained on).",
                    f"Check at α = {data.ALPHA:g}: the exact binomial 95 % interval of the ID "
                    "test rejections pooled over seeds (`summary.validity`, as in the demo's "
                    "summary). It takes each seed's calibration set as fixed; the conformal "
                    "guarantee holds on average over calibration draws, so one draw can land "
                    "above α (docs/statistical-detector.md gives the beta-binomial range).",
                ],
                tables=[tables.validity_table(levels, checks, srcs)],
            ),
        ],
    )


def libraries_page(res: data.Results, href: str) -> Page:
    """libraries.html: the library comparison's measurements, defaults and cross-check."""
    lib = res.root / "libraries"
    sections = []
    if (lib / "measurements.csv").is_file():
        m = pd.read_csv(lib / "measurements.csv", dtype=str, keep_default_na=False)
        sections.append(
            Section(
                "Measurements",
                [
                    "pytorch-ood, OpenOOD and ood-bench measured side by side; the findings, "
                    "methods and details are in `results/libraries/comparison.md`."
                ],
                tables=[tables.measurements_table(m)],
            )
        )
    defaults = data.library_defaults(res.root)
    if len(defaults):
        sections.append(Section("Defaults", [], tables=[tables.defaults_table(defaults)]))
    cc = data.crosscheck(res.root)
    if len(cc):
        srcs = [p.relative_to(res.root).as_posix() for p in (res.root / "crosscheck").glob("*")]
        sections.append(Section("Cross-check", [], tables=[tables.crosscheck_table(cc, srcs)]))
    if not sections:
        sections.append(Section("No comparison", ["`results/libraries/` holds no CSV yet."]))
    return Page("libraries.html", "Library comparison", sections)


def novelty_page(res: data.Results) -> Page:
    """novelty.html: every novelty scenario of results/novelty/*.csv and its figures."""
    nv, summary, srcs = data.novelty(res.root)
    folder = res.root / "novelty"
    figs = [
        figures.copied(res.root, p.relative_to(res.root).as_posix(), f"{p.stem}: one saved trial")
        for p in sorted(folder.glob("*.png"))
    ]
    if nv.empty:
        return Page(
            "novelty.html",
            "Novelty detection",
            [Section("No novelty results", ["`results/novelty/` holds no novelty CSV yet."])],
        )
    notes = [
        "New classes among the rejected samples (`python -m ood_bench.run_novelty`): every "
        "scenario of every CSV under `results/novelty/`, controls included. The first table "
        "is `results/novelty/novelty.md`'s (one row per scenario, the false alarms with their "
        "exact 95 % bound); the second holds every metric. Method and guarantee: "
        "`docs/novelty.md`."
    ]
    return Page(
        "novelty.html",
        "Novelty detection",
        [
            Section(
                "Scenarios",
                notes,
                tables=[
                    tables.novelty_summary_table(summary, srcs),
                    tables.novelty_table(nv, srcs),
                ],
            ),
            Section(
                "Projections",
                ["Rejected samples of one saved trial, coloured by found cluster and by class."],
                figures=figs,
            ),
        ],
    )


def pages(res: data.Results, href: str) -> list[Page]:
    """Every page of the site, in navigation order."""
    lb = data.leaderboard(res)
    bm = data.benchmarks(res.df)
    ps = data.per_set(res.df)
    cal = figures.pvalue_calibration(res.df)
    out = [overview(res, lb, bm, href)]
    out += [benchmark_page(res, b, ps, cal) for b in sorted(bm["benchmark"].unique())]
    out += [robustness_page(res), validity_page(res, cal), libraries_page(res, href)]
    return out + [novelty_page(res)]


def environment() -> Environment:
    """The Jinja2 environment of the package's templates (autoescaped)."""
    env = Environment(
        loader=PackageLoader("ood_bench.site", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["ticks"] = ticks
    return env


def render(res: data.Results, href: str) -> dict[str, bytes]:
    """Every file of the site: path in the site → bytes."""
    env = environment()
    site_pages = pages(res, href)
    commit, date = stamp(res.df)
    nav = [(p.file, p.title) for p in site_pages]
    files: dict[str, bytes] = {}
    for page in site_pages:
        html = env.get_template("page.html.j2").render(
            page=page, nav=nav, commit=commit, date=date, href=href, Source=Source
        )
        files[page.file] = html.encode()
        for s in page.sections:
            files.update({f.path: f.data for f in s.figures})
    static = resources.files("ood_bench.site") / "static"
    for name in STATIC:
        files[f"assets/{name}"] = (static / name).read_bytes()
    files[output.MANIFEST] = output.manifest(files)
    return dict(sorted(files.items()))


def write(files: dict[str, bytes], out: Path) -> list[Path]:
    """Write ``files`` as the content of ``out``, replacing an earlier build's files only,
    in one swap (:mod:`ood_bench.site.output`)."""
    return output.write_site(files, out, output.prepare(output.folder(out)))


def build_site(results: str | Path, out: str | Path, href: str | None = None) -> list[Path]:
    """Build the site from the results folder into ``out``; ``href``: the results folder as
    seen from ``out`` in links to the source CSVs (default: the relative path). ``out`` is
    checked first: a folder that holds files but no site is refused before any work."""
    results, out = Path(results), output.folder(out)
    owned = output.prepare(out)
    res = data.load(results)
    if href is None:
        href = Path(os.path.relpath(results.resolve(), out.resolve())).as_posix()
    return output.write_site(render(res, href), out, owned)

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

from ood_bench import report
from ood_bench.site import data, figures, output, significance, tables
from ood_bench.site.figures import Figure
from ood_bench.site.sources import Source, stamp
from ood_bench.site.tables import Table

STATIC = ("site.css", "site.js")
FPR95_NOTE = (
    "Both FPR95 readings, always named: `fpr95_id` = OOD accepted when 95 % of ID is accepted "
    "(the papers' reading); `fpr95_ood` = ID rejected at 95 % OOD recall (pytorch-ood's and "
    "OpenOOD's reading). Percentages: mean ± std over seeds."
)
SIGNIFICANCE_NOTE = (
    "Marks: bold = the best ranked detector; underlined = not significantly worse than it "
    "(`vs best`: DeLong's paired test on the same samples of the group's mean AUROC, seeds "
    "pooled, Holm-corrected over every other detector of the board, 5 %). The 95 % interval "
    "is DeLong's (logit). Both hold the trained backbones fixed: the ± std shows the spread "
    "between seeds. ▼: AUROC below 50 %, the score ranks ID above OOD."
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


# benchmark families of the critical-difference diagrams: benchmarks on the same ID data
CD_FAMILIES = {
    "digits": ("digits", "digits_open"),
    "MNIST": ("mnist_fashion", "mnist_split"),
    "CIFAR-10": ("cifar10_offline", "cifar10_split"),
}
CD_MAX = 20  # detectors in one diagram at most (the best by mean AUROC over the blocks)


def cd_section(res: data.Results) -> Section:
    """Critical-difference diagrams per benchmark family (Friedman, Nemenyi; Demšar 2006)
    from the tidy rows: blocks = (benchmark, OOD set), the mean AUROC over seeds in each."""
    from ood_bench.stats import critical_difference, friedman, rank_table

    d = report.ok_rows(res.df)
    d = d[(d["metric"] == "auroc") & (d["ood_dataset"] != "") & (d["corruption"] == "none")]
    figs, notes = [], []
    for fam, benches in CD_FAMILIES.items():
        sub = d[d["benchmark"].isin(benches)]
        present = sorted(sub["benchmark"].unique())
        if sub.empty:
            continue
        # detectors with results on every benchmark of the family; the CD_MAX best of them
        per = sub.groupby(["benchmark", "detector"])["value"].mean().unstack("benchmark")
        per = per.dropna()
        keep = list(per.mean(axis=1).sort_values(ascending=False).index[:CD_MAX])
        if len(keep) < 3:  # Friedman's test needs three
            notes.append(
                f"{fam}: fewer than three detectors run on every benchmark of the family "
                f"({', '.join(present)}): no diagram."
            )
            continue
        try:
            table = rank_table(sub[sub["detector"].isin(keep)], "auroc")
        except ValueError:  # no block has every one of them
            table = pd.DataFrame()
        if len(table) < 2:
            notes.append(f"{fam}: fewer than two complete (benchmark, OOD set) blocks.")
            continue
        f = friedman(table)
        srcs = tuple(Source(p) for p in sorted(sub["source"].unique()))
        cd = critical_difference(f.k, f.n_blocks)
        figs.append(figures.cd_figure(fam, f.ranks, cd, f.n_blocks, f.p_value, srcs))
        notes.append(
            f"{fam} ({', '.join(present)}): {f.k} detectors (run on every benchmark of the "
            f"family{'; the ' + str(CD_MAX) + ' best by mean AUROC' if len(per) > CD_MAX else ''}"
            f"), {f.n_blocks} blocks, Friedman p = {f.p_value:.2g}."
        )
    intro = (
        "Average rank by AUROC (1 = best) over the blocks (benchmark, OOD set) of a family, the "
        "mean over seeds in each block (`ood_bench.stats.rank_table`, `friedman`, "
        "`cd_diagram`); detectors joined by a thick bar differ by less than the critical "
        "difference CD (Nemenyi, 5 %). OOD sets of one benchmark share its ID test set, so the "
        "blocks are not fully independent: read the diagram as a summary, the boards' paired "
        "tests as the evidence."
    )
    return Section("Critical-difference diagrams", [intro, *notes], figures=figs)


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
        groups = tables.leaderboard_groups(g)
        scored = any(g[f"scored_seeds_{grp}"].notna().any() for grp in groups)
        full = int(g["full_seeds"].max())
        apart = int((~g["ranked"]).sum())
        notes = [
            f"Backbone `{bb}`. One leaderboard per OOD group ({', '.join(groups)}), each "
            "ranked by the mean AUROC over the group's sets (per seed the mean over the sets, "
            f"then mean ± std over seeds). Like with like: the rank is among the {full}-seed "
            "runs"
            + (f"; {apart} detector(s) with fewer seeds follow them, unranked." if apart else "."),
            SIGNIFICANCE_NOTE
            if scored
            else "No per-sample scores are stored for this benchmark yet "
            "(`scores/<csv stem>/<run_id>.npz`), so its boards have no interval and no tie "
            "marks: rerun the sweep and collect it with `ood-bench collect` to add them.",
        ]
        sections.append(
            Section(
                f"Leaderboards: {bench}",
                notes,
                tables=[tables.leaderboard_table(g, bench, bb, grp, href) for grp in groups],
                links=[(f"{bench}.html", f"{bench}: every detector on every OOD set")],
            )
        )
    sections.append(cd_section(res))
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


def score_figures(res: data.Results, bench: str, lb: pd.DataFrame) -> list[Figure]:
    """ROC curves and score histograms of the benchmark's best detectors (board of all OOD
    sets, ranked rows first) on its lowest seed with stored scores; none without scores."""
    paths = significance.score_paths(res.root, res.df)
    paths = paths[paths["benchmark"] == bench]
    if paths.empty:
        return []
    seed = int(paths["seed"].min())
    paths = paths[paths["seed"] == seed]
    board = lb[lb.index.get_level_values("benchmark") == bench]
    board = board.assign(_r=~board["ranked"]).sort_values(
        ["_r", "auroc_all"], ascending=[True, False], kind="stable"
    )
    order = [d for d in board.index.get_level_values("detector") if d in set(paths["detector"])]
    scores = {}
    for _, r in paths[paths["detector"].isin(order[: figures.MAX_CURVES])].iterrows():
        js = significance._load(r["path"])
        if js is not None:
            scores[r["detector"]] = js
    srcs = tuple(Source(p) for p in sorted(board["sources"].explode().unique()))
    return figures.score_figures(bench, order, scores, seed, srcs)


def benchmark_page(
    res: data.Results, bench: str, ps: pd.DataFrame, cal: list[Figure], lb: pd.DataFrame
) -> Page:
    """<bench>.html: ROC curves and score histograms from the stored scores, the per-OOD-set
    table, the calibration of the p-values."""
    sub = ps[ps["benchmark"] == bench]
    srcs = sorted(res.df.loc[res.df["benchmark"] == bench, "source"].unique())
    figs = score_figures(res, bench, lb)
    committed = [
        (f"figures/{bench}_roc.png", "ROC curves (OOD positive), seed 0"),
        (f"figures/{bench}_score_hist.png", "ID vs OOD score histograms, seed 0"),
    ]
    if figs:
        roc_note = (
            "From the per-sample scores the jobs stored (`scores/<csv stem>/<run_id>.npz`, "
            f"read with `ood_bench.scores.load`): the {figures.MAX_CURVES} best detectors of "
            "the board of all OOD sets at most, one colour each in every panel."
        )
    else:
        figs = [figures.copied(res.root, r, c) for r, c in committed if res.file_exists(r)]
        roc_note = (
            "No per-sample scores are stored for this benchmark yet (every job now keeps "
            "`scores.npz`; `ood-bench collect` gathers them under `results/scores/`): "
            + (
                "these are the committed figures of `ood-bench figures --roc`, made "
                "from the feature cache."
                if figs
                else "no ROC curve or score histogram until its sweep is rerun and collected."
            )
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
    """validity.html: calibration curves and the realised FPR at each α of every detector with
    p-values, each beside the range a valid conformal p-value gives."""
    leak_files = sorted((res.root / "calib_leak").glob("*.csv"))
    df = res.df
    if leak_files:
        df = pd.concat([df, data.read_tidy(res.root, leak_files)], ignore_index=True)
    checks = data.validity_checks(df)
    srcs = sorted(df.loc[df["metric"].str.startswith("fpr_at_"), "source"].unique())
    curves = [figures.calibration_curve(r, d) for r, d in data.calibration_curves(res.root).items()]
    rows = checks.groupby([*data.KEYS, "calib_source", "source"]).ngroups if len(checks) else 0
    above = checks[checks["verdict"] == "above"]
    n_above = above.groupby([*data.KEYS, "calib_source", "source"]).ngroups if len(above) else 0
    verdict = (
        f"Verdict: {rows} rows (detector × calibration source × source file), "
        f"{len(checks)} (row, α) checks; {len(above)} above the range ({n_above} rows), where "
        f"{0.025 * len(checks):.1f} are expected by chance if every p-value is valid (2.5 % "
        f"of the checks), and {int((checks['verdict'] == 'below').sum())} below it "
        "(conservative). The levels are not independent checks of one row (the same "
        "samples at α = 0.01, 0.05, 0.10), so read a row above at one level only as a flag."
        if rows
        else "No detector with p-values in these results."
    )
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
                    "Every detector gives conformal p-values (`ood_bench.calibration`), so every "
                    "one is checked. `calibrated on`: where the calibration samples came from "
                    "(`calib_source`: `train` = the benchmark's split cut from the ID training "
                    "data, `test` = held-out ID test images); `source`: the file. Seeds are "
                    "pooled only within one source file: `results/calib_leak/` holds CIFAR-10 "
                    "jobs calibrated on images the backbone trained on, never pooled with the "
                    "held-out runs.",
                    "Check at every α: the ID test rejections pooled over seeds against the "
                    "95 % range of a valid marginal conformal p-value. Per seed that count is "
                    "beta-binomial in the test and calibration sizes (the calibration draw "
                    "varies; the size is 1/p_min − 1), the seeds independent, so the pooled "
                    "range is their convolution (`data.conformal_band`); a job without a "
                    "`p_min` row gets the binomial range at α (calibration taken as fixed, "
                    "narrower). "
                    "▲ above the range: more false alarms than a valid p-value gives at that "
                    "level (5 % of valid rows land outside by chance, half of them above); ▼ "
                    "below: conservative (the corrected calibration is meant to be). "
                    "Class-conditional calibration gets the binomial range too: the rows do not "
                    "hold its per-class calibration sizes.",
                    verdict,
                ],
                tables=[tables.validity_table(checks, srcs)],
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
    out += [benchmark_page(res, b, ps, cal, lb) for b in sorted(bm["benchmark"].unique())]
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

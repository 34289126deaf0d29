"""The site's tables: frames of :mod:`ood_bench.site.data` as cells with display text, a sort
key and filter attributes, each table naming its source files (the templates render them as
plain HTML; ``static/site.js`` only adds sorting and filtering)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ood_bench.report import fmt_mean_std
from ood_bench.results import METRICS
from ood_bench.site.data import ALPHA, family
from ood_bench.site.sources import Source

# novelty metrics that are counts (the others are rates, shown in percent)
COUNTS = {
    "n_trials",
    "n_new_est",
    "n_new_true",
    "n_rejected",
    "true_outliers",
    "true_outliers_lb",
    "stream_delay",
    "stream_delay_median",
}
FILTER_LABELS = {"library": "library", "family": "detector family", "group": "OOD group"}
NOVELTY_GROUP = "scenario kind"  # the novelty table's group: control or new classes


@dataclass(frozen=True)
class Cell:
    """One cell: its text, the key it sorts by (numbers: a float as text; empty: last)."""

    text: str
    sort: str = ""
    href: str = ""
    cls: str = ""  # a mark shown by the style sheet: best, tied, below-chance


@dataclass(frozen=True)
class Column:
    """A column: header, tooltip, whether it sorts as numbers, whether its cells wrap."""

    label: str
    title: str = ""
    numeric: bool = False
    wrap: bool = False


@dataclass
class Table:
    """A table with its provenance; ``filters`` names the row attributes (``library``,
    ``family``, ``group``, …) the page offers a filter for."""

    id: str
    caption: str
    columns: list[Column]
    rows: list[tuple[list[Cell], dict[str, str]]] = field(default_factory=list)
    sources: list[Source] = field(default_factory=list)
    filters: tuple[str, ...] = ()
    note: str = ""
    sorted_by: str = ""  # the column the rows start sorted by (site.js follows a click)

    @property
    def filter_labels(self) -> dict[str, str]:
        """Filter attribute → the label of its menu."""
        novelty = self.id.startswith("novelty")
        labels = FILTER_LABELS | ({"group": NOVELTY_GROUP} if novelty else {})
        return {f: labels.get(f, f) for f in self.filters}


def num(v: float) -> str:
    """A sort key: the number in full precision, empty when missing."""
    return "" if v is None or pd.isna(v) else f"{float(v):.6g}"


def pct(mean: float, std: float = np.nan, digits: int = 1) -> Cell:
    """A fraction as ``mean ± std`` in percent."""
    return Cell(fmt_mean_std(mean, std, 100.0, digits), num(mean))


def plain(v: float, digits: int = 2) -> Cell:
    """A number with ``digits`` decimals (``–`` when missing)."""
    return Cell("–" if pd.isna(v) else f"{v:.{digits}f}", num(v))


def ratio(v: float) -> Cell:
    """A ratio to two or three decimals (``< 0.001`` below that; ``–`` when missing)."""
    if pd.isna(v):
        return Cell("–")
    shown = "< 0.001" if 0 < v < 0.0005 else f"{v:.2f}" if v >= 1 else f"{v:.3f}"
    return Cell(shown, num(v))


def amount(mean: float, std: float = np.nan) -> Cell:
    """A count or mean count, ``mean ± std`` to at most two decimals (``30``, ``4.87``)."""

    def short(v: float) -> str:
        """At most two decimals, no trailing zeros."""
        return f"{v:.2f}".rstrip("0").rstrip(".")

    if pd.isna(mean):
        return Cell("–")
    return Cell(short(mean) + ("" if pd.isna(std) else f" ± {short(std)}"), num(mean))


def measured(v: str) -> Cell:
    """A measurement as written in a CSV: numbers to four significant digits, text as is."""
    try:
        x = float(v)
    except ValueError:
        return Cell(v)
    return Cell(f"{x:.0f}" if x.is_integer() else f"{x:.4g}", num(x))


def text(v: object) -> Cell:
    """A text cell."""
    return Cell(str(v))


def count(v: float) -> Cell:
    """An integer cell."""
    return Cell("–" if pd.isna(v) else f"{int(v)}", num(v))


def sources_of(paths: Iterable[str]) -> list[Source]:
    """Sorted, distinct sources."""
    return sorted({Source(p) for p in paths})


def attrs(library: str, detector: str, group: str = "") -> dict[str, str]:
    """The filter attributes of a detector's row."""
    out = {"library": library, "family": family(detector)}
    return out | ({"group": group} if group else {})


GROUP_TEXT = {"near": "near OOD sets", "far": "far OOD sets", "all": "OOD sets (near and far)"}


def leaderboard_columns(group: str) -> list[Column]:
    """The columns of one OOD group's leaderboard."""
    sets = GROUP_TEXT[group]
    return [
        Column(
            "rank",
            "rank by mean AUROC among the detectors run on every seed; –: fewer "
            "seeds, ranked apart",
            True,
        ),
        Column(
            "detector",
            "bold: the best; underlined: not significantly worse than the best "
            "(Holm-corrected paired DeLong test, 5 %)",
        ),
        Column(
            "vs best",
            "Holm-adjusted p-value of DeLong's paired test against the best on "
            f"the mean AUROC over the {sets} (docs/site.md)",
            True,
        ),
        Column("library"),
        Column("family", "how the detector scores (ood_bench.site.data.FAMILIES)"),
        Column("seeds", "number of seeds the means are taken over", True),
        Column(
            f"AUROC {group} (%)", f"mean over the {sets} per seed, then mean ± std over seeds", True
        ),
        Column(
            "AUROC 95 % CI (%)",
            "DeLong interval (logit) of the mean AUROC, from the "
            "stored scores; the backbones and splits held fixed",
            True,
        ),
        Column(
            "TPR at guaranteed FPR ≤ 5 % (%)",
            "OOD rejected at p ≤ 0.05 by the conformal "
            f"p-values (tpr_at_0.05), mean over the {sets}; the ID false-alarm rate is at "
            "most 5 % by the conformal guarantee",
            True,
        ),
        Column("fpr95_id (%)", METRICS["fpr95_id"] + f"; {sets}; lower is better", True),
        Column("fpr95_ood (%)", METRICS["fpr95_ood"] + f"; {sets}; lower is better", True),
        Column(
            "score ÷ forward, sweep",
            "score time per sample over the backbone's forward time per sample, median over "
            "the sweep's jobs (shared CPU cores: indicative)",
            True,
        ),
        Column(
            "score ÷ forward, one run",
            "the same ratio measured in one run by scripts/bench_scoring.py "
            "(results/runtime/scoring_cost.csv)",
            True,
        ),
        Column(
            f"realised FPR at α = {ALPHA:g} (%)",
            "no: the detector gives no p-values; otherwise the fraction of ID test rejected "
            "at the level, mean ± std over seeds (the validity page has every level and the "
            "check)",
            True,
        ),
        Column("source", "the CSV files the row is computed from", wrap=True),
    ]


def leaderboard_groups(lb: pd.DataFrame) -> list[str]:
    """The OOD groups a benchmark has leaderboards for: those with results, and ``all``
    when there are several."""
    groups = [g for g in ("near", "far") if lb[f"auroc_{g}"].notna().any()]
    return groups + ["all"] if len(groups) != 1 else groups


def auroc_cell(mean: float, std: float) -> Cell:
    """AUROC ``mean ± std``, flagged below chance (< 50 %: the score ranks ID above OOD)."""
    c = pct(mean, std)
    if pd.notna(mean) and mean < 0.5:
        return Cell(c.text + " ▼ below chance", c.sort, cls="below-chance")
    return c


def versus_best(r: pd.Series, group: str) -> Cell:
    """The comparison with the best: ``best``, ``tied p = …``, ``worse p = …`` or ``–``."""
    p = r.get(f"p_holm_{group}", np.nan)
    if r.get(f"best_{group}") is True:
        return Cell("best", "2", cls="best")
    if pd.isna(p):
        return Cell("–")
    shown = "< 0.001" if p < 0.001 else f"= {p:.3f}"
    if r.get(f"tied_{group}") is True:
        return Cell(f"tied, p {shown}", num(p), cls="tied")
    return Cell(f"worse, p {shown}", num(p))


def interval(low: float, high: float) -> Cell:
    """A ``low–high`` interval in percent (``–`` when missing)."""
    if pd.isna(low):
        return Cell("–")
    return Cell(f"{low * 100:.1f}–{high * 100:.1f}", num(low))


def leaderboard_table(lb: pd.DataFrame, bench: str, backbone: str, group: str, href: str) -> Table:
    """One benchmark's leaderboard on one OOD group (rows of
    :func:`ood_bench.site.data.leaderboard`): ranked by the group's mean AUROC among the
    detectors run on every seed, the others after them, unranked."""
    col = f"auroc_{group}"
    lb = lb[lb[col].notna()]
    lb = lb.assign(_r=~lb["ranked"]).sort_values(
        ["_r", col], ascending=[True, False], kind="stable"
    )
    full = int(lb["full_seeds"].max())
    t = Table(
        f"leaderboard-{bench}-{backbone}-{group}",
        f"{bench} · {backbone}: {group} OOD leaderboard, by mean AUROC over the "
        f"{GROUP_TEXT[group]}; {full}-seed runs ranked, fewer-seed runs after them",
        leaderboard_columns(group),
        filters=("library", "family", "seeds"),
        sorted_by=f"AUROC {group} (%), descending",
    )
    used: set[str] = set()
    rank = 0
    for (_, _, det), r in lb.iterrows():
        used.update(r["sources"])
        rank += bool(r["ranked"])
        mark = (
            "best"
            if r.get(f"best_{group}") is True
            else ("tied" if r.get(f"tied_{group}") is True else "")
        )
        cells = [
            count(rank) if r["ranked"] else Cell("–"),
            Cell(det, cls=mark),
            versus_best(r, group),
            text(r["library"]),
            text(r["family"]),
            count(r["seeds"]),
            auroc_cell(r[col], r[f"{col}_std"]),
            interval(r.get(f"low_{group}", np.nan), r.get(f"high_{group}", np.nan)),
            pct(r[f"tpr_at_{ALPHA:g}_{group}"], r[f"tpr_at_{ALPHA:g}_{group}_std"]),
            pct(r[f"fpr95_id_{group}"], r[f"fpr95_id_{group}_std"]),
            pct(r[f"fpr95_ood_{group}"], r[f"fpr95_ood_{group}_std"]),
            ratio(r["cost"]),
            ratio(r["cost_bench"]),
            pct(r["alpha_fpr"], r["alpha_fpr_std"]) if r["pvalues"] else text("no"),
            source_cell(r["sources"], href),
        ]
        seeds = f"{int(r['seeds'])} seed{'s' if r['seeds'] != 1 else ''}"
        t.rows.append((cells, attrs(r["library"], det) | {"seeds": seeds}))
    t.sources = sources_of(used)
    return t


def source_cell(paths: Iterable[str], href: str) -> Cell:
    """A cell naming the source files of a row (a link when there is one file); ``href``:
    the results folder as seen from the site."""
    paths = sorted(paths)
    names = ", ".join(p.rsplit("/", 1)[-1] for p in paths)
    return Cell(names, names, f"{href}/{paths[0]}" if len(paths) == 1 else "")


def benchmarks_table(bm: pd.DataFrame) -> Table:
    """The benchmarks and their backbones with ID accuracy."""
    t = Table(
        "benchmarks",
        "Benchmarks and backbones",
        [
            Column("benchmark"),
            Column("backbone"),
            Column("ID dataset"),
            Column("near OOD sets"),
            Column("far OOD sets"),
            Column("detectors", "detector options with results", True),
            Column("seeds", "", True),
            Column("ID accuracy (%)", "backbone top-1 accuracy on ID test, mean ± std", True),
        ],
    )
    for _, r in bm.iterrows():
        t.rows.append(
            (
                [
                    Cell(r["benchmark"], r["benchmark"], f"{r['benchmark']}.html"),
                    text(r["backbone"]),
                    text(r["id_dataset"]),
                    text(", ".join(r["near"]) or "–"),
                    text(", ".join(r["far"]) or "–"),
                    count(r["detectors"]),
                    count(r["seeds"]),
                    pct(r["id_acc"], r["id_acc_std"]),
                ],
                {},
            )
        )
    t.sources = sources_of(p for s in bm["sources"] for p in s)
    return t


def per_set_table(ps: pd.DataFrame, bench: str, sources: list[str]) -> Table:
    """One benchmark's results per OOD set (rows of :func:`ood_bench.site.data.per_set`)."""
    t = Table(
        f"sets-{bench}",
        f"{bench}: every detector on every OOD set",
        [
            Column("detector"),
            Column("library"),
            Column("family"),
            Column("OOD set"),
            Column("OOD group"),
            Column("seeds", "", True),
            Column("AUROC (%)", METRICS["auroc"], True),
            Column("AUPR-out (%)", METRICS["aupr_out"], True),
            Column("fpr95_id (%)", METRICS["fpr95_id"], True),
            Column("fpr95_ood (%)", METRICS["fpr95_ood"], True),
        ],
        filters=("library", "family", "group"),
    )
    ps = ps.sort_values(["ood_group", "ood_dataset", "auroc"], ascending=[False, True, False])
    for _, r in ps.iterrows():
        library = r["library"]
        t.rows.append(
            (
                [
                    text(r["detector"]),
                    text(library),
                    text(family(r["detector"])),
                    text(r["ood_dataset"]),
                    text(r["ood_group"]),
                    count(r["seeds"]),
                    *(pct(r[m], r[f"{m}_std"]) for m in ("auroc", "aupr_out")),
                    *(pct(r[m], r[f"{m}_std"]) for m in ("fpr95_id", "fpr95_ood")),
                ],
                attrs(library, r["detector"], r["ood_group"]),
            )
        )
    t.sources = sources_of(sources)
    return t


def robustness_table(rb: pd.DataFrame, sources: list[str]) -> Table:
    """AUROC, ID accuracy and the corrupted ID rejected at α = 0.05 per corruption and
    severity (severity 0: clean)."""
    t = Table(
        "robustness",
        "Under corruption: mean over seeds per corruption and severity (0 = clean)",
        [
            Column("benchmark"),
            Column("detector"),
            Column("library"),
            Column("family"),
            Column("corruption"),
            Column("severity", "", True),
            Column("seeds", "", True),
            Column("mean AUROC (%)", "mean AUROC over the OOD sets", True),
            Column("ID accuracy (%)", METRICS["id_acc"], True),
            Column("corrupted ID rejected at α = 0.05 (%)", "p-value detectors", True),
        ],
        filters=("library", "family"),
    )
    for _, r in rb.iterrows():
        library = r["library"]
        t.rows.append(
            (
                [
                    text(r["benchmark"]),
                    text(r["detector"]),
                    text(library),
                    text(family(r["detector"])),
                    text(r["corruption"]),
                    count(r["severity"]),
                    count(r["seeds"]),
                    pct(r["auroc"], r["auroc_std"]),
                    pct(r["id_acc"], r["id_acc_std"]),
                    pct(r["fpr_at_0.05"], r["fpr_at_0.05_std"]),
                ],
                attrs(library, r["detector"]),
            )
        )
    t.sources = sources_of(sources)
    return t


def stability_table(st: pd.DataFrame, sources: list[str]) -> Table:
    """Kendall's τ between the detector rankings of every pair of seeds
    (:func:`ood_bench.report.ranking_stability`)."""
    t = Table(
        "rank-stability",
        "Seed rank stability: Kendall's τ between the detector rankings (mean AUROC) of "
        "every pair of seeds",
        [
            Column("benchmark"),
            Column("backbone"),
            Column("corruption"),
            Column("severity", "", True),
            Column("detectors", "detectors run on every seed", True),
            Column("seeds", "", True),
            Column("τ mean", "mean over seed pairs", True),
            Column("τ min", "the least similar pair of seeds", True),
        ],
    )
    for _, r in st.iterrows():
        t.rows.append(
            (
                [
                    text(r["benchmark"]),
                    text(r["backbone"]),
                    text(r["corruption"]),
                    count(r["severity"]),
                    count(r["detectors"]),
                    count(r["seeds"]),
                    plain(r["tau_mean"], 3),
                    plain(r["tau_min"], 3),
                ],
                {},
            )
        )
    t.sources = sources_of(sources)
    return t


def level_cell(r: pd.Series) -> Cell:
    """Realised FPR at one α, mean ± std over seeds, marked when the pooled rate is outside
    the range of a valid conformal p-value."""
    c = pct(r["mean"], r["std"])
    if r["verdict"] == "above":
        return Cell(c.text + " ▲", c.sort, cls="outside")
    if r["verdict"] == "below":
        return Cell(c.text + " ▼", c.sort)
    return c


def validity_table(checks: pd.DataFrame, sources: list[str]) -> Table:
    """Realised FPR at each level α per detector, calibration source and source file
    (``checks``: :func:`ood_bench.site.data.validity_checks`), with the verdict."""
    alphas = sorted(checks["alpha"].unique()) if len(checks) else []
    t = Table(
        "validity",
        "Validity of the p-values: ID test rejected at level α (mean ± std over seeds; ▲ above, "
        "▼ below the 95 % range of a valid conformal p-value, pooled over seeds)",
        [
            Column("benchmark"),
            Column("detector"),
            Column("library"),
            Column("family"),
            Column("calibrated on", "calib_source: where the calibration samples came from"),
            Column("source", "the file the seeds are pooled within"),
            Column("seeds", "", True),
            Column("ID test size", "n_id per seed (median)", True),
            *(
                Column(f"FPR at α = {a:g} (%)", METRICS.get(f"fpr_at_{a:g}", ""), True)
                for a in alphas
            ),
            Column(
                "range at α = 0.05 (%)",
                "95 % range of the pooled realised FPR of a valid "
                "conformal p-value (beta-binomial; binomial without p_min)",
                True,
            ),
            Column("verdict", "inside the range at every level, or the levels outside it"),
        ],
        filters=("library", "family", "verdict"),
    )
    keys = [*KEYS_V, "calib_source", "source", "library"]
    for k, g in checks.groupby(keys):
        by = g.set_index("alpha")
        above = [f"{a:g}" for a in alphas if a in by.index and by.at[a, "verdict"] == "above"]
        below = [f"{a:g}" for a in alphas if a in by.index and by.at[a, "verdict"] == "below"]
        if above:
            verdict = f"above at α = {', '.join(above)}"
        elif below:
            verdict = f"conservative at α = {', '.join(below)}"
        else:
            verdict = "inside at every level"
        ref = by.loc[0.05] if 0.05 in by.index else None
        band = (
            Cell(f"{ref['band_lo'] * 100:.2f}–{ref['band_hi'] * 100:.2f}", num(ref["band_lo"]))
            if ref is not None
            else Cell("–")
        )
        cells = [
            text(k[0]),
            text(k[2]),
            text(k[5]),
            text(family(k[2])),
            text(k[3]),
            text(k[4].rsplit("/", 1)[-1]),
            count(by["seeds"].max()),
            count(by["n_id"].median()),
            *(level_cell(by.loc[a]) if a in by.index else pct(np.nan) for a in alphas),
            band,
            Cell(verdict, cls="outside" if above else ""),
        ]
        kind = "above" if above else "conservative" if below else "inside"
        t.rows.append((cells, attrs(k[5], k[2]) | {"verdict": kind}))
    t.sources = sources_of(sources)
    return t


KEYS_V = ["benchmark", "backbone", "detector"]


def lead(s: str) -> str:
    """The sort key of a formatted cell: its first number (``98.7 ± 1.2`` → 98.7)."""
    m = re.match(r"\s*(-?\d+(?:\.\d+)?)", s)
    return num(float(m.group(1))) if m else ""


def novelty_summary_table(summary: pd.DataFrame, sources: list[str]) -> Table:
    """The novelty report's table (``ood_bench.novelty.report.novelty_table``, as in
    ``novelty.md``): one row per benchmark / backbone / detector and scenario."""
    s = summary.reset_index()
    first = ["benchmark / backbone / detector", "scenario"]
    cols = [Column(c, wrap=c == first[0]) for c in first]
    # the page's width: the miss rate (1 - decision acc), the exact-count rate and the count
    # bound's coverage stay in novelty.md and the table of every metric below
    hidden = {"miss (%)", "exact count (%)", "bound coverage (%)"}
    shown = [c for c in s.columns if c not in first and c not in hidden]
    cols += [Column(c, "mean ± std over seeds", True) for c in shown]
    t = Table(
        "novelty_summary",
        "Novelty detection: decision, false alarms (exact 95 % bound), number of new classes, "
        "ACC / NMI / ARI per scenario",
        cols,
        filters=("group", "scenario"),
    )
    for _, r in s.iterrows():
        cells = [text(r[c]) for c in first]
        cells += [Cell(str(r[c.label]), lead(str(r[c.label]))) for c in cols[2:]]
        if r.get("miss (%)", "–") != "–":
            group = "new classes"
        elif r.get("stream detected (%)", "–") != "–":
            group = "stream"
        else:
            group = "control"
        t.rows.append((cells, {"group": group, "scenario": r["scenario"]}))
    t.sources = sources_of(sources)
    return t


def novelty_table(nv: pd.DataFrame, sources: list[str]) -> Table:
    """Every novelty row (whatever scenarios and metrics the files hold), one per scenario and
    metric: mean ± std over seeds, rates in percent, counts as they are."""
    t = Table(
        "novelty",
        "Novelty detection: every metric of every scenario (mean ± std over seeds)",
        [
            Column("benchmark"),
            Column("backbone"),
            Column("detector + method"),
            Column("scenario"),
            Column("metric"),
            Column("seeds", "", True),
            Column("value", "rates in %, counts and delays as they are", True),
            Column("meaning", "docs/novelty.md", wrap=True),
        ],
        filters=("group", "scenario", "metric"),
    )
    order = {m: i for i, m in enumerate(METRICS)}
    nv = nv.assign(_o=nv["metric"].map(order)).sort_values(
        ["benchmark", "backbone", "detector", "scenario", "_o"]
    )
    keys = ["benchmark", "backbone", "detector", "scenario"]
    # a control: no new class in its batches (a novelty_false_alarm rate), e.g. ID data, noise,
    # or another domain when the method's domain is same
    controls = set(map(tuple, nv.loc[nv["metric"] == "novelty_false_alarm", keys].to_numpy()))
    for _, r in nv.iterrows():
        m = r["metric"]
        value = amount(r["mean"], r["std"]) if m in COUNTS else pct(r["mean"], r["std"])
        cells = [text(r[c]) for c in keys]
        cells += [text(m if m in COUNTS else f"{m} (%)"), count(r["seeds"]), value]
        cells.append(text(METRICS[m]))
        group = "control" if tuple(r[keys]) in controls else "new classes"
        t.rows.append((cells, {"group": group, "scenario": r["scenario"], "metric": m}))
    t.sources = sources_of(sources)
    return t


def measurements_table(m: pd.DataFrame) -> Table:
    """``libraries/measurements.csv`` as it is: one row per figure of the comparison."""
    cols = ["library", "aspect", "name", "value", "unit", "method"]
    t = Table(
        "measurements",
        "The library comparison, every measurement",
        [Column(c, wrap=c in ("value", "method")) for c in cols],
        sources=[Source("libraries/measurements.csv"), Source("libraries/comparison.md")],
        filters=("library",),
    )
    for _, r in m.iterrows():
        cells = [measured(r[c]) if c == "value" else text(r[c]) for c in cols]
        t.rows.append((cells, {"library": r["library"]}))
    return t


def defaults_table(d: pd.DataFrame) -> Table:
    """Defaults that differ between pytorch-ood and OpenOOD, measured."""
    t = Table(
        "library-defaults",
        "Defaults that differ between the libraries: mean AUROC over the OOD sets, mean ± std "
        "over seeds",
        [
            Column("method"),
            Column("variant"),
            Column("detector"),
            Column("setting"),
            Column("seeds", "", True),
            Column("AUROC (%)", "", True),
        ],
        sources=[Source("libraries/defaults.csv")],
        filters=("library",),
    )
    for _, r in d.iterrows():
        library = "openood" if r["detector"].startswith("openood_") else "pytorch-ood"
        cells = [text(r[c]) for c in ("method", "variant", "detector", "setting")]
        cells += [count(r["seeds"]), pct(r["mean"], r["std"], 2)]
        t.rows.append((cells, {"library": library}))
    return t


def crosscheck_table(c: pd.DataFrame, sources: list[str]) -> Table:
    """pytorch-ood vs OpenOOD on the same method and backbone."""
    t = Table(
        "crosscheck",
        "The same method in pytorch-ood and OpenOOD: mean AUROC over the OOD sets and the "
        "largest per-set difference",
        [
            Column("benchmark"),
            Column("method"),
            Column("run", "defaults: each library's own; aligned: differing settings set equal"),
            Column("pytorch-ood AUROC", "", True),
            Column("OpenOOD AUROC", "", True),
            Column("max |Δ| per set", "", True),
        ],
        sources=sources_of(sources),
    )
    for _, r in c.iterrows():
        cells = [text(r["benchmark"]), text(r["method"]), text(r["variant"])]
        cells += [plain(r["pood"], 4), plain(r["openood"], 4), plain(r["diff"], 4)]
        t.rows.append((cells, {}))
    return t

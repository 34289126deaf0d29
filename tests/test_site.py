"""The results site: the committed results/site is what the committed results give, byte for
byte; its numbers are report.aggregate's; every page is there and loads nothing from outside."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ood_bench import report
from ood_bench.errors import DataError
from ood_bench.site import build_site, data
from ood_bench.site.build import render
from ood_bench.site.output import MANIFEST, manifest
from ood_bench.site.sources import Source
from tests.conftest import ROOT

RESULTS = ROOT / "results"
SITE = RESULTS / "site"
HREF = ".."  # the results folder as seen from results/site


@pytest.fixture(scope="module")
def res() -> data.Results:
    return data.load(RESULTS)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    build_site(RESULTS, out, href=HREF)
    return out


def _files(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_committed_site_is_what_the_results_give(built: Path):
    """Fails, naming the files, when results/site differs from a fresh build."""
    new, old = _files(built), _files(SITE)
    missing, extra = sorted(set(new) - set(old)), sorted(set(old) - set(new))
    changed = sorted(f for f in set(new) & set(old) if new[f] != old[f])
    assert not (missing or extra or changed), (
        f"results/site is out of date (missing {missing}, stale {extra}, changed {changed}); "
        "run: make report (the SVGs also change with the matplotlib version)"
    )


def test_same_results_same_bytes(res: data.Results, built: Path):
    assert render(res, HREF) == _files(built)


def test_every_page_is_there(res: data.Results, built: Path):
    benches = sorted(report.ok_rows(res.df)["benchmark"].unique())
    pages = {"index", *benches, "robustness", "validity", "libraries", "novelty"}
    assert {p.stem for p in built.glob("*.html")} == pages
    nav = (built / "index.html").read_text()
    for page in pages:
        assert f'href="{page}.html"' in nav, f"the navigation lacks {page}.html"


def test_leaderboard_numbers_are_report_aggregates(res: data.Results, built: Path):
    """The leaderboard cell of a detector is report.aggregate's mean ± std, in percent."""
    agg = report.aggregate(res.df, "auroc")
    row = agg[
        (agg["benchmark"] == "digits_open")
        & (agg["detector"] == "stat_maha_energy")
        & (agg["ood_dataset"] == "mean near")
    ].iloc[0]
    expected = report.fmt_mean_std(row["mean"], row["std"])
    lb = data.leaderboard(res)
    got = lb.loc[("digits_open", "digits_cnn", "stat_maha_energy")]
    assert np.isclose(got["auroc_near"], row["mean"]) and np.isclose(
        got["auroc_near_std"], row["std"]
    )
    assert got["seeds"] == row["n_seeds"]
    html = (built / "index.html").read_text()
    table = html.split('id="leaderboard-digits_open-digits_cnn-near"')[1].split("</table>")[0]
    line = next(tr for tr in table.split("<tr") if re.search(r">stat_maha_energy</td>", tr))
    cells = re.findall(r"<td[^>]*>(.*?)</td>", line)
    assert cells[6] == expected  # rank, detector, vs best, library, family, seeds, AUROC near
    # both FPR95 readings, named, from their own metric
    for metric, col in (("fpr95_id", -6), ("fpr95_ood", -5)):
        a = report.aggregate(res.df, metric)
        r = a[
            (a["benchmark"] == "digits_open")
            & (a["detector"] == "stat_maha_energy")
            & (a["ood_dataset"] == "mean near")
        ].iloc[0]
        assert cells[col] == report.fmt_mean_std(r["mean"], r["std"]), metric  # the near board
        assert f"{metric} (%)" in table


def test_leaderboard_is_sorted_best_first(res: data.Results):
    lb = data.leaderboard(res)
    for _, g in lb.groupby(level="benchmark"):
        assert g["auroc_all"].is_monotonic_decreasing


def test_p_value_column_only_for_p_value_detectors(res: data.Results):
    """The realised-FPR column is filled exactly for the detectors with fpr_at_<α> rows (since
    issue 28 every detector has them; older results only the stat_* family)."""
    lb = data.leaderboard(res)
    d = report.ok_rows(res.df)
    with_rows = set(
        map(tuple, d.loc[d["metric"] == "fpr_at_0.05", data.KEYS].drop_duplicates().to_numpy())
    )
    assert lb["pvalues"].any()
    assert {k for k in lb.index if lb.at[k, "pvalues"]} == with_rows & set(lb.index)
    assert not lb.loc[~lb["pvalues"], "alpha_fpr"].notna().any()


def test_families_cover_every_detector(res: data.Results):
    assert "other" not in set(data.leaderboard(res)["family"])
    assert data.family("pood_msp") == data.family("openood_msp") == "softmax / logit"
    assert data.family("stat_masf+hdbscan") == "conformal p-value"


def test_nothing_is_loaded_from_outside(built: Path):
    """No src, stylesheet or script from another host: the site works offline."""
    for page in built.glob("*.html"):
        html = page.read_text()
        for tag in re.findall(r"<(?:img|script|link|iframe|source|video|audio)\b[^>]*>", html):
            assert not re.search(r"""(src|href)=["']?(https?:)?//""", tag), (page.name, tag)
        assert "@import" not in html and "url(http" not in html
    css = (built / "assets" / "site.css").read_text()
    assert "http" not in css and "@import" not in css
    js = (built / "assets" / "site.js").read_text()
    assert not re.search(r"https?://|fetch\(|XMLHttpRequest", js)


def test_every_table_names_its_source_and_command(built: Path):
    for page in built.glob("*.html"):
        html = page.read_text()
        blocks = html.split('<div class="table-block">')[1:]
        for block in blocks:
            assert '<details class="source">' in block, page.name
            assert re.search(r'<a href="\.\./[^"]+">results/[^<]+</a>, written by <code>', block)
        images = re.findall(r'<img src="([^"]+)"', html)
        for src in images:
            assert (built / src).is_file(), (page.name, src)


def test_footer_names_the_commit_and_date_of_the_data(res: data.Results, built: Path):
    newest = res.df.sort_values("timestamp").iloc[-1]
    for page in built.glob("*.html"):
        html = page.read_text()
        assert f"commit <code>{newest['git_sha']}</code>" in html, page.name
        assert newest["timestamp"] in html, page.name


def test_tables_read_without_javascript(built: Path):
    """Every row and number is in the HTML: nothing is drawn by the script."""
    html = (built / "digits.html").read_text()
    rows = re.findall(r"<tr data-library=", html)
    assert len(rows) > 100
    assert "<noscript>" not in html  # nothing hides behind the script


def test_rocs_come_from_the_stored_scores_and_the_missing_are_named(built: Path):
    """digits has stored scores (results/scores/digits_all): its ROC is drawn from them; a
    benchmark without scores says how to get them."""
    digits = (built / "digits.html").read_text()
    assert 'src="img/digits_roc.svg"' in digits and (built / "img" / "digits_roc.svg").is_file()
    assert "no ROC curve or score histogram until" in (built / "mnist_split.html").read_text()


def test_novelty_page_follows_the_files(tmp_path: Path):
    """A new novelty CSV shows up as rows of the one table, whatever its scenarios."""
    root = tmp_path / "results"
    (root / "raw").mkdir(parents=True)
    (root / "novelty").mkdir()
    raw = pd.read_csv(RESULTS / "raw" / "mnist_split.csv", dtype=str, keep_default_na=False)
    raw.to_csv(root / "raw" / "mnist_split.csv", index=False)
    nov = pd.read_csv(RESULTS / "novelty" / "digits_open.csv", dtype=str, keep_default_na=False)
    nov = nov.assign(ood_dataset=nov["ood_dataset"].replace("digits_open", "cifar_split"))
    nov.to_csv(root / "novelty" / "cifar.csv", index=False)
    build_site(root, tmp_path / "site")
    html = (tmp_path / "site" / "novelty.html").read_text()
    assert "<td>cifar_split</td>" in html and "novelty/cifar.csv" in html
    assert "robustness.html" in (tmp_path / "site" / "index.html").read_text()


def test_stale_site_files_are_removed_and_others_kept(tmp_path: Path):
    out = tmp_path / "site"
    (out / "img").mkdir(parents=True)
    (out / "img" / "old.svg").write_text("<svg/>")  # written by an earlier build: listed
    (out / MANIFEST).write_bytes(manifest({"img/old.svg": b"<svg/>"}))
    (out / "notes.txt").write_text("mine")
    build_site(RESULTS, out, href=HREF)
    assert not (out / "img" / "old.svg").exists()
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "index.html").is_file()


@pytest.mark.parametrize("case", ["missing", "empty"])
def test_bad_input_is_a_clear_error(tmp_path: Path, case: str):
    root = tmp_path / "results"
    if case == "empty":
        (root / "raw").mkdir(parents=True)
    with pytest.raises(DataError, match="no results folder" if case == "missing" else "no CSV"):
        build_site(root, tmp_path / "site")
    run = subprocess.run(
        [sys.executable, "-m", "ood_bench.cli", "report", str(root)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert run.returncode == 2 and "ood-bench report: no" in run.stderr


def test_sources_name_their_command():
    assert "ood-bench collect outputs/digits_all" in Source("raw/digits_all.csv").command
    assert "bench_scoring.py" in Source("runtime/scoring_cost.csv").command
    assert Source("raw/x.csv").name == "results/raw/x.csv"

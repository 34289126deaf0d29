"""The statistics of the site's boards: tie marks from the stored scores (a clearly worse
detector is not marked, an identical one is), the DeLong variance of a group mean, the
conformal band of the validity page, and pages that build with and without scores.

The fixture (tests/fixtures/site_scores) is a real sweep: digits_open with its scores
(stat_maha_energy, pood_msp, pood_energy on seeds 0, 1; pood_knn on seed 0 only) and a
digits_all subset without scores."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ood_bench import report, scores
from ood_bench.site import build_site, data, significance
from ood_bench.stats.intervals import delong
from tests.conftest import ROOT

FIXTURE = ROOT / "tests" / "fixtures" / "site_scores"
BENCH = ("digits_open", "digits_cnn")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    build_site(FIXTURE, out)
    return out


def _rewrite(root: Path, make: dict[str, object]) -> None:
    """Replace each job's scores under ``root`` by ``make[detector](js)``'s."""
    for f in sorted((root / "scores" / "digits_open").glob("*.npz")):
        js = scores.load(f)
        fn = make.get(js.meta["detector"])
        if fn is not None:
            scores.save(fn(js), f)


def _shifted(js: scores.JobScores, shift: float, seed: int) -> scores.JobScores:
    """Synthetic scores on the same samples: ID N(0, 1), OOD N(shift, 1), seeded per set."""
    rng = np.random.default_rng(seed + 1000 * int(js.meta["seed"]))
    sets = [
        scores.ScoreSet(
            s.name,
            s.role,
            s.group,
            rng.normal(shift if s.role == "ood" else 0.0, 1.0, len(s.score)),
            s.pvalue,
            s.index,
        )
        for s in js.sets
    ]
    return scores.JobScores(sets, js.meta)


@pytest.mark.slow  # builds a site (~10-20 s on a shared machine)
def test_marks_on_a_constructed_case(tmp_path: Path):
    """The best (stat_maha_energy on the CSVs) gets strong synthetic scores; pood_msp the very
    same scores (identical: tied, p = 1); pood_energy clearly weaker ones (not tied); pood_knn
    (one seed) weak ones: not tied, and unranked."""
    root = tmp_path / "results"
    shutil.copytree(FIXTURE, root)
    strong = lambda js: _shifted(js, 3.0, 0)  # noqa: E731
    _rewrite(
        root,
        {
            "stat_maha_energy": strong,
            "pood_msp": strong,  # the same generator seed: the same numbers
            "pood_energy": lambda js: _shifted(js, 0.3, 1),
            "pood_knn": lambda js: _shifted(js, 0.5, 2),
        },
    )
    res = data.load(root)
    lb = data.leaderboard(res)
    board = lb.xs(BENCH, level=["benchmark", "backbone"])
    for g in ("near", "far", "all"):
        assert board.at["stat_maha_energy", f"best_{g}"]
        assert board.at["pood_msp", f"tied_{g}"] and board.at["pood_msp", f"p_holm_{g}"] == 1.0
        assert not board.at["pood_energy", f"tied_{g}"]
        assert board.at["pood_energy", f"p_holm_{g}"] < 1e-6
        assert not board.at["pood_knn", f"tied_{g}"]
        low, high = board.at["pood_energy", f"low_{g}"], board.at["pood_energy", f"high_{g}"]
        assert 0.5 < low < high < 0.7  # the AUROC of N(0.3, 1) vs N(0, 1) is 0.584
    assert not board.at["pood_knn", "ranked"] and board.at["stat_maha_energy", "ranked"]
    out = tmp_path / "site"
    build_site(root, out)
    html = (out / "index.html").read_text()
    near = html.split('id="leaderboard-digits_open-digits_cnn-near"')[1].split("</table>")[0]
    assert '<td class="best">stat_maha_energy</td>' in near
    assert '<td class="tied">pood_msp</td>' in near
    assert "<td>pood_energy</td>" in near and "<td>pood_knn</td>" in near
    # the LaTeX table carries the same marks in its mean columns
    table = report.performance_table(res.df, "auroc", data.ties(root))
    rows = {i.rsplit(" / ", 1)[-1]: r for i, r in table.iterrows() if "digits_open" in i}
    assert rows["stat_maha_energy"]["mean near"].startswith("**")
    assert rows["pood_msp"]["mean near"].startswith("<u>")
    assert not rows["pood_energy"]["mean near"].startswith(("**", "<u>"))
    tex = report.to_latex(table, "AUROC", "tab:auroc")
    assert r"\underline{" in tex and r"\textbf{" in tex


def test_group_variance_of_one_set_is_delongs():
    rng = np.random.default_rng(0)
    sid, sood = rng.normal(size=300), rng.normal(1.0, 1.0, 200)
    js = scores.JobScores(
        [scores.ScoreSet("id", "id", "", sid), scores.ScoreSet("x", "ood", "far", sood)]
    )
    pl = significance.group_placements(js, "far")
    auroc, cov = delong(sid, sood)
    assert np.isclose(pl.auroc, auroc[0]) and np.isclose(pl.var(), cov[0, 0])
    assert significance.group_placements(js, "near") is None


def test_group_mean_over_sets_is_the_mean_auroc_and_its_variance_adds_up():
    """Two OOD sets: the mean of their AUROCs, and a variance between the variance of the mean
    of two independent AUROCs and the variance of one (they share the ID samples)."""
    rng = np.random.default_rng(1)
    sid = rng.normal(size=400)
    a, b = rng.normal(1.0, 1.0, 300), rng.normal(0.5, 1.0, 100)
    sets = [scores.ScoreSet("id", "id", "", sid)]
    sets += [scores.ScoreSet("a", "ood", "far", a), scores.ScoreSet("b", "ood", "far", b)]
    pl = significance.group_placements(scores.JobScores(sets), "far")
    (aa,), ca = delong(sid, a)
    (ab,), cb = delong(sid, b)
    assert np.isclose(pl.auroc, (aa + ab) / 2)
    assert (ca[0, 0] + cb[0, 0]) / 4 < pl.var() < (ca[0, 0] + cb[0, 0]) / 2


def test_conformal_band_is_the_beta_binomial_of_the_docs():
    """docs/statistical-detector.md: n = 10,000, n_calib = 5,000 gives 4.28–5.76 %."""
    lo, hi, method = data.conformal_band([10_000], [5_000], 0.05)
    assert method == "beta-binomial" and (round(lo * 100, 2), round(hi * 100, 2)) == (4.28, 5.76)
    lo2, hi2, _ = data.conformal_band([10_000] * 3, [5_000] * 3, 0.05)
    assert lo < lo2 < 0.05 < hi2 < hi  # pooling seeds narrows the range
    blo, bhi, method = data.conformal_band([10_000], [None], 0.05)
    assert method == "binomial" and lo < blo < bhi < hi


@pytest.mark.slow  # builds a site (~10-20 s on a shared machine)
def test_a_row_above_the_band_is_flagged(tmp_path: Path):
    root = tmp_path / "results"
    shutil.copytree(FIXTURE, root)
    csv = root / "raw" / "digits_open.csv"
    d = pd.read_csv(csv, dtype=str, keep_default_na=False)
    hit = (d["detector"] == "pood_msp") & (d["metric"] == "fpr_at_0.05")
    d.loc[hit, "value"] = "0.2"
    d.to_csv(csv, index=False)
    checks = data.validity_checks(data.load(root).df)
    mine = checks[checks["benchmark"] == "digits_open"]
    row = mine[(mine["detector"] == "pood_msp") & (mine["alpha"] == 0.05)].iloc[0]
    assert row["verdict"] == "above" and row["method"] == "beta-binomial"
    others = mine[mine["detector"] != "pood_msp"]
    assert (others["verdict"] != "above").all()
    build_site(root, tmp_path / "site")
    html = (tmp_path / "site" / "validity.html").read_text()
    assert (
        "above at α = 0.05" in html
        and '<td class="num outside" data-sort="0.2">20.0 ± 0.0 ▲</td>' in html
    )


@pytest.mark.slow  # builds a site (~10-20 s on a shared machine)
def test_pages_with_scores(site: Path):
    page = (site / "digits_open.html").read_text()
    assert (
        'src="img/digits_open_roc.svg"' in page and 'src="img/digits_open_score_hist.svg"' in page
    )
    assert "From the per-sample scores" in page
    index = (site / "index.html").read_text()
    for g in ("near", "far", "all"):
        assert f'id="leaderboard-digits_open-digits_cnn-{g}"' in index
    assert "(sorted by AUROC near (%), descending)" in index
    assert 'src="img/cd_digits.svg"' in index and (site / "img" / "cd_digits.svg").is_file()
    assert "TPR at guaranteed FPR ≤ 5 % (%)" in index


@pytest.mark.slow  # builds a site (~10-20 s on a shared machine)
def test_pages_without_scores(site: Path):
    """digits has no stored scores in the fixture: said on its page and above its board."""
    page = (site / "digits.html").read_text()
    assert "No per-sample scores are stored for this benchmark yet" in page
    assert "<img" not in page.split("Per OOD set")[0]
    index = (site / "index.html").read_text()
    board = index.split("<h2>Leaderboards: digits</h2>")[1].split("<h2>")[0]
    assert "so its boards have no interval and no tie marks" in board
    assert 'class="best"' not in board


def test_below_chance_is_flagged():
    from ood_bench.site.tables import auroc_cell

    assert auroc_cell(0.383, 0.01).text == "38.3 ± 1.0 ▼ below chance"
    assert auroc_cell(0.383, 0.01).cls == "below-chance"
    assert auroc_cell(0.6, np.nan).text == "60.0"

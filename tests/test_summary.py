"""The demo's compact summary: plain-text tables, closing lines computed from the results (best
detector per OOD group, the type-I error guarantee), exact binomial intervals."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import beta

from ood_bench.results import read_results
from ood_bench.summary import (
    DEFINED,
    closing_lines,
    demo_summary,
    summary_frame,
    validity,
    verdict,
)
from tests.conftest import ROOT, run_module

DETECTORS = {"stat_a": "ood_bench", "stat_b": "ood_bench", "pood_x": "pytorch-ood"}
SETS = {"open": {"near_set": "near", "far_1": "far", "far_2": "far"}, "plain": {"far_1": "far"}}


def synthetic(seed: int = 0, fpr: float = 0.05, n_id: int = 400) -> pd.DataFrame:
    """A tidy results frame: 2 benchmarks (one with a near set), 3 detectors, 2 seeds, random
    AUROC / FPR95 per OOD set, runtimes, and ``fpr_at_0.05`` for the ``stat_*`` detectors."""
    rng = np.random.default_rng(seed)
    rows = []
    for bench, sets in SETS.items():
        for det, lib in DETECTORS.items():
            for s in (0, 1):
                job = dict(benchmark=bench, backbone="cnn", detector=det, library=lib, seed=s)
                job.update(status="ok", corruption="none", n_id=n_id)

                def row(metric, value, ood="", group="", **job_):
                    rows.append({**job_, "metric": metric, "value": value})
                    rows[-1].update(ood_dataset=ood, ood_group=group)

                for ood, group in sets.items():
                    for metric in ("auroc", "fpr95_id", "fpr95_ood"):
                        row(metric, rng.uniform(0.5, 1.0), ood, group, **job)
                row("fit_s", rng.uniform(0, 1), **job)
                row("score_ms_per_sample", rng.uniform(0, 1), **job)
                if det.startswith("stat"):
                    row("fpr_at_0.05", fpr, **job)
    return pd.DataFrame(rows).assign(error="")


def best(df: pd.DataFrame, bench: str, group: str) -> str:
    """The detector with the highest mean AUROC over the group's sets and seeds, by hand."""
    d = df[(df["benchmark"] == bench) & (df["metric"] == "auroc") & (df["ood_group"] == group)]
    return d.groupby("detector")["value"].mean().idxmax()


def line_of(lines: list[str], start: str) -> str:
    (line,) = [x for x in lines if x.startswith(start)]
    return line


def test_summary_is_plain_text_and_names_the_computed_best():
    df = synthetic()
    text = demo_summary(df)
    assert "('" not in text and "open / stat_a" in text and "## What this shows" in text
    lines = closing_lines(df, summary_frame(df))
    for bench, group in (("open", "near"), ("open", "far"), ("plain", "far")):
        line = line_of(lines, f"{group.capitalize()} OOD on {bench} ")
        assert f"highest mean AUROC {best(df, bench, group)} " in line
    # a benchmark without near sets has no near column and no near line
    assert not any(x.startswith("Near OOD on plain") for x in lines)
    assert line_of(lines, "Guarantee at α = 0.05").startswith("Guarantee at α = 0.05 held")
    assert "pood_x" in line_of(lines, "Scores only")


def test_guarantee_line_flips_when_the_false_positive_rate_is_large():
    df = synthetic()
    fpr = df["metric"] == "fpr_at_0.05"
    df.loc[fpr & (df["detector"] == "stat_b") & (df["benchmark"] == "open"), "value"] = 0.2
    text = demo_summary(df)
    line = line_of(closing_lines(df, summary_frame(df)), "Guarantee")
    assert "VIOLATED for 1 of 4" in line and "open / stat_b" in line
    assert "| open / stat_b" in text and "VIOLATED (above α)" in text


def test_validity_is_the_exact_clopper_pearson_interval_pooled_over_seeds():
    n, fpr = 400, 0.0625  # 25 of 400 per seed, 50 of 800 over the two seeds
    v = validity(synthetic(fpr=fpr, n_id=n)).loc[("open", "cnn", "stat_a")]
    k, m = 50, 800
    assert (v["k"], v["n"]) == (k, m)
    assert np.isclose(v["ci_low"], beta.ppf(0.025, k, m - k + 1))
    assert np.isclose(v["ci_high"], beta.ppf(0.975, k + 1, m - k))
    assert v["alpha_in_ci"] and not v["above_alpha"]


def test_script_on_the_committed_results(tmp_path):
    """The CLI on results/raw/digits_all.csv: its near-OOD winner is the one computed by hand."""
    raw = ROOT / "results" / "raw" / "digits_all.csv"
    out = tmp_path / "summary.md"
    proc = run_module(
        "-m",
        "ood_bench.cli",
        "summary",
        str(raw),
        "--out",
        str(out),
        cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT)},
    )
    # the summary, then where it was written (the last line)
    *printed, last = proc.stdout.strip().splitlines()
    assert last == f"this summary: {out}"
    assert out.read_text().strip() == "\n".join(printed).strip()
    df = read_results(raw)
    df = df[(df["status"] == "ok") & (df["corruption"] == "none")]
    assert f"highest mean AUROC {best(df, 'digits_open', 'near')} " in proc.stdout
    assert "('" not in proc.stdout


def test_failed_jobs_are_named_not_hidden():
    df = synthetic()
    failed = dict(benchmark="open", backbone="cnn", detector="openood_y", library="openood")
    failed.update(seed=0, status="failed", corruption="none", metric="job", value=np.nan)
    failed.update(ood_dataset="", ood_group="", error="ConfigError: dim too large\ntraceback")
    text = demo_summary(pd.concat([df, pd.DataFrame([failed])], ignore_index=True))
    assert "## Failed jobs (left out): 1" in text
    assert "- open / openood_y (seed 0): ConfigError: dim too large" in text
    assert "| open / openood_y" not in text


def with_auroc(df: pd.DataFrame, values: dict[tuple[str, int], float]) -> pd.DataFrame:
    """``df`` with every AUROC of (detector, seed) set to the given value (on every OOD set)."""
    df = df.copy()
    for (det, seed), v in values.items():
        df.loc[
            (df["metric"] == "auroc") & (df["detector"] == det) & (df["seed"] == seed), "value"
        ] = v
    return df


def far_line(df: pd.DataFrame) -> str:
    return line_of(closing_lines(df, summary_frame(df)), "Far OOD on plain ")


def test_a_small_one_seed_difference_is_tied_not_a_win():
    """The demo's case: one seed, 0.02 points between the lab's best and the baseline."""
    df = synthetic()
    df = with_auroc(
        df[df["seed"] == 0], {("stat_a", 0): 0.9002, ("stat_b", 0): 0.5, ("pood_x", 0): 0.9}
    )
    line = far_line(df)
    assert "highest mean AUROC stat_a 90.0 %" in line
    assert line.endswith("pood_x 90.0 %: tied (0.0 points apart, within the 0.5-point margin).")
    assert "ahead" not in line


def test_one_seed_calls_no_winner_and_two_seeds_call_one_beyond_their_spread():
    one = with_auroc(
        synthetic()[lambda d: d["seed"] == 0], {("stat_a", 0): 0.95, ("pood_x", 0): 0.9}
    )
    assert "pood_x 90.0 %: no winner called (5.0 points apart on one seed" in far_line(one)
    two = {("stat_a", 0): 0.95, ("stat_a", 1): 0.96, ("pood_x", 0): 0.90, ("pood_x", 1): 0.91}
    line = far_line(with_auroc(synthetic(), two))
    assert line.endswith("90.5 %: stat_a ahead by 5.0 points (more than the seed spread ±0.7).")
    noisy = {**two, ("pood_x", 0): 0.80, ("pood_x", 1): 1.0}  # mean 90, spread ±14
    assert "pood_x 90.0 %: tied (5.5 points apart, within the seed spread ±14.1)" in far_line(
        with_auroc(synthetic(), noisy)
    )
    lines = closing_lines(one, summary_frame(one))
    assert line_of(lines, "Rule: ").startswith("Rule: one detector is called ahead of another only")


def test_verdict_needs_the_margin_the_spread_and_two_seeds():
    assert verdict(0.004, 0.0, 3) == (False, "tied (0.4 points apart, within the 0.5-point margin)")
    assert verdict(0.02, np.nan, 1)[0] is False
    assert verdict(0.02, 0.03, 3)[0] is False
    assert verdict(0.02, 0.01, 3) == (True, "ahead by 2.0 points (more than the seed spread ±1.0)")


def test_every_metric_the_demo_prints_is_defined_in_one_line():
    text = demo_summary(synthetic())
    defs = text.split("## Metrics (docs/metrics.md)\n\n", 1)[1].splitlines()
    assert [d.split(":", 1)[0] for d in defs] == [f"- {m}" for m in DEFINED]
    assert "- fpr95_id: fraction of OOD accepted when 95% of ID is accepted" in text
    assert "- tpr_at_0.05: fraction of the OOD set rejected at level 0.05." in text


def test_validity_judges_conformal_fprs_by_their_beta_binomial_law():
    """One job, n = 450 ID test, n_calib = 269: 7.3 % rejected at alpha 5 % is above the exact
    binomial interval's reach (significant for a binomial) but inside the Beta-binomial range
    of valid marginal conformal p-values sharing one calibration set; 12 % is above both."""
    import pandas as pd

    from ood_bench.summary import validity

    def rows(fpr: float, run: str) -> pd.DataFrame:
        base = {
            "benchmark": "digits",
            "backbone": "cnn",
            "detector": run,
            "status": "ok",
            "ood_dataset": "",
            "run_id": run,
            "n_id": 450,
            "library": "x",
            "corruption": "none",
        }
        return pd.DataFrame(
            [
                {**base, "metric": "fpr_at_0.05", "value": fpr},
                {**base, "metric": "p_min", "value": 1 / 270},
                {**base, "metric": "calib_class_conditional", "value": 0.0},
            ]
        )

    v = validity(pd.concat([rows(33 / 450, "a"), rows(54 / 450, "b")], ignore_index=True))
    assert not v.loc[("digits", "cnn", "a"), "above_alpha"]
    assert v.loc[("digits", "cnn", "a"), "ci_low"] > 0.05  # a binomial check would flag it
    assert v.loc[("digits", "cnn", "b"), "above_alpha"]

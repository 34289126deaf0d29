"""The report layer: committed tables re-render from committed raw results; LaTeX is escaped;
figures render; every experiment overlay composes and runs one tiny job."""

from __future__ import annotations

import importlib.util
import re
from fnmatch import fnmatch

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from ood_bench.report import LATEX_SPECIALS, latex_escape, markdown_report, to_latex
from ood_bench.results import read_results
from tests.conftest import CONF, DATA, FAST_TRAIN, ROOT, run_module

RAW = ROOT / "results" / "raw"
TABLES = ROOT / "results" / "tables"


def test_committed_tables_match_the_committed_raw_results(tmp_path):
    if not (TABLES / "results.md").is_file():
        pytest.skip("no committed tables yet")
    run_module(
        "-m",
        "ood_bench.cli",
        "tables",
        str(RAW),
        "--out",
        str(tmp_path),
        "--quiet",
        cwd=tmp_path,
    )
    for f in sorted(TABLES.glob("*")):
        assert (tmp_path / f.name).read_text() == f.read_text(), (
            f"results/tables/{f.name} is stale: rerun ood-bench tables results/raw "
            "--out results/tables"
        )


def test_latex_escapes_names_and_bolds_best():
    t = pd.DataFrame(
        {"mean_all": ["**99.1 ± 0.2**", "80.0 ± 1.0"]},
        index=pd.Index(["stat_masf", "pood_knn"], name="detector"),
    )
    tex = to_latex(t, "AUROC ± std", "tab:x")
    assert r"stat\_masf" in tex and r"mean\_all" in tex and r"\textbf{99.1 $\pm$ 0.2}" in tex
    assert r"\toprule" in tex and r"AUROC $\pm$ std" in tex


HOSTILE_TEX = [
    "^^5cinput{/etc/hostname}",  # ^^5c is TeX's code for a backslash
    r"\input{/etc/hostname}",
    "${oc.env:HOME}",
    "a~b_c 100% & #1",
    "}{\\",
]


@pytest.mark.parametrize("text", HOSTILE_TEX)
def test_latex_escape_leaves_no_special_character(text):
    tex = latex_escape(text)
    tokens = sorted(LATEX_SPECIALS.values(), key=len, reverse=True)
    rest = tex
    for tok in tokens:
        rest = rest.replace(tok, "")
    assert not set(rest) & set(LATEX_SPECIALS), (text, tex)  # no special outside an escape
    assert "^^" not in tex and r"\input" not in tex
    # and it reads back as the text: every escape stands for its own character
    back = {tok: char for char, tok in LATEX_SPECIALS.items()}
    decode = re.compile("|".join(map(re.escape, tokens)))
    assert decode.sub(lambda m: back[m.group()], tex) == text


def test_a_hostile_detector_name_is_text_in_the_latex_table():
    name = "^^5cinput{/etc/hostname}"
    t = pd.DataFrame({"mean_all": ["99.1 ± 0.2"]}, index=pd.Index([name], name="detector"))
    tex = to_latex(t, "AUROC", "tab:x")
    assert r"\textasciicircum{}\textasciicircum{}5cinput\{/etc/hostname\}" in tex
    assert "^^" not in tex and "input{" not in tex


def test_report_keeps_corrupted_jobs_out_of_clean_tables():
    df = read_results(RAW / "robustness_digits.csv")
    text = markdown_report(df)
    assert "## AUROC" not in text  # no clean jobs in this file: no performance table
    assert "## Robustness: mean AUROC" in text and "Kendall" in text


def test_figures_render(tmp_path):
    run_module(
        "-m",
        "ood_bench.cli",
        "figures",
        str(RAW / "robustness_digits.csv"),
        "--out",
        str(tmp_path),
        cwd=tmp_path,
    )
    for name in ("digits_robustness_auroc", "digits_robustness_fpr"):
        assert (tmp_path / f"{name}.png").stat().st_size > 10_000
        assert (tmp_path / f"{name}.pdf").is_file()


def tiny_overrides(experiment: str) -> list[str]:
    """One job of an experiment: the first value of each swept parameter."""
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose("config", overrides=[f"experiment={experiment}"], return_hydra_config=True)
    out = []
    for key, values in cfg.hydra.sweeper.params.items():
        text = str(values)
        if text.startswith("glob("):  # glob(include[,exclude=pattern]): first matching option
            inner = text[5 : text.index(")")].split(",")
            exclude = [x.removeprefix("exclude=") for x in inner[1:] if x.startswith("exclude=")]
            names = sorted(p.stem for p in (CONF / key).glob("*.yaml"))
            first = next(
                n for n in names if fnmatch(n, inner[0]) and not any(fnmatch(n, e) for e in exclude)
            )
        else:
            first = text.split(",")[0]
        out.append(f"{key}={first}")
    return out


EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_runs_in_tiny_mode(experiment, tmp_path):
    over = tiny_overrides(experiment)
    assert over, f"{experiment} sweeps nothing"
    if any(o.startswith("detector=openood_") for o in over) and not importlib.util.find_spec(
        "openood"
    ):
        pytest.skip(f"{experiment} runs OpenOOD postprocessors: OpenOOD is not installed")
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose("config", overrides=[f"experiment={experiment}"])
    if cfg.benchmark._target_.endswith("build_image_benchmark"):
        if not (DATA / "MNIST").is_dir():
            pytest.skip(f"{experiment} needs on-disk data: set OOD_BENCH_DATA")
        # tiny: train on 10 % of the ID training set, cap every evaluated set
        over += [
            f"data_root={DATA}",
            "benchmark.calib_fraction=0.9",
            "benchmark.fit_max=2000",
            "benchmark.test_max=1000",
            "benchmark.ood_max=500",
        ]
        if cfg.backbone.get("checkpoint"):  # a trained-once file (cifar_cnn): train a tiny one
            over += ["backbone.checkpoint=null", "backbone.train.epochs=1"]
        if "cifar10" in str(cfg.benchmark.id_set) and not (DATA / "cifar10").is_dir():
            pytest.skip(f"{experiment} needs cifar10/*.npz under OOD_BENCH_DATA")
    else:
        over.append(FAST_TRAIN)
    # one OOD set keeps it tiny
    first_set = cfg.benchmark.ood[0].name if "ood" in cfg.benchmark else "uniform_noise"
    run_module(
        "-m",
        "ood_bench.run",
        f"experiment={experiment}",
        *over,
        f"ood_sets=[{first_set}]",
        f"cache_dir={tmp_path / 'c'}",
        f"hydra.run.dir={tmp_path / 'r'}",
        cwd=tmp_path,
    )
    df = read_results(tmp_path / "r" / "metrics.csv")
    assert (df["status"] == "ok").all()


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_sweep_parses(experiment):
    """Hydra's sweep syntax (lists, ranges, glob) of every overlay parses: a mix of glob() and a
    list in one value, say, fails only when the sweep starts."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose("config", overrides=[f"experiment={experiment}"], return_hydra_config=True)
    parser = OverridesParser.create()
    for key, values in cfg.hydra.sweeper.params.items():
        (override,) = parser.parse_overrides([f"{key}={values}"])
        assert override.is_sweep_override(), f"{experiment}: {key}={values} sweeps nothing"
        text = str(values)
        if (CONF / key).is_dir():  # a config group: a glob(...) alone, or existing options
            if text.startswith("glob("):
                assert text.endswith(")") and ")," not in text, (
                    f"{experiment}: {key}: glob() cannot be mixed with a list"
                )
            else:
                missing = [o for o in text.split(",") if not (CONF / key / f"{o}.yaml").is_file()]
                assert not missing, f"{experiment}: {key} has no options {missing}"

"""The paper as data (conf/paper.yaml, conf/pairings.yaml): the stages load and are checked, the
sweep folders they declare are the ones their runs write, `ood-bench paper` skips a stage
whose data is missing and stops at a failure, and every committed result names its stage."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml

from ood_bench import paper
from ood_bench.cli import paper as paper_cli
from ood_bench.errors import ConfigError
from ood_bench.paper import Stage, pairing, pairings, producers, select, stages
from ood_bench.site.sources import Source
from tests.conftest import ROOT

CONF = ROOT / "conf"


def _override(stage: Stage, key: str) -> str | None:
    values = [o.split("=", 1)[1] for o in (*stage.run, *stage.novelty) if o.startswith(key + "=")]
    return values[-1] if values else None


def test_every_sweep_folder_is_the_one_its_run_writes():
    """sweep: is what hydra.sweep.dir= or the experiment's own hydra.sweep.dir says."""
    for s in stages():
        if not (s.run or s.novelty):
            continue
        declared = _override(s, "hydra.sweep.dir")
        if declared is None:
            exp = yaml.safe_load(
                (CONF / "experiment" / f"{_override(s, 'experiment')}.yaml").read_text()
            )
            declared = exp["hydra"]["sweep"]["dir"]
        assert s.sweep == declared, s.name


def test_every_collected_sweep_is_written_by_an_earlier_stage():
    seen: set[str] = set()
    for s in stages():
        if s.run or s.novelty:
            seen.add(str(s.sweep))
        if s.collect:
            assert s.sweep in seen, f"{s.name} collects {s.sweep} before any stage writes it"


def test_pairings_name_shipped_options_and_match_the_experiments():
    for name, p in pairings().items():
        assert (CONF / "benchmark" / f"{name}.yaml").is_file(), name
        assert (CONF / "backbone" / f"{p.backbone}.yaml").is_file(), p.backbone
        if p.checkpoint:
            assert Path(p.checkpoint).name == f"{p.backbone}_{name}_s0.pt"  # what `train` writes
    exp = yaml.safe_load((CONF / "experiment" / "cifar10_offline.yaml").read_text())
    assert exp["backbone"]["checkpoint"] == pairing("cifar10_offline").checkpoint
    with pytest.raises(ConfigError, match="no backbone pairing for benchmark 'nope'"):
        pairing("nope")


@pytest.mark.parametrize(
    ("stage", "error"),
    [
        ("{name: a, run: [seed=0,1,2]}", r"not Hydra overrides .*quote it"),
        ("{name: a, rnu: [x=1]}", r"unknown key\(s\) \['rnu'\]"),
        ("{name: a, run: [x=1], command: [ls]}", "one of run/novelty/command/train"),
        ("{name: a, needs: [imagenet], run: [x=1]}", r"unknown needs \['imagenet'\]"),
        ("{name: a, collect: out.csv}", "collect without sweep"),
        ("{name: a}", "runs nothing"),
    ],
)
def test_a_wrong_stage_is_an_error_naming_the_fix(tmp_path, stage, error):
    f = tmp_path / "paper.yaml"
    f.write_text(f"stages:\n  - {stage}\n")
    with pytest.raises(ConfigError, match=error):
        stages(f)


def test_dry_run_prints_every_stage_and_marks_missing_data(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("OOD_BENCH_DATA", str(tmp_path))  # no MNIST, no CIFAR-10 here
    assert paper_cli.main(["--dry-run"]) == 0
    out = capsys.readouterr().out
    for s in select(stages()):
        assert f"# {s.name} [" in out
    assert "python -m ood_bench.run -m experiment=digits_all allow_failures=true\n" in out
    assert "# mnist_fashion [paper]  (skipped here: OOD_BENCH_DATA lacks MNIST/FashionMNIST)" in out
    assert "# scoring_cost" not in out  # the extra group runs only with --only


def test_only_selects_by_name_and_suggests_the_closest(capsys):
    assert [s.name for s in select(stages(), ["tables", "scoring_cost"])] == [
        "tables",
        "scoring_cost",
    ]
    assert paper_cli.main(["--only", "tabels", "--dry-run"]) == 2
    assert "closest: {'tabels': ['tables'" in capsys.readouterr().err


def test_run_skips_missing_data_and_stops_at_a_failure(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("OOD_BENCH_DATA", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    ran = tmp_path / "ran"
    chosen = [
        Stage("needs_mnist", needs=("mnist",), command=("python", "-c", "raise SystemExit(9)")),
        Stage("writes", command=("python", "-c", f"open({str(ran)!r}, 'w')")),
        Stage("fails", command=("python", "-c", "raise SystemExit(3)")),
        Stage("never", command=("python", "-c", "raise SystemExit(4)")),
    ]
    with caplog.at_level(logging.INFO, logger="ood_bench.paper"):
        assert paper_cli._run(chosen, dry_run=False) == 3
    assert "skip needs_mnist: OOD_BENCH_DATA lacks MNIST/FashionMNIST" in caplog.text
    assert ran.is_file()
    assert (
        "stage fails failed (exit 3)" in caplog.text
        and "ood-bench paper --from fails" in caplog.text
    )
    assert "stage never" not in caplog.text


def test_every_committed_result_names_the_stage_that_writes_it():
    results = ROOT / "results"
    unknown = [
        str(f.relative_to(results))
        for f in sorted(results.rglob("*"))
        if f.is_file()
        and not f.relative_to(results).parts[0] == "site"
        and Source(str(f.relative_to(results).as_posix())).command == "(no known command)"
    ]
    assert not unknown, f"no stage of conf/paper.yaml writes {unknown}"
    cmd = Source("raw/recommended.csv").command
    assert cmd.startswith(
        "ood-bench paper --only recommended_digits recommended_mnist recommended:"
    )
    assert "ood-bench collect outputs/recommended --out results/raw/recommended.csv" in cmd
    assert all(not p.startswith("/") for p, _ in producers())


def test_globs_expand_and_commands_map_to_this_interpreter(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "b.csv").write_text("")
    (tmp_path / "a.csv").write_text("")
    argv = paper.expand(("ood-bench", "novelty-report", "*.csv", "x=*"), "PY")
    assert argv == ["PY", "-m", "ood_bench.cli", "novelty-report", "a.csv", "b.csv", "x=*"]

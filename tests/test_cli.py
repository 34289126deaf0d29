"""The ``ood-bench`` command: one entry point (pyproject.toml), a help page per command with an
example, a mistyped command answered with the closest names before any heavy import, and
scripts/ importing the package normally."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from ood_bench import cli
from tests.conftest import ROOT


def test_console_entry_point_is_declared():
    text = (ROOT / "pyproject.toml").read_text()
    scripts = text.split("[project.scripts]", 1)[1].split("\n[", 1)[0]
    assert 'ood-bench = "ood_bench.cli:main"' in scripts


def test_top_level_help_lists_every_command(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name, command in cli.COMMANDS.items():
        assert f"  {name} " in out and command.summary in out
    assert "examples:" in out


def test_no_command_prints_the_usage_and_fails(capsys):
    assert cli.main([]) == 2
    assert "usage: ood-bench COMMAND" in capsys.readouterr().out


def test_mistyped_command_suggests_the_closest_without_importing_torch():
    code = (
        "import sys; from ood_bench.cli import main; rc = main(['tabels']); "
        "assert 'torch' not in sys.modules, 'imported torch'; raise SystemExit(rc)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2, proc.stderr
    assert "unknown command 'tabels'. Did you mean: tables?" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("name", [n for n, c in cli.COMMANDS.items() if not c.hydra])
def test_each_command_help_has_a_description_and_an_example(name, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main([name, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: ood-bench {name}")
    assert re.search(rf"^ +ood-bench {name}\b", out, re.M), "an example line"


@pytest.mark.parametrize("name", [n for n, c in cli.COMMANDS.items() if c.hydra])
def test_hydra_commands_help_names_the_entry_and_an_example(name, capsys):
    assert cli.main([name, "--help"]) == 0
    out = capsys.readouterr().out
    assert f"python -m {cli.COMMANDS[name].module}" in out
    assert cli.COMMANDS[name].example in out and "--hydra-help" in out


@pytest.mark.parametrize(("name", "override"), [("run", "detector=pood_msp"), ("train", "seed=3")])
def test_hydra_commands_run_the_entry_with_the_arguments_unchanged(name, override):
    """`ood-bench run ARGS` is `python -m ood_bench.run ARGS` (the config is found, the
    overrides apply)."""
    proc = subprocess.run(
        [sys.executable, "-m", "ood_bench.cli", name, override, "--cfg", "job"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    key, value = override.split("=")
    assert re.search(rf"^{key.split('.')[0]}:", proc.stdout, re.M), proc.stdout[:500]
    assert value in proc.stdout


def test_scripts_import_the_package_normally():
    """scripts/ holds studies and one-offs only: no sys.path edits, no loading by file path."""
    files = sorted((ROOT / "scripts").rglob("*.py"))
    hacks = [
        str(f.relative_to(ROOT))
        for f in files
        if "sys.path" in f.read_text() or "spec_from_file_location" in f.read_text()
    ]
    assert not hacks, hacks
    assert len([f for f in (ROOT / "scripts").iterdir() if f.is_file()]) <= 10

"""``ood-bench``: one command-line tool over the harness (console entry point, pyproject.toml).

Each subcommand is a module of this package with a ``main``: the argparse commands take their
argument list; ``run``, ``novelty`` and ``train`` hand theirs unchanged to the Hydra entries
(``python -m ood_bench.run ...`` keeps working). Modules are imported only for the command
that runs, so ``ood-bench --help`` and a mistyped command answer before torch is imported.
"""

from __future__ import annotations

import difflib
import importlib
import runpy
import sys
from dataclasses import dataclass
from pathlib import Path

CONF = Path(__file__).resolve().parents[1] / "conf"  # the Hydra entries' config folder


@dataclass(frozen=True)
class Command:
    """One subcommand: the module holding its ``main``, a one-line summary, an example."""

    module: str
    summary: str
    example: str
    hydra: bool = False  # main() is a Hydra entry: it reads sys.argv itself


COMMANDS: dict[str, Command] = {
    "run": Command(
        "ood_bench.run",
        "run detectors on a benchmark (Hydra overrides; -m for a sweep)",
        "ood-bench run -m benchmark=digits detector=stat_maha_energy,pood_msp seed=0,1,2",
        hydra=True,
    ),
    "novelty": Command(
        "ood_bench.run_novelty",
        "novelty detection: are the rejected samples a new class? (Hydra overrides)",
        "ood-bench novelty benchmark=digits_open detector=stat_maha_energy",
        hydra=True,
    ),
    "collect": Command(
        "ood_bench.cli.collect",
        "merge a sweep's metrics.csv files into one tidy CSV",
        "ood-bench collect outputs/my_sweep --out scratch/my_sweep.csv",
    ),
    "tables": Command(
        "ood_bench.cli.tables",
        "the report tables (Markdown + LaTeX) from collected CSVs",
        "ood-bench tables scratch/my_sweep.csv --out scratch/tables",
    ),
    "figures": Command(
        "ood_bench.cli.figures",
        "the paper figures (PNG + PDF) from collected CSVs",
        "ood-bench figures results/raw --out scratch/figures",
    ),
    "report": Command(
        "ood_bench.cli.report",
        "the results site (static HTML) from a results folder",
        "ood-bench report results --out results/site",
    ),
    "summary": Command(
        "ood_bench.cli.summary",
        "the demo's compact comparison from a collected CSV",
        "ood-bench summary outputs/demo/results.csv",
    ),
    "train": Command(
        "ood_bench.cli.train",
        "train a backbone into a checkpoint and its card (Hydra overrides)",
        "ood-bench train benchmark=mnist_fashion backbone=lenet seed=0",
        hydra=True,
    ),
    "novelty-report": Command(
        "ood_bench.cli.novelty_report",
        "tables and figures of novelty-detection results",
        "ood-bench novelty-report outputs/novelty_digits_open --out scratch/novelty",
    ),
    "certification": Command(
        "ood_bench.cli.certification",
        "the novelty certification's level and power, by simulation",
        "ood-bench certification --out scratch/certification.csv",
    ),
    "verify": Command(
        "ood_bench.verify",
        "recompute every metric of a results CSV or sweep from its stored scores (exit 1 on a "
        "difference)",
        "ood-bench verify results/raw/digits_all.csv",
    ),
    "validity": Command(
        "ood_bench.validity",
        "each detector's realised FPR against its exact band, BH's FDR over mixed batches",
        "ood-bench validity results --out scratch/validity",
    ),
    "simulations": Command(
        "ood_bench.cli.simulations",
        "the simulations that pin the intervals and paired tests (docs/statistics.md)",
        "ood-bench simulations --out scratch/simulations.csv",
    ),
    "paper": Command(
        "ood_bench.cli.paper",
        "every stage of the paper (conf/paper.yaml), in order; --dry-run lists them",
        "ood-bench paper --dry-run",
    ),
    "docs": Command(
        "ood_bench.cli.docs",
        "rewrite (or --check) the documentation's generated blocks from results/",
        "ood-bench docs --check",
    ),
}

HYDRA_HELP = """\
usage: ood-bench {name} [-m] [KEY=VALUE ...]

{summary}.
The arguments go unchanged to the Hydra entry `python -m {module}`: config groups
(benchmark=..., detector=..., backbone=...) and keys (seed=0, data_root=DIR); -m sweeps
over comma-separated values.

example:
  {example}

Hydra's own options: ood-bench {name} --hydra-help; the composed config: ood-bench {name} --cfg job
"""


def usage() -> str:
    """The top-level help: every command with its summary, then examples."""
    width = max(map(len, COMMANDS))
    lines = [
        "usage: ood-bench COMMAND [ARGS ...]",
        "",
        "ood-bench: post-hoc out-of-distribution detection benchmarks (docs/README.md).",
        "",
        "commands:",
        *(f"  {name:<{width}}  {c.summary}" for name, c in COMMANDS.items()),
        "",
        "examples:",
        *(f"  {COMMANDS[n].example}" for n in ("run", "collect", "tables", "paper")),
        "",
        "ood-bench COMMAND --help: that command's options and examples.",
    ]
    return "\n".join(lines)


def config_dirs(args: list[str]) -> list[Path]:
    """The config folders a Hydra entry searches: ``--config-dir`` / ``-cd`` ones, then conf/."""
    dirs = []
    for i, a in enumerate(args):
        if a in ("--config-dir", "-cd") and i + 1 < len(args):
            dirs.append(Path(args[i + 1]))
        elif a.startswith("--config-dir="):
            dirs.append(Path(a.split("=", 1)[1]))
    return [*dirs, CONF]


def unknown_option(args: list[str]) -> str | None:
    """The first ``group=value`` override naming no file of ``<config dir>/<group>/``, as the
    message to print (with the closest options), or None. Keys that are not config groups,
    Hydra's own groups, lists, interpolations and sweep functions are left to Hydra."""
    dirs = config_dirs(args)
    for a in args:
        if "=" not in a or a.startswith("-"):
            continue
        key, value = a.split("=", 1)
        group = key.lstrip("+~").split("@", 1)[0]
        if not group or group.startswith("hydra") or any(c in value for c in "[]{}()$'\""):
            continue
        folders = [d / group for d in dirs if (d / group).is_dir()]
        if not folders:
            continue  # a key (seed=0, data_root=...), not a config group
        options = sorted({f.stem for d in folders for f in d.glob("*.yaml")})
        for v in value.split(","):
            v = v.strip()
            if v in ("", "null") or any((d / f"{v}.yaml").is_file() for d in folders):
                continue
            close = difflib.get_close_matches(v, options, n=3, cutoff=0.6)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            where = " or ".join(f"conf/{group}/" if d.parent == CONF else str(d) for d in folders)
            return (
                f"unknown {group} option {v!r}.{hint} Fix: one of the {len(options)} files "
                f"<name>.yaml of {where} ({group}=<name>; a file of your own: --config-dir DIR "
                f"with DIR/{group}/<name>.yaml)."
            )
    return None


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``ood-bench COMMAND ARGS``; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if argv else 2
    name, args = argv[0], argv[1:]
    command = COMMANDS.get(name)
    if command is None:
        close = difflib.get_close_matches(name, COMMANDS, n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        print(
            f"ood-bench: unknown command {name!r}.{hint} Fix: one of {', '.join(COMMANDS)} "
            "(ood-bench --help).",
            file=sys.stderr,
        )
        return 2
    if command.hydra and any(a in ("-h", "--help") for a in args):
        print(HYDRA_HELP.format(name=name, **vars(command)))
        return 0
    if command.hydra and (problem := unknown_option(args)):
        print(f"error: {problem}", file=sys.stderr)  # before Hydra's list of every option
        return 2
    sys.argv = [f"ood-bench {name}", *args]  # argparse's prog; Hydra reads its overrides here
    if command.hydra:
        # as `python -m MODULE`: Hydra finds the config folder beside a __main__ module's file
        runpy.run_module(command.module, run_name="__main__", alter_sys=True)
        return 0
    return int(importlib.import_module(command.module).main(args) or 0)

"""Run the paper's stages (conf/paper.yaml) in order: every committed table, figure and page.

    ood-bench paper --dry-run             # print every stage's commands, run nothing
    ood-bench paper                       # the paper and novelty groups (make paper)
    ood-bench paper --group novelty       # only the novelty stages (make novelty)
    ood-bench paper --only tables figures # some stages, by name (any group)
    ood-bench paper --list                # the stages: name, group, needs

Run it from the checkout (the paths are relative to it). A stage whose data is missing
(needs: mnist, cifar10, openood) is skipped with a line saying so; the first command that fails
stops the run (its exit code), and --from NAME resumes there. Refuses to write results/ from
uncommitted code unless ALLOW_DIRTY=1 (then the rows carry git_sha +dirty).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

from ood_bench.errors import ConfigError
from ood_bench.paper import Stage, Step, expand, select, stages

log = logging.getLogger("ood_bench.paper")


def _execute(step: Step, env: dict[str, str]) -> int:
    """Run one step here; returns its exit code (a train step is skipped when its checkpoint
    exists, a copy is done in Python)."""
    if step.when.startswith("no ") and Path(step.when.split()[1]).exists():
        log.info("  %s exists: not retrained", step.when.split()[1])
        return 0
    if step.argv[0] == "cp":
        Path(step.argv[2]).mkdir(parents=True, exist_ok=True)
        shutil.copy2(step.argv[1], step.argv[2])
        return 0
    return subprocess.run(expand(step.argv, sys.executable), env=env).returncode


def _run(chosen: list[Stage], dry_run: bool) -> int:
    """Run (or print) the stages; returns the exit code."""
    root = str(Path(__file__).resolve().parents[2])  # this checkout's ood_bench in the children
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
        "OOD_BENCH_PAPER": "1",  # its stages may write the committed results/ (environment.py)
    }
    for stage in chosen:
        missing = stage.missing()
        if dry_run:
            note = f"  (skipped here: {'; '.join(missing)})" if missing else ""
            print(f"# {stage.name} [{stage.group}]{note}")
            for step in stage.steps():
                print(step)
            continue
        if missing:
            log.info("skip %s: %s", stage.name, "; ".join(missing))
            continue
        log.info("stage %s", stage.name)
        for step in stage.steps():
            log.info("  %s", step)
            code = _execute(step, env)
            if code:
                log.error(
                    "stage %s failed (exit %d) at: %s. Fix the cause above, then resume with "
                    "ood-bench paper --from %s",
                    stage.name,
                    code,
                    step,
                    stage.name,
                )
                return code
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run, list or print the selected stages; returns the exit code."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    p.add_argument("--only", nargs="+", metavar="NAME", help="run only these stages")
    p.add_argument("--group", choices=["paper", "novelty", "extra"], help="run one group")
    p.add_argument("--from", dest="start", metavar="NAME", help="start at this stage")
    p.add_argument("--list", action="store_true", help="list the stages and exit")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        every = stages()
        chosen = select(every, args.only, args.group)
        if args.start:
            names = [s.name for s in chosen]
            if args.start not in names:
                raise ConfigError(f"--from {args.start!r}: not among the stages {names}.")
            chosen = chosen[names.index(args.start) :]
    except ConfigError as e:
        print(f"ood-bench paper: {e}", file=sys.stderr)
        return 2
    if args.list:
        for s in every:
            print(f"{s.name:<26} {s.group:<8} needs: {', '.join(s.needs) or '-'}")
        return 0
    if not args.dry_run:
        from ood_bench.environment import require_clean_tree

        os.environ["OOD_BENCH_PAPER"] = "1"  # the paper is the one writer of results/
        require_clean_tree(Path("results"), "ood-bench paper")
    return _run(chosen, args.dry_run)


if __name__ == "__main__":
    raise SystemExit(main())

"""The paper as data: the stages of ``conf/paper.yaml`` and the pairings of ``conf/pairings.yaml``.

One declared list says what writes every committed result (the Hydra overrides of a sweep or the
command, its inputs, outputs, the data it needs, whether failures are expected). ``ood-bench
paper`` runs it (``make paper`` / ``make novelty``), the results site derives its source notes
from it (:func:`producers`) and the documentation its stage table (:func:`stages_markdown`).
"""

from __future__ import annotations

import glob
import importlib.util
import logging
import os
import shlex
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from ood_bench.errors import ConfigError

log = logging.getLogger(__name__)

CONF_DIR = Path(__file__).resolve().parent / "conf"
GROUPS = ("paper", "novelty", "extra")
DEFAULT_GROUPS = ("paper", "novelty")  # `ood-bench paper` without --group / --only


@dataclass(frozen=True)
class Pairing:
    """The backbone (and trained checkpoint, if any) that goes with a benchmark."""

    benchmark: str
    backbone: str
    checkpoint: str | None = None

    @property
    def overrides(self) -> list[str]:
        """Hydra overrides selecting this benchmark, backbone and checkpoint."""
        out = [f"benchmark={self.benchmark}", f"backbone={self.backbone}"]
        return out + ([f"backbone.checkpoint={self.checkpoint}"] if self.checkpoint else [])


def pairings(path: Path | None = None) -> dict[str, Pairing]:
    """Every benchmark's pairing, from ``conf/pairings.yaml``."""
    raw = yaml.safe_load((path or CONF_DIR / "pairings.yaml").read_text())
    return {name: Pairing(name, **spec) for name, spec in raw.items()}


def pairing(benchmark: str) -> Pairing:
    """The pairing of ``benchmark``; an error naming the known ones when it has none."""
    known = pairings()
    if benchmark not in known:
        raise ConfigError(
            f"no backbone pairing for benchmark {benchmark!r}. Fix: add it to "
            f"conf/pairings.yaml or use one of {sorted(known)}."
        )
    return known[benchmark]


# what each `needs:` entry checks, and the line printed when it is missing
def _has_mnist() -> bool:
    root = Path(os.environ.get("OOD_BENCH_DATA", "/nonexistent"))
    return (root / "MNIST").is_dir() and (root / "FashionMNIST").is_dir()


def _has_cifar10() -> bool:
    return (Path(os.environ.get("OOD_BENCH_DATA", "/nonexistent")) / "cifar10/train.npz").is_file()


def _has_openood() -> bool:
    return importlib.util.find_spec("openood") is not None


NEEDS = {
    "mnist": (_has_mnist, "OOD_BENCH_DATA lacks MNIST/FashionMNIST"),
    "cifar10": (_has_cifar10, "OOD_BENCH_DATA lacks cifar10/train.npz"),
    "openood": (_has_openood, "OpenOOD is not installed (make openood, docs/openood.md)"),
}


@dataclass(frozen=True)
class Step:
    """One command of a stage, as a user would type it (``python``, ``ood-bench`` or ``cp``)."""

    argv: tuple[str, ...]
    when: str = ""  # a condition the runner checks first (printed by --dry-run)

    def __str__(self) -> str:
        return shlex.join(self.argv) + (f"  # {self.when}" if self.when else "")


@dataclass(frozen=True)
class Stage:
    """One stage of the paper (conf/paper.yaml documents every field)."""

    name: str
    group: str = "paper"
    needs: tuple[str, ...] = ()
    pairing: str | None = None
    run: tuple[str, ...] = ()
    novelty: tuple[str, ...] = ()
    command: tuple[str, ...] = ()
    train: str | None = None
    sweep: str | None = None
    collect: str | None = None
    allow_failures: bool = False
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    novelty_common: tuple[str, ...] = field(default=(), repr=False)

    def steps(self) -> list[Step]:
        """The commands this stage runs, in order."""
        pre = pairing(self.pairing).overrides if self.pairing else []
        failures = f"allow_failures={str(self.allow_failures).lower()}"
        out: list[Step] = []
        if self.run:
            out.append(Step(("python", "-m", "ood_bench.run", "-m", *pre, *self.run, failures)))
        if self.novelty:
            argv = ("python", "-m", "ood_bench.run_novelty", "-m", *self.novelty_common)
            out.append(Step((*argv, *pre, *self.novelty, failures)))
        if self.command:
            out.append(Step(self.command))
        if self.train:
            p = pairing(self.train)
            ck = p.checkpoint or f"checkpoints/{p.backbone}_{p.benchmark}_s0.pt"
            train = ("ood-bench", "train", f"benchmark={p.benchmark}", f"backbone={p.backbone}")
            out.append(Step((*train, "seed=0", "out_dir=checkpoints"), when=f"no {ck} yet"))
            out.append(Step(("cp", str(Path(ck).with_suffix(".json")), "results/backbones/")))
        if self.collect:
            out.append(Step(("ood-bench", "collect", str(self.sweep), "--out", self.collect)))
        return out

    @property
    def all_outputs(self) -> tuple[str, ...]:
        """What the stage writes: its declared outputs, its sweep folder, its collected CSV,
        the card of the checkpoint it trains."""
        extra = [self.sweep] if self.sweep and (self.run or self.novelty) else []
        if self.collect:  # the CSV and the per-sample scores collect gathers beside it
            scores = Path(self.collect).parent.parent / "scores" / Path(self.collect).stem
            extra += [self.collect, f"{scores.as_posix()}/*.npz"]
        if self.train:
            p = pairing(self.train)
            ck = p.checkpoint or f"checkpoints/{p.backbone}_{p.benchmark}_s0.pt"
            extra += [ck, f"results/backbones/{Path(ck).with_suffix('.json').name}"]
        return (*self.outputs, *extra)

    def missing(self) -> list[str]:
        """Why the stage cannot run here (one line per missing need), or nothing."""
        return [NEEDS[n][1] for n in self.needs if not NEEDS[n][0]()]


def _stage(spec: dict[str, Any], common: tuple[str, ...]) -> Stage:
    """A stage from its YAML mapping, every key and value checked."""
    names = {f.name for f in fields(Stage)} - {"novelty_common"}
    unknown = sorted(set(spec) - names)
    where = f"conf/paper.yaml stage {spec.get('name', '?')!r}"
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}. Fix: use only {sorted(names)}.")
    if "name" not in spec:
        raise ConfigError(f"{where}: no name. Fix: give every stage a name: NAME.")
    kinds = [k for k in ("run", "novelty", "command", "train") if spec.get(k)]
    if len(kinds) > 1:
        raise ConfigError(f"{where}: runs {kinds}. Fix: one of run/novelty/command/train each.")
    if not kinds and not spec.get("collect"):
        raise ConfigError(f"{where}: runs nothing. Fix: give it run/novelty/command/train/collect.")
    if spec.get("collect") and not spec.get("sweep"):
        raise ConfigError(f"{where}: collect without sweep. Fix: name the sweep folder (sweep:).")
    if spec.get("group", "paper") not in GROUPS:
        raise ConfigError(f"{where}: group {spec['group']!r}. Fix: one of {list(GROUPS)}.")
    bad = sorted(set(spec.get("needs", ())) - set(NEEDS))
    if bad:
        raise ConfigError(f"{where}: unknown needs {bad}. Fix: use only {sorted(NEEDS)}.")
    split = [str(x) for k in ("run", "novelty") for x in spec.get(k, ()) if "=" not in str(x)]
    if split:
        raise ConfigError(
            f"{where}: {split} are not Hydra overrides (KEY=VALUE): YAML's [a, b] splits an "
            'override at its commas. Fix: quote it ("seed=0,1,2").'
        )
    lists = ("needs", "run", "novelty", "command", "inputs", "outputs")
    values = {k: tuple(str(x) for x in v) if k in lists else v for k, v in spec.items()}
    return Stage(**values, novelty_common=common)


def stages(path: Path | None = None) -> list[Stage]:
    """The paper's stages, in order, from ``conf/paper.yaml``; names are unique."""
    raw = yaml.safe_load((path or CONF_DIR / "paper.yaml").read_text())
    common = tuple(str(x) for x in raw.get("novelty_common", ()))
    if any("=" not in x for x in common):
        raise ConfigError(f"conf/paper.yaml: novelty_common {list(common)}: quote each override.")
    out = [_stage(s, common) for s in raw["stages"]]
    seen: set[str] = set()
    for s in out:
        if s.name in seen:
            raise ConfigError(f"conf/paper.yaml: two stages named {s.name!r}. Fix: rename one.")
        seen.add(s.name)
    return out


def select(
    all_stages: list[Stage], only: list[str] | None = None, group: str | None = None
) -> list[Stage]:
    """The stages to run: ``only`` (by name, any group), else ``group``, else the paper and
    novelty groups; an unknown name is an error naming the closest ones."""
    if only:
        by_name = {s.name: s for s in all_stages}
        unknown = [n for n in only if n not in by_name]
        if unknown:
            import difflib

            close = {n: difflib.get_close_matches(n, by_name, n=3) for n in unknown}
            raise ConfigError(
                f"no stage named {unknown} (closest: {close}). Fix: one of {list(by_name)} "
                "(ood-bench paper --list)."
            )
        return [s for s in all_stages if s.name in only]
    groups = (group,) if group else DEFAULT_GROUPS
    return [s for s in all_stages if s.group in groups]


def producers(all_stages: list[Stage] | None = None) -> list[tuple[str, str]]:
    """(pattern of a path under results/, the commands that write it) for the site's source
    notes: every output of every stage, exact paths before patterns; a collected CSV's
    commands include every sweep that writes into its sweep folder."""
    all_stages = stages() if all_stages is None else all_stages
    out: list[tuple[str, str]] = []
    for s in all_stages:
        feeding = [
            t for t in all_stages if s.collect and t.sweep == s.sweep and (t.run or t.novelty)
        ]
        steps = [*(str(st) for t in feeding for st in t.steps()), *map(str, s.steps())]
        names = " ".join(dict.fromkeys([*(t.name for t in feeding), s.name]))
        text = f"ood-bench paper --only {names}: " + "; then ".join(dict.fromkeys(steps))
        for o in s.all_outputs:
            if o.startswith("results/"):
                out.append((o.removeprefix("results/"), text))
    return sorted(out, key=lambda pc: ("*" in pc[0], pc[0].count("/") * -1))


def stages_markdown(all_stages: list[Stage] | None = None) -> str:
    """The stage table of the documentation: name, group, needs, what it runs, what it writes."""
    all_stages = stages() if all_stages is None else all_stages
    rows = ["| stage | group | needs | runs | writes |", "|---|---|---|---|---|"]
    for s in all_stages:
        runs = "<br>".join(f"`{st}`".replace("|", "\\|") for st in s.steps())
        writes = ", ".join(f"`{o}`" for o in s.all_outputs) or "–"
        needs = ", ".join(s.needs) or "–"
        flag = " (failures expected)" if s.allow_failures else ""
        rows.append(f"| `{s.name}`{flag} | {s.group} | {needs} | {runs} | {writes} |")
    return "\n".join(rows)


def expand(argv: tuple[str, ...], python: str) -> list[str]:
    """The argument list to execute: ``python`` → this interpreter, ``ood-bench`` → ``python
    -m ood_bench.cli``, globs expanded (sorted; kept as written when nothing matches)."""
    head = {"python": [python], "ood-bench": [python, "-m", "ood_bench.cli"]}.get(argv[0])
    args = head + list(argv[1:]) if head else list(argv)
    out: list[str] = []
    for a in args:
        matches = sorted(glob.glob(a)) if "*" in a and "=" not in a else []
        out += matches or [a]
    return out

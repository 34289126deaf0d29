"""Figures quoted in the documentation, computed from the committed results.

README.md and docs/*.md quote results only inside generated blocks::

    <!-- generated:NAME -->
    ...text written by GENERATORS[NAME] from the files under results/...
    <!-- /generated:NAME -->

``ood-bench docs`` (:mod:`ood_bench.cli.docs`) rewrites every block; ``--check`` (run by a
test) fails and names each block whose text differs from what the committed results give, so a
figure edited by hand or left behind after the results were regenerated cannot go unnoticed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from pathlib import Path

from ood_bench import paper
from ood_bench.docsync.libraries import crosscheck, libraries, library_defaults, openood_status
from ood_bench.docsync.novelty import cifar_split_near, novelty, novelty_certification
from ood_bench.docsync.results import (
    ablation,
    backbones,
    calib_leak,
    headline,
    recommended,
    scoring_cost,
    stat_detectors,
    sweep_planning,
    training_cards,
)

ROOT = Path(__file__).resolve().parents[2]  # the checkout: README.md, docs/, results/
# a marker is a line of its own (a marker quoted inside a sentence is not one)
BLOCK = re.compile(
    r"^(?P<open><!-- generated:(?P<name>[\w-]+) -->\n)(?P<body>.*?)"
    r"^(?P<close><!-- /generated:(?P=name) -->)$",
    re.S | re.M,
)
OPEN = re.compile(r"^<!-- generated:([\w-]+) -->$", re.M)


def doc_files(root: Path = ROOT) -> list[Path]:
    """The documentation that may hold generated blocks: README.md and docs/*.md."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


GENERATORS: dict[str, Callable[[Path], str]] = {
    "headline": headline,
    "stat-detectors": stat_detectors,
    "backbones": backbones,
    "openood-status": openood_status,
    "crosscheck": crosscheck,
    "library-defaults": library_defaults,
    "novelty": novelty,
    "novelty-certification": novelty_certification,
    "cifar-split-near": cifar_split_near,
    "libraries": libraries,
    "sweep-planning": sweep_planning,
    "recommended": recommended,
    "training-cards": training_cards,
    "calib-leak": calib_leak,
    "ablation": ablation,
    "scoring-cost": scoring_cost,
    "paper-stages": lambda results: paper.stages_markdown(),  # conf/paper.yaml, not results/
}


# rewriting ----------------------------------------------------------------------------------


def render(text: str, results: Path, cache: dict[str, str] | None = None) -> tuple[str, list[str]]:
    """``text`` with every generated block rewritten; also the names of the blocks that
    changed. An unknown or unclosed block is an error."""
    cache = {} if cache is None else cache
    opened = OPEN.findall(text)
    closed = [m.group("name") for m in BLOCK.finditer(text)]
    if sorted(opened) != sorted(closed):
        unclosed = sorted(set(opened) - set(closed)) or opened
        raise ValueError(f"generated block(s) {unclosed} lack their <!-- /generated:NAME --> line")
    changed: list[str] = []

    def sub(m: re.Match) -> str:
        name = m.group("name")
        if name not in GENERATORS:
            raise ValueError(f"unknown generated block {name!r}; known: {sorted(GENERATORS)}")
        if name not in cache:
            cache[name] = GENERATORS[name](results).strip() + "\n"
        if cache[name] != m.group("body"):
            changed.append(name)
        return m.group("open") + cache[name] + m.group("close")

    return BLOCK.sub(sub, text), changed


def sync(files: Iterable[Path], results: Path, check: bool = False) -> list[tuple[Path, str]]:
    """Rewrite the generated blocks of ``files`` (or, with ``check``, only compare); returns
    the (file, block) pairs that were out of date."""
    stale: list[tuple[Path, str]] = []
    cache: dict[str, str] = {}
    for f in files:
        text = f.read_text()
        new, changed = render(text, results, cache)
        stale += [(f, name) for name in changed]
        if changed and not check:
            f.write_text(new)
    return stale

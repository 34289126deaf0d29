"""The documentation: every metric and column the code writes is documented, the quick start is
what CI runs, every relative link resolves, and every quoted figure comes from the committed
results (``ood-bench docs --check``)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ood_bench.docsync import doc_files, render, sync
from ood_bench.results import COLUMNS, METRICS, NOVELTY_METRICS
from tests.conftest import ROOT

README = (ROOT / "README.md").read_text()
METRICS_PAGE = (ROOT / "docs" / "metrics.md").read_text()
NOVELTY_PAGE = (ROOT / "docs" / "novelty.md").read_text()
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def test_every_metric_is_documented():
    own = [m for m in METRICS if m != "job" and m not in NOVELTY_METRICS]
    missing = [m for m in own if f"`{m}`" not in METRICS_PAGE]
    assert not missing, f"docs/metrics.md lacks metrics {missing}"


def test_every_novelty_metric_is_documented():
    missing = [m for m in NOVELTY_METRICS if f"`{m}`" not in NOVELTY_PAGE]
    assert not missing, f"docs/novelty.md lacks metrics {missing}"


def test_every_column_is_documented():
    missing = [c for c in COLUMNS if f"`{c}`" not in METRICS_PAGE]
    assert not missing, f"docs/metrics.md lacks columns {missing}"


def test_quick_start_is_the_makefile_targets_ci_calls():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make demo" in README and "make test" in README
    assert "make test" in ci


def test_readme_is_an_entry_point():
    assert len(README.splitlines()) <= 250, "the manual belongs in docs/"
    assert "docs/README.md" in README or "(docs/" in README


def _anchors(path: Path) -> set[str]:
    """GitHub's heading anchors of a Markdown file."""
    out = set()
    for line in path.read_text().splitlines():
        if m := re.match(r"#+ (.*)", line):
            slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
            out.add(slug)
    return out


@pytest.mark.parametrize("doc", doc_files(ROOT), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(doc: Path):
    text = re.sub(r"```.*?```", "", doc.read_text(), flags=re.S)
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (doc.parent / path).resolve() if path else doc
        if not dest.exists():
            broken.append(f"{target} (no file {dest})")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target} (no heading #{anchor} in {dest.name})")
    assert not broken, f"{doc.name}: broken links {broken}"


def test_quoted_figures_match_the_committed_results():
    """Fails, naming the block, when a generated block differs from what results/ gives."""
    stale = sync(doc_files(ROOT), ROOT / "results", check=True)
    assert not stale, (
        f"out of date: {[(str(f.relative_to(ROOT)), b) for f, b in stale]}; run: ood-bench docs"
    )


def test_a_figure_edited_by_hand_fails_the_check(tmp_path: Path):
    docs = tmp_path / "docs"
    docs.mkdir()
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    page = docs / "statistical-detector.md"
    shutil.copy(ROOT / "docs" / "statistical-detector.md", page)
    text = page.read_text()
    block = re.search(r"<!-- generated:stat-detectors -->\n(.*?)<!-- /generated", text, re.S)
    assert block, "the statistical detector page quotes its figures from a generated block"
    figure = re.search(r"\| (\d+\.\d) +\|", block.group(1))
    edited = f"{float(figure.group(1)) + 0.1:.1f}"
    page.write_text(
        text[: block.start(1)]
        + block.group(1).replace(figure.group(0), f"| {edited} |", 1)
        + text[block.end(1) :]
    )
    cmd = [sys.executable, "-m", "ood_bench.cli", "docs", "--check"]
    cmd += ["--results", str(ROOT / "results"), str(tmp_path / "README.md"), str(page)]
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 1, run.stderr
    assert "block 'stat-detectors' out of date" in run.stderr
    assert "headline" not in run.stderr  # the untouched README is in sync
    # and a sync restores the committed text
    subprocess.run(cmd[:4] + cmd[5:], check=True, capture_output=True, cwd=ROOT)
    assert page.read_text() == (ROOT / "docs" / "statistical-detector.md").read_text()


def test_unknown_or_unclosed_block_is_an_error(tmp_path: Path):
    with pytest.raises(ValueError, match="unknown generated block"):
        render("<!-- generated:nope -->\n<!-- /generated:nope -->\n", ROOT / "results")
    with pytest.raises(ValueError, match="lack their"):
        render("<!-- generated:headline -->\ntext\n", ROOT / "results")


def test_minimum_calibration_sizes_on_the_detector_page_are_computed():
    """The table of calib samples per class that p_min <= alpha needs is what the code gives."""
    from ood_bench.pvalues import min_calib_size

    page = (ROOT / "docs" / "statistical-detector.md").read_text()
    for alpha in (0.01, 0.05, 0.1):
        sizes = [min_calib_size(alpha, c, 0.1) for c in (None, "simes", "dkw")]
        row = f"| {alpha:g} | " + " | ".join(map(str, sizes)) + " |"
        assert row in page, f"docs/statistical-detector.md lacks {row!r}"

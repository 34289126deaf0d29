"""The committed results site in a real browser (headless Chromium from the system's packages):
every page loads from file:// with no console error and nothing fetched from elsewhere, every
image loads, a click on a leaderboard header sorts it, a filter hides the other rows.

Skips, naming the install command, where Chromium, chromedriver or selenium is missing
(``make test-browser`` runs these alone; docs/site.md, "Browser tests")."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ood_bench.site import browser
from tests.conftest import ROOT

pytestmark = pytest.mark.browser
SITE = ROOT / "results" / "site"
PAGES = sorted(p.name for p in SITE.glob("*.html"))
LEADERBOARD = "leaderboard-digits-digits_cnn-far"
NEAR = "leaderboard-cifar10_split-cifar_cnn-near"  # a board sorted by near OOD


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    why = browser.missing()
    if why:
        pytest.skip(why)
    d = browser.chromium(tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield d
    finally:
        d.quit()


def _open(driver: Any, page: str) -> None:
    driver.get((SITE / page).as_uri())
    driver.get_log("browser")  # nothing from an earlier page counts


def test_the_site_is_committed():
    assert "index.html" in PAGES and len(PAGES) >= 7, "results/site: run make report"


@pytest.mark.parametrize("page", PAGES)
def test_page_loads_offline_without_errors(driver: Any, page: str):
    driver.get((SITE / page).as_uri())
    state = driver.execute_script(
        """
        const imgs = Array.from(document.images);
        return {
          ready: document.readyState,
          resources: performance.getEntriesByType('resource').map(e => e.name),
          images: imgs.map(i => [i.getAttribute('src'), i.complete, i.naturalWidth]),
          sheets: document.styleSheets.length,
          scripted: document.querySelectorAll('th.sortable').length,
          tables: document.querySelectorAll('main table').length,
        };
        """
    )
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == [], f"{page}: console errors {errors}"
    assert state["ready"] == "complete"
    outside = [r for r in state["resources"] if not r.startswith("file://")]
    assert outside == [], f"{page} requested {outside}"
    broken = [src for src, done, width in state["images"] if not (done and width > 0)]
    assert broken == [], f"{page}: images that did not load {broken}"
    assert state["sheets"] == 1, f"{page}: the stylesheet did not load"
    if state["tables"]:
        assert state["scripted"] > 0, f"{page}: site.js did not run"


def _column(driver: Any, table: str, index: int) -> list[str]:
    """The sort keys (or text) of column ``index`` over the visible rows of ``table``."""
    return driver.execute_script(
        """
        const rows = Array.from(document.getElementById(arguments[0]).tBodies[0].rows);
        return rows.filter(r => !r.hidden).map(r => {
          const c = r.cells[arguments[1]];
          return c.hasAttribute('data-sort') ? c.getAttribute('data-sort') : c.textContent;
        });
        """,
        table,
        index,
    )


def _header(driver: Any, table: str, label: str) -> Any:
    from selenium.webdriver.common.by import By

    heads = driver.find_elements(By.CSS_SELECTOR, f"#{table} thead th")
    return next(h for h in heads if h.text.replace("\n", " ") == label), heads


def test_leaderboard_sorts_when_a_header_is_clicked(driver: Any):
    _open(driver, "index.html")
    th, heads = _header(driver, LEADERBOARD, "fpr95_id (%)")
    col = heads.index(th)
    before = [float(v) for v in _column(driver, LEADERBOARD, col) if v]
    assert before != sorted(before), "the leaderboard should start in AUROC order"
    th.click()
    assert th.get_attribute("aria-sort") == "ascending"
    up = [float(v) for v in _column(driver, LEADERBOARD, col) if v]
    assert up == sorted(up) and len(up) == len(before)
    th.click()
    assert th.get_attribute("aria-sort") == "descending"
    down = [float(v) for v in _column(driver, LEADERBOARD, col) if v]
    assert down == sorted(up, reverse=True)
    name, _ = _header(driver, LEADERBOARD, "detector")
    name.click()
    names = _column(driver, LEADERBOARD, 1)
    assert names == sorted(names)
    assert driver.get_log("browser") == []


def test_a_filter_hides_the_other_rows(driver: Any):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    _open(driver, "index.html")
    table = driver.find_element(By.ID, LEADERBOARD)
    block = table.find_element(By.XPATH, "./ancestor::div[@class='table-block']")
    total = len(table.find_elements(By.CSS_SELECTOR, "tbody tr"))
    own = len(table.find_elements(By.CSS_SELECTOR, "tbody tr[data-library='ood_bench']"))
    menu = Select(block.find_element(By.CSS_SELECTOR, ".filters select[data-key='library']"))
    menu.select_by_value("ood_bench")
    visible = [r for r in table.find_elements(By.CSS_SELECTOR, "tbody tr") if r.is_displayed()]
    assert 0 < own < total and len(visible) == own
    assert {r.get_attribute("data-library") for r in visible} == {"ood_bench"}
    counter = block.find_element(By.CSS_SELECTOR, ".filters .count").text
    assert counter == f"{own} of {total} rows"
    family = Select(block.find_element(By.CSS_SELECTOR, ".filters select[data-key='family']"))
    family.select_by_value("input gradient")  # no native detector of that family has rows
    assert not any(r.is_displayed() for r in table.find_elements(By.CSS_SELECTOR, "tbody tr"))
    menu.select_by_value("")
    family.select_by_value("")
    assert all(r.is_displayed() for r in table.find_elements(By.CSS_SELECTOR, "tbody tr"))


def test_the_group_filter_of_a_benchmark_page(driver: Any):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    _open(driver, "digits_open.html")
    table = driver.find_element(By.ID, "sets-digits_open")
    near = len(table.find_elements(By.CSS_SELECTOR, "tbody tr[data-group='near']"))
    Select(driver.find_element(By.CSS_SELECTOR, "select[data-key='group']")).select_by_value("near")
    visible = [r for r in table.find_elements(By.CSS_SELECTOR, "tbody tr") if r.is_displayed()]
    assert len(visible) == near > 0


def test_screenshots(driver: Any, tmp_path: Path):
    """The screenshot helper the docs' images come from works (full page, 1280 px wide)."""
    from PIL import Image

    shot = browser.screenshot(driver, (SITE / "index.html").as_uri(), tmp_path / "o.png")
    with Image.open(shot) as im:
        assert im.size[0] == 1280 and im.size[1] > 900


LINKS = """
return Array.from(document.querySelectorAll('[href], [src]')).map(e => {
  const attr = e.hasAttribute('href') ? 'href' : 'src';
  return [e.tagName, e.getAttribute(attr), e[attr]];
});
"""
HANDLERS = """
return Array.from(document.querySelectorAll('*')).flatMap(e => Array.from(e.attributes)
  .filter(a => a.name.startsWith('on')).map(a => e.tagName + ' ' + a.name));
"""


def _bad_links(driver: Any, site: Path, results: Path) -> list[str]:
    """The links and sources of the open page that the browser does not resolve to a
    file:// URL inside the site or the results folder, or that carry a scheme."""
    from urllib.parse import unquote, urlparse

    bad = []
    for tag, raw, resolved in driver.execute_script(LINKS):
        url = urlparse(resolved)
        path = Path(unquote(url.path)).resolve()
        inside = any(path.is_relative_to(f.resolve()) for f in (site, results))
        if url.scheme != "file" or ":" in raw.split("/", 1)[0] or not inside:
            bad.append(f"<{tag} {raw!r}> → {resolved}")
    return bad


@pytest.mark.parametrize("page", PAGES)
def test_every_link_is_relative_and_inside_the_site(driver: Any, page: str):
    _open(driver, page)
    assert _bad_links(driver, SITE, SITE.parent) == []
    assert driver.execute_script(HANDLERS) == []


@pytest.fixture(scope="module")
def hostile(driver: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from tests.test_site_safety import build_hostile_site

    return build_hostile_site(tmp_path_factory.mktemp("hostile"))


def test_hostile_text_runs_nothing_in_the_browser(driver: Any, hostile: tuple[Path, Path]):
    """javascript:, <script>, onerror= in the library comparison's text: shown as text, no
    alert, no handler, every link still inside the site."""
    from selenium.common.exceptions import NoAlertPresentException

    from tests.test_site_safety import HOSTILE_TEXT

    root, out = hostile
    for page in sorted(p.name for p in out.glob("*.html")):
        driver.get((out / page).as_uri())
        with pytest.raises(NoAlertPresentException):
            driver.switch_to.alert  # noqa: B018 (the property raises when no alert is open)
        assert _bad_links(driver, out, root) == [], page
        assert driver.execute_script(HANDLERS) == [], page
        assert driver.execute_script("return document.scripts.length") == 1, page
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == [], f"{page}: {errors}"
    driver.get((out / "libraries.html").as_uri())
    cells = driver.execute_script(
        "return Array.from(document.querySelectorAll('td')).map(td => td.textContent)"
    )
    assert set(HOSTILE_TEXT) <= set(cells)


def _caption(driver: Any, table: str) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, f"#{table} caption .sorted-by").text


def test_the_near_board_starts_sorted_by_near_and_its_caption_follows_a_sort(driver: Any):
    """Near OOD has its own board, ranked by near AUROC; a click on another header re-sorts
    it and the caption says by what (issue 33: a caption that did not follow the sort)."""
    _open(driver, "index.html")
    th, heads = _header(driver, NEAR, "AUROC near (%)")
    col = heads.index(th)
    values = [float(v) for v in _column(driver, NEAR, col) if v]
    assert values == sorted(values, reverse=True) and len(values) > 2
    assert _caption(driver, NEAR) == "(sorted by AUROC near (%), descending)"
    ranks = _column(driver, NEAR, 0)
    assert ranks[0] == "1"
    tpr, heads = _header(driver, NEAR, "TPR at guaranteed FPR ≤ 5 % (%)")
    tpr.click()
    assert _caption(driver, NEAR) == "(sorted by TPR at guaranteed FPR ≤ 5 % (%), ascending)"
    th.click()
    th.click()
    assert _caption(driver, NEAR) == "(sorted by AUROC near (%), descending)"
    assert [float(v) for v in _column(driver, NEAR, col) if v] == values
    assert driver.get_log("browser") == []


def test_the_seeds_filter_separates_runs_of_fewer_seeds(driver: Any):
    """Every board offers a seeds filter; rows of fewer seeds than the board's full count are
    unranked (rank –) and listed after the ranked ones."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    _open(driver, "index.html")
    for table in driver.find_elements(By.CSS_SELECTOR, "table[id^='leaderboard-']"):
        rows = table.find_elements(By.CSS_SELECTOR, "tbody tr")
        seeds = [r.get_attribute("data-seeds") for r in rows]
        ranks = [r.find_elements(By.TAG_NAME, "td")[0].get_attribute("textContent") for r in rows]
        unranked = [i for i, k in enumerate(ranks) if k == "–"]
        assert unranked == list(range(len(rows) - len(unranked), len(rows))), table.get_attribute(
            "id"
        )
        if len(set(seeds)) < 2:
            continue
        block = table.find_element(By.XPATH, "./ancestor::div[@class='table-block']")
        menu = Select(block.find_element(By.CSS_SELECTOR, ".filters select[data-key='seeds']"))
        few = min(set(seeds), key=lambda s: int(s.split()[0]))
        menu.select_by_value(few)
        shown = [r for r in rows if r.is_displayed()]
        assert shown and all(r.get_attribute("data-seeds") == few for r in shown)
        assert all(r.find_elements(By.TAG_NAME, "td")[0].text == "–" for r in shown)
        menu.select_by_value("")

#!/usr/bin/env python
"""Screenshots of the results site in headless Chromium (the docs show them).

    python scripts/site_screenshots.py results/site --out docs/img

Writes OUT/site_overview.png (index.html), OUT/site_benchmark.png (BENCHMARK.html, default
digits) and OUT/site_validity.png (validity.html), 1280 px wide and as tall as the page (at most
--max-height px), and OUT/site_board_near.png: the near-OOD leaderboard of --near-benchmark
(default cifar10_split) alone, as it opens (sorted by near AUROC); stored with a 256-colour
palette to keep the repository small. Needs Chromium, chromedriver and selenium
(docs/site.md, "Browser tests").
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from ood_bench.site import browser


def small(path: Path) -> None:
    """Rewrite the PNG with an adaptive 256-colour palette (text and flat colours survive)."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB").quantize(256)
    im.save(path, optimize=True)


def near_board(driver, site: Path, bench: str, out: Path, width: int) -> Path:
    """The block of the benchmark's near-OOD leaderboard (filters, caption, table) alone."""
    from selenium.webdriver.common.by import By

    driver.set_window_size(width, 1400)
    driver.get((site / "index.html").resolve().as_uri())
    table = driver.find_element(By.CSS_SELECTOR, f"table[id^='leaderboard-{bench}-'][id$='-near']")
    block = table.find_element(By.XPATH, "./ancestor::div[@class='table-block']")
    driver.execute_script("arguments[0].scrollIntoView();", block)
    path = out / "site_board_near.png"
    block.screenshot(str(path))
    return path


def main(argv: list[str] | None = None) -> int:
    """Take the two screenshots; returns the exit code (2 without a browser)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("site", type=Path, help="the built site (make report)")
    p.add_argument("--out", type=Path, default=Path("docs/img"))
    p.add_argument("--benchmark", default="digits")
    p.add_argument("--near-benchmark", default="cifar10_split")
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--max-height", type=int, default=2400)
    args = p.parse_args(argv)
    why = browser.missing()
    if why:
        print(f"site_screenshots.py: {why}", file=sys.stderr)
        return 2
    shots = {
        "site_overview.png": "index.html",
        "site_benchmark.png": f"{args.benchmark}.html",
        "site_validity.png": "validity.html",
    }
    with tempfile.TemporaryDirectory() as profile:
        driver = browser.chromium(Path(profile), args.width)
        try:
            for name, page in shots.items():
                url = (args.site / page).resolve().as_uri()
                path = browser.screenshot(driver, url, args.out / name, args.width, args.max_height)
                small(path)
                print(path)
            path = near_board(driver, args.site, args.near_benchmark, args.out, args.width)
            small(path)
            print(path)
        finally:
            driver.quit()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Headless Chromium for the site's browser tests and screenshots: the system's Chromium and
chromedriver (Debian packages) driven by Selenium, never a browser downloaded at run time."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

INSTALL = "install the browser: apt-get install chromium chromium-driver && pip install selenium"
CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
CHROMEDRIVER = "/usr/bin/chromedriver"


def missing() -> str | None:
    """Why no browser can be driven here (with the install command), or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return f"selenium is not installed: {INSTALL}"
    if not any(Path(p).is_file() for p in CHROMIUM) and not shutil.which("chromium"):
        return f"no chromium: {INSTALL}"
    if not Path(CHROMEDRIVER).is_file():
        return f"no {CHROMEDRIVER}: {INSTALL}"
    return None


def chromium(profile: Path, width: int = 1280, height: int = 900) -> Any:
    """A headless Chromium WebDriver (browser console log kept) with its profile in ``profile``;
    offline: no Selenium Manager, no background networking."""
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must not download anything
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    binary = next((p for p in CHROMIUM if Path(p).is_file()), shutil.which("chromium"))
    if binary:
        opts.binary_location = binary
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        f"--window-size={width},{height}",
        f"--user-data-dir={profile}",
    ):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


def screenshot(
    driver: Any, url: str, path: Path, width: int = 1280, max_height: int = 4000
) -> Path:
    """Load ``url`` and save a PNG ``width`` px wide and as tall as the page (at most
    ``max_height``)."""
    driver.set_window_size(width, 900)
    driver.get(url)
    height = 900
    for _ in range(4):  # scroll areas sized by the window grow with it: until it settles
        new = min(int(driver.execute_script("return document.body.scrollHeight")), max_height)
        if new <= height:
            break
        height = new
        driver.set_window_size(width, height)
    path.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(path))
    return path

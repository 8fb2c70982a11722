"""A real headless Chromium for the page tests (Debian's chromium + chromium-driver, Selenium).

Use the ``browser`` fixture (imported in conftest.py). Where no Chromium, ChromeDriver or
Selenium is found, the tests that ask for it skip and say what to install; CI installs them
(see .ci/run).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator

import pytest

# The flags keep Chromium off this machine's closed network: without them it keeps trying
# to reach Google's hosts at start-up and in the background.
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,900",
)


def find_chromium() -> tuple[str, str] | str:
    """(chromium, chromedriver) paths, or the reason the browser tests cannot run here."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        return "no Chromium/ChromeDriver found: apt-get install chromium chromium-driver"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed: pip install -e '.[dev]'"
    return chromium, driver


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    """One headless Chromium for the whole session, driven by Selenium."""
    found = find_chromium()
    if isinstance(found, str):
        pytest.skip(found)
    chromium, driver_path = found
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        options.add_argument(f"--user-data-dir={profile}")
        driver = webdriver.Chrome(service=Service(driver_path), options=options)
        driver.set_page_load_timeout(30)
        try:
            yield driver
        finally:
            driver.quit()

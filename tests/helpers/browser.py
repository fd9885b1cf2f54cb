"""Headless Chromium (Debian's ``chromium`` + ``chromium-driver``) driven by selenium.

``make system-deps`` installs both packages with apt; where they are missing the
browser tests skip and say so.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

# Without these Chromium stalls on this closed network (background fetches, QUIC, GPU probing).
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
)
WAIT_SECONDS = 30


def chromium(profile_dir: Path):
    """A headless Chromium WebDriver with a fresh profile in ``profile_dir``."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (binary and driver):
        pytest.skip("Debian's chromium and chromium-driver are not installed: run "
                    "`make system-deps` as root (apt-get), then the browser tests run")  # fmt: skip
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile_dir}"):
        options.add_argument(flag)
    browser = webdriver.Chrome(options=options, service=Service(driver))
    browser.implicitly_wait(WAIT_SECONDS)
    return browser


def log_in(browser, url: str, user: str, password: str) -> None:
    """Sign in through the simple auth manager's login page."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.wait import WebDriverWait

    browser.get(url)
    browser.find_element(By.NAME, "username").send_keys(user)
    browser.find_element(By.NAME, "password").send_keys(password)
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    WebDriverWait(browser, WAIT_SECONDS).until(
        expected_conditions.none_of(expected_conditions.url_contains("/auth/login"))
    )

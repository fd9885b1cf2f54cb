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


def settled(browser, element, timeout: float = WAIT_SECONDS):
    """``element`` scrolled to the centre of the window, visible, enabled and no longer moving
    (an accordion or a dialog that is still opening moves what it holds): what a user could
    click. Polls the element's box until two reads 100 ms apart agree."""
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.wait import WebDriverWait

    last: list[dict] = []

    def still(_):
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
        box = element.rect
        moved = not last or last[-1] != box
        last.append(box)
        return not moved and element.is_displayed() and element.is_enabled()

    wait = WebDriverWait(browser, timeout, poll_frequency=0.1)
    wait.until(still)
    return wait.until(expected_conditions.element_to_be_clickable(element))


def click(browser, element, attempts: int = 5) -> None:
    """Click ``element`` once it has settled; a click another element intercepted (the layout
    moved between the check and the click) is retried after it settles again."""
    from selenium.common.exceptions import ElementClickInterceptedException

    for attempt in range(1, attempts + 1):
        try:
            settled(browser, element).click()
            return
        except ElementClickInterceptedException:
            if attempt == attempts:
                raise


def save_artifacts(browser, folder: Path, name: str) -> list[Path]:
    """A screenshot and the page source of what the browser shows, kept for a failed test."""
    folder.mkdir(parents=True, exist_ok=True)
    screenshot, source = folder / f"{name}.png", folder / f"{name}.html"
    browser.save_screenshot(str(screenshot))
    source.write_text(browser.page_source, encoding="utf-8")
    return [screenshot, source]

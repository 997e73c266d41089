"""Headless Chromium for the tests that look at pages as a person would: Debian's ``chromium`` and
``chromium-driver``, driven by Selenium, with the network blocked (every host name but 127.0.0.1 fails to
resolve), as on a machine without internet. ``.ci/ensure-tools`` installs both; under ``CI=true`` a missing
browser is an error, not a skip, so no page goes untested unnoticed."""

from __future__ import annotations

import json
import os
import shutil

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def require_chromium() -> None:
    """Skip the calling test module when Chromium is missing (fail under CI)."""
    if CHROMIUM and CHROMEDRIVER:
        return
    if os.environ.get("CI"):  # CI must run it: a skip there would hide a page nobody tested
        raise RuntimeError("CI=true but chromium or chromedriver is missing (.ci/ensure-tools installs them)")
    pytest.skip("needs Debian's chromium and chromium-driver (.ci/ensure-tools installs them)", allow_module_level=True)


def start_chromium(width: int = 1400, height: int = 900):
    """A Selenium driver of headless Chromium that reaches 127.0.0.1 only and logs its network and console."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     f"--window-size={width},{height}",
                     # No network but the loopback: a page that needs a CDN shows nothing, as offline.
                     "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"):
        options.add_argument(argument)
    # Chromium's network events and console, to tell what a page tried to fetch and what was refused.
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    return driver


def requested_urls(browser) -> list[str]:
    """Every URL the browser asked for since the last call (Chromium's performance log)."""
    urls = []
    for entry in browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls

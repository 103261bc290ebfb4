"""Open ComfyUI's real web frontend in headless Chromium (Debian's ``chromium``, driven by Playwright).

Playwright's own browser download is not used: ``scripts/setup.sh`` installs the system Chromium
and Playwright drives it through ``executable_path``. Used by the UI tests.
"""
from __future__ import annotations

import json
import os
import shutil
import urllib.request
from contextlib import contextmanager
from typing import Iterator

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
CHROMIUM_FLAGS = ("--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-dev-shm-usage",
                  "--disable-extensions", "--no-first-run", "--mute-audio")
# Settings stored on the server before the page opens: draw node text at every zoom level (the
# screenshots are read by people) and skip the first-run tutorial.
UI_SETTINGS = {"LiteGraph.Canvas.MinFontSizeForLOD": 0, "Comfy.TutorialCompleted": True}


def chromium_path() -> str:
    """The Chromium to drive: ``$CHROMIUM``, else the first of ``CHROMIUM_NAMES`` on the PATH."""
    candidates = [os.environ["CHROMIUM"]] if os.environ.get("CHROMIUM") else list(CHROMIUM_NAMES)
    for name in candidates:
        found = shutil.which(name)
        if found:
            return found
    raise RuntimeError("No Chromium found (looked for " + ", ".join(candidates) + "): the UI tests need it. "
                       "Run scripts/setup.sh (it runs `apt-get install -y chromium`) or set CHROMIUM=/path/to/chrome.")


def store_settings(server_url: str, settings: dict = UI_SETTINGS) -> None:
    """Write frontend settings through ComfyUI's own settings API (``POST /api/settings/<id>``)."""
    for key, value in settings.items():
        request = urllib.request.Request(f"{server_url}/api/settings/{key}", data=json.dumps(value).encode(),
                                         method="POST", headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30):
            pass


@contextmanager
def open_frontend(server_url: str, width: int = 1920, height: int = 1080, timeout_ms: int = 120_000) -> Iterator:
    """A Playwright page with ComfyUI's frontend loaded and ``window.app`` ready; console errors in ``page.errors``."""
    from playwright.sync_api import sync_playwright
    store_settings(server_url)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), headless=True, args=list(CHROMIUM_FLAGS))
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(timeout_ms)
            page.errors = []
            page.on("pageerror", lambda error: page.errors.append(str(error)))
            page.goto(server_url, wait_until="networkidle", timeout=timeout_ms)
            page.wait_for_function("() => window.app && window.app.graph && window.app.canvas", timeout=timeout_ms)
            yield page
        finally:
            browser.close()

"""Headless Chromium (Debian's, driven by Playwright) for the browser tests and the benchmarks that drive
the page (benchmarks/map.py, benchmarks/ui.py); the galsearch package never imports it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CHROMIUM = Path("/usr/bin/chromium")
# Playwright adds headless and no-sandbox; these keep Chromium off the (closed) network.
CHROMIUM_ARGS = [
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WIDTH = 1400


@contextmanager
def chromium() -> Iterator[Browser]:
    """Debian's Chromium, headless, closed on leaving the ``with`` block."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def new_page(browser: Browser, timeout_ms: int, height: int = 1000) -> Page:
    """A page of ``browser``, :data:`WIDTH` x ``height`` pixels, that waits up to ``timeout_ms`` for
    anything it is asked to do."""
    page = browser.new_page(viewport={"width": WIDTH, "height": height})
    page.set_default_timeout(timeout_ms)
    return page

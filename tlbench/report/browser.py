"""Headless Chromium (Debian's ``chromium`` package) through Playwright, for checking and picturing
report pages. Nothing is downloaded: Playwright drives the system browser, offline."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playwright.sync_api import Page

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync")


@contextlib.contextmanager
def chromium_page(executable: Path = CHROMIUM, width: int = 1600, height: int = 1000) -> Iterator[Page]:
    """A Playwright page in a fresh headless Chromium profile, closed (and the profile removed) afterwards."""
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="tlbench-chromium-") as profile, sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=str(executable), headless=True, args=list(CHROMIUM_ARGS),
            viewport={"width": width, "height": height}, offline=True)
        try:
            yield context.pages[0] if context.pages else context.new_page()
        finally:
            context.close()

"""A real browser for tests: Debian's chromium driven by Playwright's Python API (Playwright's own
browser download is not available; ``.ci/run`` installs the Debian package when it is missing).

Screenshots go to the test's memory, and also to ``$HF_GAZECONS_SCREENSHOTS/<name>`` (a folder
relative to the repository, e.g. ``docs``) when that variable is set: that is how the README's
pictures are made.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
BROWSER_ARGS = [
    "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-default-apps",
]  # fmt: skip


def launch(playwright):
    """A headless chromium, or a skip where Playwright or Debian's chromium is missing."""
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it with apt-get)")
    return playwright.chromium.launch(executable_path=chromium, args=BROWSER_ARGS)


def sync_playwright():
    return pytest.importorskip("playwright.sync_api").sync_playwright()


def screenshot(page, name: str, full_page: bool = True) -> bytes:
    """A PNG of ``page`` (the whole page, or what the viewport shows), also written to
    ``$HF_GAZECONS_SCREENSHOTS/name``."""
    png = page.screenshot(full_page=full_page)
    assert png[:8] == PNG_SIGNATURE
    folder = os.environ.get("HF_GAZECONS_SCREENSHOTS")
    if folder:
        path = ROOT / folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png)
    return png

"""The system's headless Chromium, driven by Playwright, for tests of the web client.

Playwright's own browser builds are never downloaded: the test runs Debian's
`chromium-headless-shell` (or `chromium`), which scripts/test installs when missing.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from playwright.async_api import Browser, async_playwright

BINARIES = ("chromium-headless-shell", "chromium")
"""Debian's Chromium executables, preferred first (the shell is smaller and starts faster)."""

LAUNCH_ARGS = (
    "--headless",
    "--no-sandbox",  # tests may run as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
"""Quiet and offline: nothing but the pages under test may reach the network."""


def chromium_path() -> str:
    """The Chromium binary; a missing one skips the test, or fails it in CI.

    CI sets LIVEMART_REQUIRE_SERVICES=1, under which a browser test must not quietly
    shrink the suite, just as a Redis or PostgreSQL test must not.
    """
    for name in BINARIES:
        path = shutil.which(name)
        if path is not None:
            return path
    message = "no Chromium: install the Debian package chromium-headless-shell (scripts/test does)"
    if os.environ.get("LIVEMART_REQUIRE_SERVICES") == "1":
        pytest.fail(message)
    pytest.skip(message)


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """One browser process; give each simulated person a `new_context()` of their own.

    Playwright starts it with a fresh temporary profile (user-data dir) and deletes that
    on close, and contexts do not share cookies or storage, so two signed-in people in
    one browser never see each other's token.
    """
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=chromium_path(), headless=True, args=list(LAUNCH_ARGS)
        )
        try:
            yield browser
        finally:
            await browser.close()

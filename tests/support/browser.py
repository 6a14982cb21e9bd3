"""Headless Chromium for the browser tests: Debian's /usr/bin/chromium driven by Playwright,
never a downloaded browser."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.servers import ROOT
from tests.support.settings import REQUIRE_SERVICES

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts"
# Quiet, offline, root-safe headless Chromium (this machine has no network but the registries).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_or_skip() -> Path:
    """The browser, or a skip with the reason (a failure under CI, which never skips)."""
    if not CHROMIUM.exists():
        message = "Debian's chromium is not installed (apt-get install chromium)"
        if REQUIRE_SERVICES:
            pytest.fail(message)
        pytest.skip(message)
    return CHROMIUM

"""The demo page (examples/web) in a real headless Chromium, against authsvc under gunicorn.

Debian's Chromium (/usr/bin/chromium) driven by Playwright; no browser is ever downloaded.
Screenshots go to test-artifacts/ (kept by CI as artifacts, ignored by git).

The e-mail tests (DESIGN §9) run on both backends, mail through a real SMTP server on loopback
(aiosmtpd), and open the link from the mail, which points at the demo page itself
(AUTHSVC_EMAIL_LINK_URL).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
import requests

from tests.support.helpers import OTHER_PASSWORD, PASSWORD, bearer
from tests.support.servers import ROOT, authsvc_gunicorn, free_port, static_files
from tests.support.settings import FAST_ARGON2, REQUIRE_SERVICES, TABLES, TEST_SECRET
from tests.support.smtp import MailServer, text_of, token_in

pytestmark = pytest.mark.slow

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
ACCESS_TTL = 2
ME_SHOWS_USER = "document.getElementById('me').textContent.includes('browser@example.com')"

ATTACKER_PAGE = """<!doctype html><html><body>
<form id="logout" method="POST" action="{api}/logout"></form>
<form id="password" method="POST" action="{api}/password" enctype="text/plain">
  <input name='{{"current_password": "{password}", "new_password": "attacker chosen", "x": "'
         value='"}}'>
</form>
<pre id="fetch-result">pending</pre>
<script>
  const show = (text) => document.getElementById("fetch-result").textContent = text;
  fetch("{api}/me", {{credentials: "include"}})
    .then(r => r.text().then(t => show("read: " + t)))
    .catch(e => show("blocked: " + e.name));
</script>
</body></html>"""


@pytest.fixture(scope="module")
def chromium_path() -> Path:
    if not CHROMIUM.exists():
        message = "Debian's chromium is not installed (apt-get install chromium)"
        if REQUIRE_SERVICES:
            pytest.fail(message)
        pytest.skip(message)
    return CHROMIUM


@pytest.fixture
def setup(tmp_path, chromium_path) -> Iterator[dict[str, str]]:
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    attacker_dir = tmp_path / "attacker"
    attacker_dir.mkdir()
    with static_files(ROOT / "examples" / "web") as page_origin, static_files(attacker_dir) as evil:
        port = free_port()
        env = {
            **os.environ,
            **FAST_ARGON2,
            "AUTHSVC_ENV": "development",  # plain-http cookies (no Secure flag) on 127.0.0.1
            "AUTHSVC_SECRET_KEY": "browser-test-secret-0123456789-abcdefghijkl",
            "AUTHSVC_ISSUER": f"http://127.0.0.1:{port}",
            "DATABASE_URL": f"sqlite:///{tmp_path}/authsvc.db",
            "AUTHSVC_TOKEN_LOCATION": "headers,cookies",
            "AUTHSVC_CORS_ORIGINS": page_origin,
            "AUTHSVC_ACCESS_TOKEN_TTL": str(ACCESS_TTL),
            "AUTHSVC_LEEWAY": "0",
            "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
        }
        env.pop("REDIS_URL", None)
        with authsvc_gunicorn(env, port, tmp_path / "authsvc.log") as api:
            (attacker_dir / "index.html").write_text(
                ATTACKER_PAGE.format(api=api, password=PASSWORD)
            )
            with sync_playwright() as playwright:
                browser = launch(playwright, chromium_path)
                try:
                    yield {"api": api, "page": page_origin, "evil": evil, "browser": browser}
                finally:
                    browser.close()


def launch(playwright: Any, chromium_path: Path) -> Any:
    return playwright.chromium.launch(
        executable_path=str(chromium_path), headless=True, args=CHROMIUM_ARGS
    )


def test_demo_page_flow_with_silent_refresh_and_csrf(setup):
    browser = setup["browser"]
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(15_000)
    page.goto(f"{setup['page']}/index.html?api={setup['api']}")

    page.fill("#username", "browser@example.com")
    page.fill("#password", PASSWORD)
    page.click("#signup")
    page.wait_for_function(ME_SHOWS_USER)
    # The page cannot read the tokens: they are httpOnly cookies.
    visible = page.evaluate("document.cookie")
    assert "access_token_cookie" not in visible and "csrf_access_token" in visible
    page.screenshot(path=str(ARTIFACTS / "browser-1-signed-in.png"))

    # Let the 2-second access token expire: /me then refreshes silently and succeeds.
    time.sleep(ACCESS_TTL + 1)
    page.click("#show-me")
    page.wait_for_function("Number(document.getElementById('refreshes').textContent) >= 1")
    assert "browser@example.com" in page.text_content("#me")

    page.click("#list-sessions")
    page.wait_for_selector("#sessions li.current")
    assert page.locator("#sessions li").count() == 1
    page.screenshot(path=str(ARTIFACTS / "browser-2-sessions.png"))

    # A page on a non-allowed origin cannot read the API, and its forged POSTs (same site,
    # so the Lax cookies are sent, but without X-CSRF-TOKEN) change nothing.
    evil = context.new_page()
    evil.set_default_timeout(15_000)
    evil.goto(f"{setup['evil']}/index.html")
    evil.wait_for_function(
        "!document.getElementById('fetch-result').textContent.includes('pending')"
    )
    assert evil.text_content("#fetch-result").startswith("blocked")
    for form in ("logout", "password"):
        evil.goto(f"{setup['evil']}/index.html")
        with evil.expect_navigation():
            evil.evaluate(f"document.getElementById('{form}').submit()")
        assert '"invalid_csrf"' in evil.content()
    evil.screenshot(path=str(ARTIFACTS / "browser-3-forged-post-refused.png"))
    evil.close()

    page.click("#show-me")
    page.wait_for_function(ME_SHOWS_USER)
    # The password did not change: logging in with the original one still works.
    page.fill("#username", "browser@example.com")
    page.fill("#password", PASSWORD)
    page.click("#login")
    page.wait_for_function("document.getElementById('status').textContent.includes('signed in')")

    # Log out after the access cookie has expired: the refresh cookie (also sent to /logout)
    # and its CSRF value do it.
    time.sleep(ACCESS_TTL + 1)
    page.click("#logout")
    page.wait_for_function("document.getElementById('status').textContent === 'signed out'")
    page.click("#show-me")
    page.wait_for_function("document.getElementById('status').textContent.includes('401')")
    page.screenshot(path=str(ARTIFACTS / "browser-4-signed-out.png"))
    context.close()

"""The demo page (examples/web) in a real headless Chromium, against authsvc under gunicorn.

Debian's Chromium (/usr/bin/chromium) driven by Playwright; no browser is ever downloaded.
Screenshots go to test-artifacts/ (kept by CI as artifacts, ignored by git).

The e-mail tests (DESIGN §9) run on both backends, mail through a real SMTP server on loopback
(aiosmtpd), and open the link from the mail, which points at the demo page itself
(AUTHSVC_EMAIL_LINK_URL).

The second-factor tests (DESIGN §10) run on the same setup, plus the downstream example
(examples/downstream) under gunicorn: the token of a login with a TOTP code is aal2, which its
/sensitive route needs. The test is the authenticator app: it reads the secret the page shows
and computes the codes.
"""

from __future__ import annotations

import io
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest
import redis
import requests

from authsvc.security import totp
from tests.support.browser import ARTIFACTS, CHROMIUM_ARGS, chromium_or_skip
from tests.support.helpers import OTHER_PASSWORD, PASSWORD, bearer, claims_of
from tests.support.servers import BIN, ROOT, authsvc_gunicorn, free_port, running, static_files
from tests.support.settings import FAST_ARGON2, TABLES, TEST_SECRET
from tests.support.smtp import MailServer, text_of, token_in

pytestmark = pytest.mark.slow

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
    return chromium_or_skip()


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


# -- e-mail: verification, password reset, change (DESIGN §9) -------------------------------------

MAIL_TIMEOUT = 20  # seconds for a message to cross the outbox, the sender thread and SMTP
# The whole link, as mailed (text part): it points at the demo page, token and all.
LINK = re.compile(r"https?://\S+[?&]token=[A-Za-z0-9_-]{43}")


@dataclass
class MailDemo:
    api: str
    page_origin: str
    mail: MailServer
    browser: Any

    @property
    def page_url(self) -> str:
        return f"{self.page_origin}/index.html?api={self.api}"

    def url(self, path: str) -> str:
        return self.api + path

    def new_page(self, url: str | None = None) -> Any:
        """A page in a fresh browser context (another device: no cookies shared)."""
        page = self.browser.new_context().new_page()
        page.set_default_timeout(15_000)
        if url is not None:
            page.goto(url)
        return page


def backend_env(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    """SQLite: the embedded default (one process, no Redis); PostgreSQL + Redis: production,
    two workers (each with its own outbox sender), on a fresh database."""
    if backend == "sqlite":
        return {"AUTHSVC_ENV": "development", "DATABASE_URL": f"sqlite:///{tmp_path}/authsvc.db"}
    database = request.getfixturevalue("postgres_url")
    redis_url = request.getfixturevalue("redis_url")
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {', '.join(TABLES)} CASCADE")
    redis.Redis.from_url(redis_url).flushdb()
    return {
        "AUTHSVC_ENV": "production",
        "AUTHSVC_SECRET_KEY": TEST_SECRET,
        "DATABASE_URL": database,
        "REDIS_URL": redis_url,
        "WEB_CONCURRENCY": "2",
    }


@pytest.fixture
def mail_demo(
    backend: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    chromium_path: Path,
    mail_server: MailServer,
) -> Iterator[MailDemo]:
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    with static_files(ROOT / "examples" / "web") as page_origin:
        port = free_port()
        api = f"http://127.0.0.1:{port}"
        env = {
            **{key: value for key, value in os.environ.items() if key != "REDIS_URL"},
            **FAST_ARGON2,
            "AUTHSVC_ISSUER": api,
            "AUTHSVC_TOKEN_LOCATION": "headers,cookies",
            "AUTHSVC_CORS_ORIGINS": page_origin,
            "AUTHSVC_SMTP_URL": mail_server.url,
            # Mailed links open the demo page, which handles ?action=...&token=... itself.
            "AUTHSVC_EMAIL_LINK_URL": (
                f"{page_origin}/index.html?api={api}&action={{action}}&token={{token}}"
            ),
            "PROMETHEUS_MULTIPROC_DIR": str(metrics),
            **backend_env(backend, request, tmp_path),
        }
        with (
            authsvc_gunicorn(env, port, tmp_path / "authsvc.log"),
            sync_playwright() as playwright,
        ):
            browser = launch(playwright, chromium_path)
            try:
                yield MailDemo(api, page_origin, mail_server, browser)
            finally:
                browser.close()


def wait_for_mail(server: MailServer, to: str, subject: str) -> EmailMessage:
    """The first message to ``to`` with ``subject``, waiting up to MAIL_TIMEOUT seconds."""
    deadline = time.monotonic() + MAIL_TIMEOUT
    while True:
        found = [m for m in server.messages(to) if m["Subject"] == subject]
        if found:
            return found[0]
        if time.monotonic() > deadline:
            got = [(m["To"], m["Subject"]) for m in server.messages()]
            raise AssertionError(f"no {subject!r} message to {to} in {MAIL_TIMEOUT} s; got {got}")
        time.sleep(0.05)


def link_in(message: EmailMessage) -> str:
    found = LINK.search(text_of(message))
    assert found is not None, f"no link in: {text_of(message)!r}"
    return found.group(0)


def posts_of(page: Any) -> list[str]:
    """Every POST the page makes from now on (CORS preflights are OPTIONS, not counted)."""
    posts: list[str] = []
    page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
    return posts


def wait_for_text(page: Any, element: str, text: str) -> None:
    page.wait_for_function(
        "([id, text]) => document.getElementById(id).textContent.includes(text)",
        arg=[element, text],
    )


def sign_up(page: Any, username: str, email: str) -> None:
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    page.fill("#email", email)
    page.click("#signup")
    wait_for_text(page, "email-state", f"{email} (not verified)")


def api_login(demo: MailDemo, username: str, password: str) -> requests.Response:
    body = {"username": username, "password": password}
    return requests.post(demo.url("/login"), json=body, timeout=10)


def api_me(demo: MailDemo, access_token: str) -> requests.Response:
    return requests.get(demo.url("/me"), headers=bearer(access_token), timeout=10)


def test_password_reset_by_mail_in_the_browser(mail_demo: MailDemo):
    demo, address = mail_demo, "reset@example.com"
    # Device A signs up with an address and stays signed in; a header-mode client (an app)
    # holds a second session. Neither may survive the reset.
    device = demo.new_page(demo.page_url)
    sign_up(device, "resetter", address)
    app_session = api_login(demo, "resetter", PASSWORD)
    assert app_session.status_code == 200, app_session.text
    app_token = app_session.json()["access_token"]

    # Device B forgot the password: the page asks for a link by mail.
    page = demo.new_page(demo.page_url)
    page.fill("#forgot-email", address)
    page.click("#forgot")
    wait_for_text(page, "status", "a message is on its way")
    message = wait_for_mail(demo.mail, address, "Reset your password")
    link = link_in(message)
    assert link.startswith(f"{demo.page_url}&action=reset&token="), link

    # Opening the link shows a form and POSTs nothing; the token leaves the address bar.
    posts = posts_of(page)
    page.goto(link)
    page.wait_for_selector("#set-password", state="visible")
    assert "token=" not in page.url
    assert posts == []
    # The token is still live after the load: a weak password is refused with it (and leaves
    # it live), which an unknown or spent token would not get as far as.
    weak = requests.post(
        demo.url("/password/reset"),
        json={"token": token_in(message), "new_password": "short"},
        timeout=10,
    )
    assert (weak.status_code, weak.json()["code"]) == (400, "weak_password"), weak.text
    page.screenshot(path=str(ARTIFACTS / "browser-mail-1-reset-form.png"))

    page.fill("#new-password", OTHER_PASSWORD)
    page.click("#set-password")
    wait_for_text(page, "status", "password set")
    assert posts == [demo.url("/password/reset")]
    assert page.is_hidden("#link")
    page.screenshot(path=str(ARTIFACTS / "browser-mail-2-password-set.png"))

    # Every session from before the reset is dead: device A's cookies and the app's token.
    device.click("#show-me")
    wait_for_text(device, "status", "401")
    assert device.text_content("#me") == ""
    assert api_me(demo, app_token).status_code == 401
    # The old password no longer logs in (in the page, nor through the API); the new one does.
    page.fill("#username", "resetter")
    page.fill("#password", PASSWORD)
    page.click("#login")
    wait_for_text(page, "status", "401 invalid_credentials")
    assert api_login(demo, "resetter", PASSWORD).status_code == 401
    page.fill("#password", OTHER_PASSWORD)
    page.click("#login")
    wait_for_text(page, "status", "signed in as resetter")
    # The link reached the address, so the reset verified it; the owner is told by mail.
    wait_for_text(page, "email-state", f"{address} (verified)")
    notice = wait_for_mail(demo.mail, address, "Your password was changed")
    assert LINK.search(text_of(notice)) is None
    # The link works once.
    again = requests.post(
        demo.url("/password/reset"),
        json={"token": token_in(message), "new_password": "yet another long passphrase"},
        timeout=10,
    )
    assert (again.status_code, again.json()["code"]) == (400, "invalid_token"), again.text


def test_verification_link_spends_its_token_only_on_the_click(mail_demo: MailDemo):
    demo, address = mail_demo, "verify@example.com"
    page = demo.new_page(demo.page_url)
    sign_up(page, "verifier", address)
    first = wait_for_mail(demo.mail, address, "Confirm your e-mail address")
    # A resend mails a new link, which voids the first; a second one inside the cooldown is
    # refused.
    page.click("#resend-verification")
    wait_for_text(page, "status", "a message is on its way")
    page.click("#resend-verification")
    wait_for_text(page, "status", "429 rate_limited")
    deadline = time.monotonic() + MAIL_TIMEOUT
    while len(demo.mail.messages(address)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    message = demo.mail.messages(address)[1]
    link = link_in(message)
    assert link.startswith(f"{demo.page_url}&action=verify&token="), link
    assert link != link_in(first)

    # The link opened in another browser (the phone that reads the mail, or a mail scanner):
    # the page loads, shows a button and POSTs nothing.
    phone = demo.new_page()
    posts = posts_of(phone)
    phone.goto(link)
    phone.wait_for_selector("#confirm-email", state="visible")
    assert "token=" not in phone.url
    phone.screenshot(path=str(ARTIFACTS / "browser-mail-3-confirm-button.png"))
    assert posts == []
    session = api_login(demo, "verifier", PASSWORD)
    assert session.status_code == 200, session.text
    access_token = session.json()["access_token"]
    assert api_me(demo, access_token).json()["email_verified"] is False

    phone.click("#confirm-email")
    wait_for_text(phone, "status", f"e-mail confirmed: {address}")
    assert posts == [demo.url("/email/verify")]
    me = api_me(demo, access_token).json()
    assert (me["email"], me["email_verified"]) == (address, True)
    # Spent: the same token again is refused.
    again = requests.post(demo.url("/email/verify"), json={"token": token_in(message)}, timeout=10)
    assert (again.status_code, again.json()["code"]) == (400, "invalid_token"), again.text
    # The signed-in page sees it on its next /me.
    page.click("#show-me")
    wait_for_text(page, "email-state", f"{address} (verified)")
    phone.screenshot(path=str(ARTIFACTS / "browser-mail-4-confirmed.png"))


def test_change_email_in_the_browser(mail_demo: MailDemo):
    demo, old, new = mail_demo, "old@example.com", "new@example.com"
    page = demo.new_page(demo.page_url)
    sign_up(page, "mover", old)

    # A wrong current password is refused; the right one mails a link to the new address.
    page.fill("#new-email", new)
    page.fill("#change-password", OTHER_PASSWORD)
    page.click("#change-email")
    wait_for_text(page, "status", "401 invalid_credentials")
    page.fill("#change-password", PASSWORD)
    page.click("#change-email")
    wait_for_text(page, "status", "a message is on its way")
    message = wait_for_mail(demo.mail, new, "Confirm your new e-mail address")

    # Followed in the same browser (still signed in): nothing changes before the click.
    posts = posts_of(page)
    page.goto(link_in(message))
    page.wait_for_selector("#confirm-email", state="visible")
    assert posts == []
    page.click("#show-me")
    wait_for_text(page, "email-state", f"{old} (not verified)")
    page.click("#confirm-email")
    wait_for_text(page, "status", f"e-mail confirmed: {new}")
    page.click("#show-me")
    wait_for_text(page, "email-state", f"{new} (verified)")
    # The old address is told (and gets no link).
    notice = wait_for_mail(demo.mail, old, "Your e-mail address was changed")
    assert LINK.search(text_of(notice)) is None


# -- second factors: TOTP, recovery codes, step-up at the downstream example (DESIGN §10) ------

DOWNSTREAM = ROOT / "examples" / "downstream"


@pytest.fixture
def downstream(mail_demo: MailDemo, tmp_path: Path) -> Iterator[str]:
    """The downstream example under gunicorn, trusting the demo's authsvc (its only setting)."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    command = [str(BIN / "gunicorn"), "--bind", f"127.0.0.1:{port}", "app:create_app()"]
    env = {"AUTHSVC_ISSUER": mail_demo.api, "PATH": os.environ.get("PATH", "")}
    with running(command, env, f"{base_url}/healthz", tmp_path / "downstream.log", DOWNSTREAM):
        yield base_url


def downstream_get(base_url: str, path: str, access_token: str) -> requests.Response:
    return requests.get(base_url + path, headers=bearer(access_token), timeout=10)


def posted(demo: MailDemo, path: str) -> Any:
    """A predicate for page.expect_response: the answer to the page's POST to ``path`` (not
    the CORS preflight). The body carries the tokens, as for any client; the page keeps none."""
    return lambda response: response.url == demo.url(path) and response.request.method == "POST"


@dataclass
class Enrolled:
    aal1_token: str  # the sign-up's access token
    secret: str  # as the page showed it
    confirming_code: str
    recovery_codes: list[str]


def scan_qr_code(png: bytes) -> str:
    """The text of the one QR code in a PNG (zxing-cpp, as a phone's camera app reads it)."""
    import zxingcpp
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("L")
    # A white border, as on a screen around the code (the element's box is the code itself).
    framed = Image.new("L", (image.width + 40, image.height + 40), 255)
    framed.paste(image, (20, 20))
    (found,) = zxingcpp.read_barcodes(framed)
    return str(found.text)


def sign_up_and_enrol(demo: MailDemo, page: Any, username: str, email: str) -> Enrolled:
    """Sign up in the page, then set up an authenticator app from what the page shows and
    confirm it with the code of the current time step."""
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    page.fill("#email", email)
    with page.expect_response(posted(demo, "/signup")) as signup:
        page.click("#signup")
    wait_for_text(page, "status", f"signed in as {username}")
    wait_for_text(page, "auth-level", "aal1 (pwd)")
    assert page.locator("#factors li").count() == 0

    # The app is added only with the current password.
    page.fill("#totp-password", OTHER_PASSWORD)
    page.click("#totp-start")
    wait_for_text(page, "status", "401 invalid_credentials")
    assert page.is_hidden("#totp-enrol")
    page.fill("#totp-password", PASSWORD)
    page.click("#totp-start")
    page.wait_for_selector("#totp-enrol", state="visible")
    secret = page.text_content("#totp-secret") or ""
    # The otpauth URI (the QR code's content; the page links it for phones) holds that secret.
    uri = page.get_attribute("#totp-uri", "href") or ""
    assert uri.startswith("otpauth://totp/"), uri
    assert parse_qs(urlsplit(uri).query)["secret"] == [secret]
    # The QR code is an SVG image, and it renders (segno's inline markup has no namespace,
    # which an SVG document needs: the page adds it).
    page.wait_for_function("document.getElementById('totp-qr-image').complete")
    qr = page.eval_on_selector(
        "#totp-qr-image", "image => ({src: image.src, width: image.naturalWidth})"
    )
    assert qr["src"].startswith("data:image/svg+xml"), qr["src"][:40]
    assert qr["width"] > 0
    page.screenshot(path=str(ARTIFACTS / "browser-mfa-1-qr-code.png"))
    # Scanned as a phone would: the pixels the browser drew decode to that URI, and the
    # secret the test's "app" uses from here on is the scanned one.
    scanned = scan_qr_code(page.locator("#totp-qr-image").screenshot())
    assert scanned == uri
    secret = parse_qs(urlsplit(scanned).query)["secret"][0]

    # A wrong code does not confirm it; the code the app shows now does.
    step = totp.current_step()
    near = {totp.code_at(secret, s) for s in range(step - 1, step + 3)}
    page.fill("#totp-code", next(c for c in ("123456", "654321", "111111") if c not in near))
    page.click("#totp-confirm")
    wait_for_text(page, "status", "401 invalid_code")
    confirming_code = totp.code_at(secret, totp.current_step())
    page.fill("#totp-code", confirming_code)
    page.click("#totp-confirm")
    wait_for_text(page, "status", "authenticator app added")
    page.wait_for_function("document.querySelectorAll('#recovery-codes li').length === 10")
    codes = page.locator("#recovery-codes li").all_text_contents()
    assert len(set(codes)) == 10
    # The secret left the page; the factor is listed, without it.
    assert page.is_hidden("#totp-enrol") and page.text_content("#totp-secret") == ""
    assert page.locator("#factors li[data-type='totp']").count() == 1
    assert secret not in page.text_content("#factors")
    assert page.text_content("#recovery-left") == "10"
    page.screenshot(path=str(ARTIFACTS / "browser-mfa-2-recovery-codes.png"))
    page.click("#recovery-done")
    assert page.is_hidden("#recovery")
    return Enrolled(signup.value.json()["access_token"], secret, confirming_code, codes)


def log_in_to_second_step(page: Any, username: str) -> None:
    """Log out, then log in with the password: the page asks for a code, with no tokens yet."""
    page.click("#logout")
    page.wait_for_function("document.getElementById('status').textContent === 'signed out'")
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    page.click("#login")
    page.wait_for_selector("#mfa-step", state="visible")
    wait_for_text(page, "status", "enter a code")
    names = {cookie["name"] for cookie in page.context.cookies()}
    assert "access_token_cookie" not in names and "refresh_token_cookie" not in names, names


def test_totp_enrolment_and_login_step_up_to_aal2(mail_demo: MailDemo, downstream: str):
    demo = mail_demo
    page = demo.new_page(demo.page_url)
    enrolled = sign_up_and_enrol(demo, page, "totp-user", "totp@example.com")
    aal1, secret = enrolled.aal1_token, enrolled.secret
    user_id = claims_of(aal1)["sub"]
    # Before MFA: the password login's token is aal1, which /sensitive refuses with RFC 9470's
    # step-up challenge (and /hello takes).
    assert downstream_get(downstream, "/hello", aal1).status_code == 200
    refused = downstream_get(downstream, "/sensitive", aal1)
    assert refused.status_code == 403, refused.text
    assert refused.json()["code"] == "insufficient_user_authentication"
    assert 'error="insufficient_user_authentication"' in refused.headers["WWW-Authenticate"]

    log_in_to_second_step(page, "totp-user")
    page.screenshot(path=str(ARTIFACTS / "browser-mfa-3-second-step.png"))
    # The code that confirmed the app is spent: its time step is never accepted again.
    page.fill("#mfa-code", enrolled.confirming_code)
    page.click("#mfa-verify")
    wait_for_text(page, "status", "401 invalid_code")
    assert page.is_visible("#mfa-step")  # a wrong code leaves the mfa_token usable

    # The app's next code (one step of drift is allowed) logs in, at aal2.
    page.fill("#mfa-code", totp.code_at(secret, totp.current_step() + 1))
    with page.expect_response(posted(demo, "/login/mfa")) as answer:
        page.click("#mfa-verify")
    assert answer.value.status == 200, answer.value.text()
    wait_for_text(page, "status", "signed in as totp-user")
    wait_for_text(page, "auth-level", "aal2 (pwd, otp)")
    assert page.is_hidden("#mfa-step")
    # Logged in by cookies, like /login: /me and the factor list work in the page.
    wait_for_text(page, "me", "totp-user")
    page.wait_for_function(
        "(document.querySelector('#factors li[data-type=totp]')?.textContent ?? '')"
        ".includes('last used')"
    )
    page.screenshot(path=str(ARTIFACTS / "browser-mfa-4-signed-in-aal2.png"))

    aal2 = answer.value.json()["access_token"]
    claims = claims_of(aal2)
    assert (claims["aal"], claims["amr"], claims["sub"]) == ("aal2", ["pwd", "otp"], user_id)
    accepted = downstream_get(downstream, "/sensitive", aal2)
    assert accepted.status_code == 200, accepted.text
    assert accepted.json() == {"sensitive": True, "sub": user_id, "amr": ["pwd", "otp"]}


def test_recovery_code_works_once_and_factor_removal(mail_demo: MailDemo):
    demo, address = mail_demo, "recovery@example.com"
    page = demo.new_page(demo.page_url)
    codes = sign_up_and_enrol(demo, page, "recoverer", address).recovery_codes

    # A recovery code instead of the app's code: a login at aal2 (amr "mfa").
    log_in_to_second_step(page, "recoverer")
    page.fill("#mfa-code", codes[0])
    page.click("#mfa-verify")
    wait_for_text(page, "status", "signed in as recoverer")
    wait_for_text(page, "auth-level", "aal2 (pwd, mfa)")
    wait_for_text(page, "recovery-left", "9")

    # The same code a second time is refused, visibly; the page still asks for a code, and
    # another recovery code works.
    log_in_to_second_step(page, "recoverer")
    page.fill("#mfa-code", codes[0])
    page.click("#mfa-verify")
    wait_for_text(page, "status", "401 invalid_code")
    assert page.is_visible("#status.error") and page.is_visible("#mfa-step")
    page.screenshot(path=str(ARTIFACTS / "browser-mfa-5-recovery-code-reused.png"))
    page.fill("#mfa-code", codes[1].upper())  # as typed: any case
    page.click("#mfa-verify")
    wait_for_text(page, "status", "signed in as recoverer")
    wait_for_text(page, "recovery-left", "8")

    # New recovery codes (password and a code): the old set stops working.
    page.fill("#factor-password", PASSWORD)
    page.fill("#factor-code", codes[2])
    page.click("#new-recovery-codes")
    wait_for_text(page, "status", "new recovery codes")
    page.wait_for_function("document.querySelectorAll('#recovery-codes li').length === 10")
    fresh = page.locator("#recovery-codes li").all_text_contents()
    assert not set(fresh) & set(codes)
    wait_for_text(page, "recovery-left", "10")

    # Removing the app takes the password and a live code: an old recovery code is refused,
    # and so is a wrong password.
    remove = "#factors li[data-type='totp'] button.remove-factor"
    page.fill("#factor-password", PASSWORD)
    page.fill("#factor-code", codes[3])
    page.click(remove)
    wait_for_text(page, "status", "401 invalid_code")
    page.fill("#factor-password", OTHER_PASSWORD)
    page.fill("#factor-code", fresh[0])
    page.click(remove)
    wait_for_text(page, "status", "401 invalid_credentials")
    assert page.locator("#factors li").count() == 1
    page.fill("#factor-password", PASSWORD)
    page.fill("#factor-code", fresh[0])
    page.click(remove)
    wait_for_text(page, "status", "factor removed")
    page.wait_for_function("document.querySelectorAll('#factors li').length === 0")
    wait_for_text(page, "recovery-left", "0")  # the last factor takes the codes with it

    # Without a factor, the password alone logs in again (aal1).
    page.click("#logout")
    page.wait_for_function("document.getElementById('status').textContent === 'signed out'")
    page.fill("#username", "recoverer")
    page.fill("#password", PASSWORD)
    page.click("#login")
    wait_for_text(page, "status", "signed in as recoverer")
    wait_for_text(page, "auth-level", "aal1 (pwd)")
    assert page.is_hidden("#mfa-step")
    # The owner was told of each change by mail, and of the recovery code's use.
    wait_for_mail(demo.mail, address, "A recovery code of your account was used")
    wait_for_mail(demo.mail, address, "The sign-in settings of your account changed")

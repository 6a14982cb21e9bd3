"""The optional breached-password check against a local fake HIBP range server."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.support.helpers import OTHER_PASSWORD, PASSWORD, assert_problem, bearer, signup
from tests.support.servers import free_port

BREACHED = "an unusual but leaked passphrase"


def sha1(text: str) -> str:
    return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest().upper()


class RangeServer:
    """Answers GET /range/<prefix> like api.pwnedpasswords.com, and records what it was sent."""

    def __init__(self, breached: set[str], delay: float = 0.0) -> None:
        self.requests: list[tuple[str, dict[str, str]]] = []
        known = {sha1(password) for password in breached}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append((self.path, dict(self.headers)))
                time.sleep(delay)
                prefix = self.path.rsplit("/", 1)[-1]
                lines = [f"{h[5:]}:42" for h in known if h.startswith(prefix)]
                lines.append("0000000000000000000000000000000000A:0")  # padding entry
                body = "\r\n".join(lines).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/range"

    def __enter__(self) -> RangeServer:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def range_server() -> Iterator[RangeServer]:
    with RangeServer({BREACHED}) as server:
        yield server


def test_breached_password_is_refused_and_only_a_prefix_leaves(make_app, range_server):
    client = make_app(AUTHSVC_BREACHED_PASSWORD_API=range_server.url).test_client()
    response = client.post("/signup", json={"username": "alice", "password": BREACHED})
    problem = assert_problem(response, 400, "weak_password")
    assert "breach" in problem["detail"]
    [(path, headers)] = range_server.requests
    digest = sha1(BREACHED)
    assert path == f"/range/{digest[:5]}"
    sent = path + repr(headers)
    assert digest[5:] not in sent and BREACHED not in sent
    assert headers.get("Add-Padding") == "true"


def test_clean_password_is_accepted(make_app, range_server):
    client = make_app(AUTHSVC_BREACHED_PASSWORD_API=range_server.url).test_client()
    signup(client)
    assert len(range_server.requests) == 1


def test_password_change_is_checked_too(make_app, range_server):
    client = make_app(AUTHSVC_BREACHED_PASSWORD_API=range_server.url).test_client()
    tokens = signup(client)
    response = client.post(
        "/password",
        json={"current_password": PASSWORD, "new_password": BREACHED},
        headers=bearer(tokens["access_token"]),
    )
    assert_problem(response, 400, "weak_password")


def test_offline_rules_run_first_without_asking(make_app, range_server):
    client = make_app(AUTHSVC_BREACHED_PASSWORD_API=range_server.url).test_client()
    response = client.post("/signup", json={"username": "alice", "password": "short"})
    assert_problem(response, 400, "weak_password")
    assert range_server.requests == []


def test_slow_api_fails_open_within_about_a_second(make_app):
    with RangeServer({OTHER_PASSWORD}, delay=3.0) as slow:
        client = make_app(AUTHSVC_BREACHED_PASSWORD_API=slow.url).test_client()
        started = time.monotonic()
        response = client.post("/signup", json={"username": "alice", "password": OTHER_PASSWORD})
        elapsed = time.monotonic() - started
    assert response.status_code == 201  # documented fail policy: open
    assert elapsed < 2.5


def test_unreachable_api_fails_open(make_app):
    client = make_app(
        AUTHSVC_BREACHED_PASSWORD_API=f"http://127.0.0.1:{free_port()}/range"
    ).test_client()
    signup(client)
